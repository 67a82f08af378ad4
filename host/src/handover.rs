//! Binary upgrades without refusing a connection: the running process offers its
//! listening sockets on a Unix socket (`portcullis run --upgrade-socket PATH`), and a
//! new process started with `--upgrade-from PATH` takes them over, as HAProxy's `-x`
//! and Envoy's hot restart do. The sockets themselves pass (`SCM_RIGHTS`), so the
//! kernel's accept queues never close: what the old process no longer accepts, the new
//! one does. Once the new process serves, it tells the old one which listeners it
//! kept; the old one lets go of those, closes the others, and drains as on SIGTERM.
//!
//! The exchange, one JSON object per `SOCK_SEQPACKET` message:
//!
//! ```text
//! new -> old   {"hello":{"version":1,"pid":N}}
//! old -> new   {"listener":{..}} + its sockets       one per listener
//! old -> new   {"end":{"pid":N}}
//!              ... the new process loads its configuration and starts serving ...
//! new -> old   {"claimed":{"listeners":[0,2]}}       positions of those it kept
//! old -> new   {"draining":{"pid":N}}
//! ```
//!
//! Nothing here runs per request: it is a thread that waits on the Unix socket.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::app::App;
use crate::listeners::{BoundListener, Kind, Passed};

/// The version of the exchange; a process refuses a successor that speaks another.
const VERSION: u32 = 1;

/// The most sockets one message may carry (the kernel's `SCM_MAX_FD`).
const MAX_FDS: usize = 253;

/// How long the old process waits for a successor that connected to finish loading
/// (compiling every module included) and say which listeners it kept.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// One message of the exchange.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Message {
    Hello {
        version: u32,
        pid: u32,
    },
    Listener {
        admin: bool,
        name: String,
        configured: SocketAddr,
        bound: SocketAddr,
        udp: bool,
        stream: usize,
        datagram: usize,
    },
    End {
        pid: u32,
    },
    Claimed {
        listeners: Vec<usize>,
    },
    Draining {
        pid: u32,
    },
}

/// The Unix socket a running process offers its listeners on.
pub struct Offer {
    socket: Socket,
    path: PathBuf,
}

