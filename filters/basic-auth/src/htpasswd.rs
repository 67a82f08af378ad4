//! htpasswd lines: `user:hash`, with bcrypt (`$2y$`, `$2b$`, `$2a$`), `{SHA}` and
//! Apache's MD5 (`$apr1$`) hashes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// A password hash from an htpasswd line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hash {
    /// bcrypt, kept as written (the crate parses cost and salt from it).
    Bcrypt(String),
    /// `{SHA}`: base64 of SHA-1 of the password.
    Sha1([u8; 20]),
    /// `$apr1$salt$digest`.
    Apr1 {
        /// Up to 8 salt characters.
        salt: String,
        /// The 22-character encoded digest.
        digest: String,
    },
}

/// Parses `user:hash`.
pub fn parse_line(line: &str) -> Result<(String, Hash), String> {
    let (user, hash) = line
        .split_once(':')
        .ok_or("expected `user:hash` (an htpasswd line)")?;
    if user.is_empty() {
        return Err("the user name is empty".into());
    }
    Ok((user.to_string(), parse_hash(hash.trim())?))
}

fn parse_hash(hash: &str) -> Result<Hash, String> {
    if let Some(b64) = hash.strip_prefix("{SHA}") {
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| "the {SHA} hash is not valid base64")?;
        let digest: [u8; 20] = bytes
            .try_into()
            .map_err(|_| "the {SHA} hash is not 20 bytes of SHA-1")?;
        return Ok(Hash::Sha1(digest));
    }
    if let Some(rest) = hash.strip_prefix("$apr1$") {
        let (salt, digest) = rest
            .split_once('$')
            .ok_or("an $apr1$ hash is $apr1$SALT$DIGEST")?;
        if salt.is_empty() || salt.len() > 8 || digest.len() != 22 {
            return Err("an $apr1$ hash has a 1-8 character salt and a 22 character digest".into());
        }
        return Ok(Hash::Apr1 {
            salt: salt.to_string(),
            digest: digest.to_string(),
        });
    }
    if ["$2y$", "$2b$", "$2a$", "$2x$"]
        .iter()
        .any(|p| hash.starts_with(p))
    {
        if hash.len() != 60 {
            return Err("a bcrypt hash is 60 characters".into());
        }
        return Ok(Hash::Bcrypt(hash.to_string()));
    }
    Err("unsupported hash: use bcrypt ($2y$/$2b$), {SHA} or $apr1$ (htpasswd -B, -s or -m)".into())
}

impl Hash {
    /// Whether `password` matches (constant-time where the format allows).
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            Hash::Sha1(d) => Sha1::digest(password).as_slice().ct_eq(d).into(),
            Hash::Apr1 { salt, digest } => apr1(password, salt.as_bytes())
                .as_bytes()
                .ct_eq(digest.as_bytes())
                .into(),
        }
    }

    /// Whether verifying costs enough to be worth caching.
    pub fn is_slow(&self) -> bool {
        !matches!(self, Hash::Sha1(_))
    }
}

const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn to64(out: &mut String, mut v: u32, n: usize) {
    for _ in 0..n {
        out.push(char::from(
            ITOA64.get((v & 0x3f) as usize).copied().unwrap_or(b'.'),
        ));
        v >>= 6;
    }
}

/// The 22-character digest of Apache's MD5-crypt (`$apr1$`), after `$apr1$salt$`.
pub fn apr1(pw: &[u8], salt: &[u8]) -> String {
    let alt = {
        let mut h = Md5::new();
        h.update(pw);
        h.update(salt);
        h.update(pw);
        h.finalize()
    };
    let mut ctx = Md5::new();
    ctx.update(pw);
    ctx.update(b"$apr1$");
    ctx.update(salt);
    let mut left = pw.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(alt.get(..n).unwrap_or_default());
        left -= n;
    }
    let mut i = pw.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(pw.get(..1).unwrap_or_default());
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut h = Md5::new();
        if round & 1 == 1 {
            h.update(pw);
        } else {
            h.update(fin);
        }
        if round % 3 != 0 {
            h.update(salt);
        }
        if round % 7 != 0 {
            h.update(pw);
        }
        if round & 1 == 1 {
            h.update(fin);
        } else {
            h.update(pw);
        }
        fin = h.finalize();
    }
    let f = |i: usize| u32::from(fin.get(i).copied().unwrap_or(0));
    let mut out = String::with_capacity(22);
    to64(&mut out, (f(0) << 16) | (f(6) << 8) | f(12), 4);
    to64(&mut out, (f(1) << 16) | (f(7) << 8) | f(13), 4);
    to64(&mut out, (f(2) << 16) | (f(8) << 8) | f(14), 4);
    to64(&mut out, (f(3) << 16) | (f(9) << 8) | f(15), 4);
    to64(&mut out, (f(4) << 16) | (f(10) << 8) | f(5), 4);
    to64(&mut out, f(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apr1_matches_openssl() {
        // openssl passwd -apr1 -salt saltsalt secret
        assert_eq!(apr1(b"secret", b"saltsalt"), "LrttParrLPdxvgutaSXWJ0");
        let (_, h) = parse_line("u:$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0").unwrap();
        assert!(h.verify(b"secret"));
        assert!(!h.verify(b"Secret"));
    }

    #[test]
    fn sha1() {
        // echo -n secret | openssl sha1 -binary | base64
        let (u, h) = parse_line("bob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=").unwrap();
        assert_eq!(u, "bob");
        assert!(h.verify(b"secret"));
        assert!(!h.verify(b"secret "));
    }

    #[test]
    fn bcrypt_known_vector() {
        // OpenBSD's test vector for "U*U", in its $2a$ and $2y$/$2b$ spellings.
        for prefix in ["$2a$", "$2y$", "$2b$"] {
            let line =
                format!("alice:{prefix}05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW");
            let (_, h) = parse_line(&line).unwrap();
            assert!(h.verify(b"U*U"), "{prefix}");
            assert!(!h.verify(b"U*V"), "{prefix}");
        }
    }

    #[test]
    fn bad_lines() {
        assert!(parse_line("nocolon").is_err());
        assert!(parse_line(":{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=").is_err());
        assert!(parse_line("u:{SHA}notbase64!").is_err());
        assert!(parse_line("u:{SHA}AAAA").is_err());
        assert!(parse_line("u:$2y$05$short").is_err());
        assert!(parse_line("u:plaintext").is_err());
        assert!(parse_line("u:$apr1$nosalt").is_err());
    }
}
