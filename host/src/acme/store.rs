//! The `storage` directory: the account's credentials and one PEM file per name (its
//! private key and chain together, so that no reader ever pairs a new key with an old
//! chain), each written whole (a sibling file renamed into place) and readable by
//! the proxy's user only (0600).
//!
//! Several instances may share one `storage` (a shared volume): [`Store::lock`] takes
//! an exclusive `flock` on `storage/lock` around each order, and the holder re-reads
//! the name's file first, so a certificate another instance just got is used instead
//! of ordering again.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::tls::info::CertificateInfo;
use crate::tls::issued::IssuedCert;
use crate::tls::load;

/// One issuer's storage directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    directory_url: String,
}

/// The exclusive right to order for a storage directory, until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Store {
    /// The store in `dir` for the CA at `directory_url`.
    pub fn new(dir: &Path, directory_url: &str) -> Self {
        Self {
            dir: dir.to_owned(),
            directory_url: directory_url.to_owned(),
        }
    }

    /// The file holding `name`'s key and chain.
    pub fn cert_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// The account file: one per CA directory, so that a storage reused with another
    /// CA (staging, then production) never presents one CA's account to the other.
    fn account_path(&self) -> PathBuf {
        let digest = Sha256::digest(self.directory_url.as_bytes());
        self.dir
            .join(format!("account-{}.json", hex::encode(&digest[..8])))
    }

    /// The stored account credentials (JSON), if any.
    pub fn account(&self) -> std::io::Result<Option<String>> {
        match fs::read_to_string(self.account_path()) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores the account credentials.
    pub fn save_account(&self, json: &str) -> std::io::Result<()> {
        self.write(&self.account_path(), json.as_bytes())
    }

    /// Forgets the account (the CA no longer knows it).
    pub fn forget_account(&self) {
        let _ = fs::remove_file(self.account_path());
    }

    /// Reads `name`'s stored certificate; `Ok(None)` when there is none, an error when
    /// the file is unreadable or does not hold a usable key and chain for `name`.
    pub fn load(&self, name: &str) -> Result<Option<IssuedCert>, String> {
        let path = self.cert_path(name);
        if !path.exists() {
            return Ok(None);
        }
        let key = load::certified_key(&path, &path).map_err(|(_, e)| e.to_string())?;
        let leaf = key.end_entity_cert().map_err(|e| e.to_string())?;
        let info = CertificateInfo::parse(path.clone(), leaf)?;
        if !info.names.iter().any(|n| n == name) {
            return Err(format!(
                "{} is not a certificate for {name}",
                path.display()
            ));
        }
        Ok(Some(IssuedCert {
            key: std::sync::Arc::new(key),
            info,
        }))
    }

    /// Stores `name`'s key (PEM) and chain (PEM, leaf first) in one file.
    pub fn save(&self, name: &str, key_pem: &str, chain_pem: &str) -> std::io::Result<PathBuf> {
        let path = self.cert_path(name);
        let mut contents = String::with_capacity(key_pem.len() + chain_pem.len() + 1);
        contents.push_str(key_pem);
        if !key_pem.ends_with('\n') {
            contents.push('\n');
        }
        contents.push_str(chain_pem);
        self.write(&path, contents.as_bytes())?;
        Ok(path)
    }

    /// Takes the storage's lock, waiting for another instance that holds it (its order
    /// takes seconds). Blocking: call it off the runtime's threads.
    pub fn lock(&self) -> std::io::Result<Lock> {
        self.ensure_dir()?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join("lock"))?;
        // SAFETY: `flock` on a descriptor this function owns for the call's duration;
        // no memory is passed.
        #[expect(unsafe_code, reason = "libc::flock is an FFI call")]
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Lock { _file: file })
    }

    fn ensure_dir(&self) -> std::io::Result<()> {
        if !self.dir.is_dir() {
            fs::create_dir_all(&self.dir)?;
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// Writes `path` whole: a sibling created 0600, synced, then renamed over it.
    fn write(&self, path: &Path, contents: &[u8]) -> std::io::Result<()> {
        self.ensure_dir()?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(contents)?;
            file.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}