impl Offer {
    /// Listens on `path` (mode 0600: only this user may take the listeners). A stale
    /// socket file is replaced; one a live process answers on is refused, unless
    /// `replace` (this process has just taken over from it).
    pub fn bind(path: &Path, replace: bool) -> io::Result<Offer> {
        let addr = SockAddr::unix(path)?;
        if !replace && connect(&addr).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "a running process offers its listeners on {}: start with \
                     --upgrade-from {} to take over from it",
                    path.display(),
                    path.display()
                ),
            ));
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
        socket.bind(&addr)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        socket.listen(4)?;
        Ok(Offer {
            socket,
            path: path.to_owned(),
        })
    }

    /// Serves successors on a thread of its own until one takes over; then calls
    /// `handed_over`, after which the process should drain and exit. A successor that
    /// fails (its configuration does not load, it dies) changes nothing here.
    pub fn serve(self, app: Arc<App>, handed_over: impl FnOnce() + Send + 'static) {
        let thread = std::thread::Builder::new()
            .name("upgrade".into())
            .spawn(move || {
                loop {
                    let conn = match self.socket.accept() {
                        Ok((conn, _)) => conn,
                        Err(e) => {
                            tracing::warn!(path = %self.path.display(), "upgrade socket: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    };
                    match offer_to(&conn, &app) {
                        Ok(pid) => {
                            tracing::info!(
                                successor = pid,
                                "a new process took the listeners over; draining"
                            );
                            handed_over();
                            return;
                        }
                        Err(e) => tracing::warn!("upgrade abandoned, still serving: {e}"),
                    }
                }
            });
        if let Err(e) = thread {
            tracing::error!("cannot offer the listeners for upgrades: {e}");
        }
    }

    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Passes every listener of `app` to the successor on `conn`, waits until it serves,
/// and lets go of those it kept. Returns the successor's pid.
fn offer_to(conn: &Socket, app: &App) -> io::Result<u32> {
    conn.set_read_timeout(Some(LOAD_TIMEOUT))?;
    let pid = match recv(conn)? {
        (
            Message::Hello {
                version: VERSION,
                pid,
            },
            _,
        ) => pid,
        (other, _) => return Err(unexpected(&other, "hello, version 1")),
    };
    let table = Arc::clone(&app.listeners().borrow());
    let mut offered: Vec<Arc<BoundListener>> = Vec::new();
    for l in &table.listeners {
        let Some(p) = l.to_pass()? else { continue };
        let message = Message::Listener {
            admin: p.kind == Kind::Admin,
            name: p.name,
            configured: p.configured,
            bound: p.bound,
            udp: p.udp,
            stream: p.stream.len(),
            datagram: p.datagram.len(),
        };
        let fds: Vec<BorrowedFd<'_>> = p
            .stream
            .iter()
            .chain(&p.datagram)
            .map(AsFd::as_fd)
            .collect();
        send(conn, &message, &fds)?;
        offered.push(Arc::clone(l));
    }
    send(
        conn,
        &Message::End {
            pid: std::process::id(),
        },
        &[],
    )?;
    let claimed = match recv(conn)? {
        (Message::Claimed { listeners }, _) => listeners,
        (other, _) => return Err(unexpected(&other, "claimed")),
    };
    let (kept, closed): (Vec<_>, Vec<_>) = offered
        .iter()
        .enumerate()
        .partition(|(i, _)| claimed.contains(i));
    for (_, l) in kept {
        l.hand_over();
    }
    for (_, l) in closed {
        tracing::info!(listener = %l.name, address = %l.bound, "not in the successor's configuration: closing");
    }
    send(
        conn,
        &Message::Draining {
            pid: std::process::id(),
        },
        &[],
    )?;
    Ok(pid)
}

/// A connection to the running process whose listeners this one takes over.
pub struct Takeover {
    conn: Socket,
    /// The running process's pid.
    pub pid: u32,
}

/// Asks the process offering on `path` for its listeners.
pub fn take(path: &Path) -> io::Result<(Takeover, Vec<Passed>)> {
    let conn = connect(&SockAddr::unix(path)?)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    send(
        &conn,
        &Message::Hello {
            version: VERSION,
            pid: std::process::id(),
        },
        &[],
    )?;
    let mut passed = Vec::new();
    loop {
        match recv(&conn)? {
            (
                Message::Listener {
                    admin,
                    name,
                    configured,
                    bound,
                    udp,
                    stream,
                    datagram,
                },
                fds,
            ) => {
                if fds.len() != stream + datagram {
                    return Err(io::Error::other(format!(
                        "listener {name}: {} sockets received, {} announced",
                        fds.len(),
                        stream + datagram
                    )));
                }
                let mut sockets = fds.into_iter().map(Socket::from);
                let stream: Vec<Socket> = sockets.by_ref().take(stream).collect();
                let datagram: Vec<Socket> = sockets.collect();
                for s in &stream {
                    expect_socket(s, Type::STREAM, bound, &name)?;
                }
                for s in &datagram {
                    expect_socket(s, Type::DGRAM, bound, &name)?;
                }
                passed.push(Passed {
                    kind: if admin { Kind::Admin } else { Kind::Proxy },
                    name,
                    configured,
                    bound,
                    udp,
                    stream,
                    datagram,
                });
            }
            (Message::End { pid }, _) => return Ok((Takeover { conn, pid }, passed)),
            (other, _) => return Err(unexpected(&other, "listener or end")),
        }
    }
}

impl Takeover {
    /// Tells the old process which of its listeners (by position) this one kept;
    /// it lets go of them, closes the others and drains. Call once serving.
    pub fn commit(self, claimed: Vec<usize>) -> io::Result<()> {
        send(&self.conn, &Message::Claimed { listeners: claimed }, &[])?;
        match recv(&self.conn)? {
            (Message::Draining { .. }, _) => Ok(()),
            (other, _) => Err(unexpected(&other, "draining")),
        }
    }
}

/// Tells systemd (`Type=notify`, `NotifyAccess=all`) that this process serves and is
/// now the service's main process; nothing without `$NOTIFY_SOCKET`.
pub fn notify_systemd() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let state = format!("READY=1\nMAINPID={}\n", std::process::id());
    let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|s| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                s.send_to_addr(state.as_bytes(), &addr)
            }
            None => s.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

fn connect(addr: &SockAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    socket.connect(addr)?;
    Ok(socket)
}

/// Checks that a received descriptor is the socket announced, bound where announced.
fn expect_socket(s: &Socket, ty: Type, bound: SocketAddr, name: &str) -> io::Result<()> {
    let local = s.local_addr()?.as_socket();
    if s.r#type()? != ty || local != Some(bound) {
        return Err(io::Error::other(format!(
            "listener {name}: a socket received is not the one announced ({bound})"
        )));
    }
    Ok(())
}

fn send(conn: &Socket, message: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::other(format!(
            "{} sockets in one listener; at most {MAX_FDS} can pass",
            fds.len()
        )));
    }
    let bytes = serde_json::to_vec(message)?;
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("the sockets do not fit in one message"));
    }
    rustix::net::sendmsg(
        conn,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Receives one message and the descriptors it carries (close-on-exec).
fn recv(conn: &Socket) -> io::Result<(Message, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        conn,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    if got
        .flags
        .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
    {
        return Err(io::Error::other("a message was cut short"));
    }
    if got.bytes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the other process hung up",
        ));
    }
    let message = serde_json::from_slice(buf.get(..got.bytes).unwrap_or_default())?;
    Ok((message, fds))
}

fn unexpected(got: &Message, wanted: &str) -> io::Error {
    io::Error::other(format!("expected {wanted}, got {got:?}"))
}
