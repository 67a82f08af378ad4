//! The bound listener sockets of the process, rebuilt on every reload.
//!
//! Binding happens in [`crate::app::App::reload`], before the new snapshot is swapped
//! in, so that an address that cannot be bound is a configuration error like any other
//! (and the old configuration keeps serving). Each proxy listener is bound once per
//! worker with `SO_REUSEPORT`, so the kernel spreads connections over the workers; the
//! workers take their socket from the table when it changes.
//!
//! A listener's sockets can also come from the process this one replaces (a binary
//! upgrade, `crate::handover`): [`Inherited`] holds them until the configuration
//! claims them, and every bound listener keeps a duplicate of its sockets to pass on
//! in turn.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::config::{Config, ConfigError, ConfigErrors, ListenerProtocol};

/// The name the admin listener goes by in logs and in the table.
pub const ADMIN_NAME: &str = "admin";

/// Pending connections the kernel queues per socket.
const BACKLOG: i32 = 1024;

/// What a bound listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A proxy listener served by every worker.
    Proxy,
    /// The admin listener (`/ready`, `/status`, `/metrics`), served by the admin thread.
    Admin,
}

/// One listener's sockets, shared by the workers that accept on them.
pub struct BoundListener {
    /// Unique for the process's lifetime; workers use it to know what they run.
    pub id: u64,
    /// The listener's name (`admin` for the admin listener).
    pub name: Arc<str>,
    /// What it serves.
    pub kind: Kind,
    /// The address as configured (port may be 0).
    pub configured: SocketAddr,
    /// The address actually bound.
    pub bound: SocketAddr,
    /// Whether TLS is configured on it (a change rebinds it).
    pub tls: bool,
    /// Whether it is a `udp` listener (its sockets are UDP; a change rebinds it).
    pub udp: bool,
    /// Whether it serves HTTP/3 too: UDP sockets on the same port beside the TCP
    /// ones (a change rebinds it).
    pub http3: bool,
    /// The `Alt-Svc` value its HTTP/1.1 and HTTP/2 responses carry, with `http3`:
    /// `h3=":PORT"; ma=86400`.
    pub alt_svc: Option<http::HeaderValue>,
    /// The sockets of each worker (usually one; more when inherited from a process
    /// that ran more workers), each list taken once. The admin listener has one.
    sockets: Mutex<Vec<Vec<std::net::TcpListener>>>,
    /// The same, for a `udp` listener, and the QUIC sockets of an `http3` one.
    udp_sockets: Mutex<Vec<Vec<std::net::UdpSocket>>>,
    /// Duplicates of every socket (stream, then datagram) for a successor to take
    /// over; emptied when the listener stops, so that its port closes with the
    /// workers' copies.
    passable: Mutex<(Vec<Socket>, Vec<Socket>)>,
    /// Set when a successor took the sockets over: the workers then just let go of
    /// them, rather than closing them to new connections.
    handed_over: AtomicBool,
    /// Set to true when a reload removes the listener: accept loops end and its
    /// connections finish their in-flight requests and close.
    stop: watch::Sender<bool>,
}

impl BoundListener {
    /// Takes the sockets of `worker`; empty if already taken or out of range.
    pub fn take_sockets(&self, worker: usize) -> Vec<std::net::TcpListener> {
        lock(&self.sockets)
            .get_mut(worker)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Takes the UDP sockets of `worker` (a `udp` listener's, or the QUIC sockets of
    /// an `http3` one); empty if already taken or out of range.
    pub fn take_udp_sockets(&self, worker: usize) -> Vec<std::net::UdpSocket> {
        lock(&self.udp_sockets)
            .get_mut(worker)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Duplicates of the listener's sockets for a successor, or `None` once it has
    /// stopped.
    pub fn to_pass(&self) -> io::Result<Option<Passed>> {
        if *self.stop.borrow() {
            return Ok(None);
        }
        let passable = lock(&self.passable);
        let dup = |v: &[Socket]| v.iter().map(Socket::try_clone).collect::<io::Result<_>>();
        Ok(Some(Passed {
            kind: self.kind,
            name: self.name.to_string(),
            configured: self.configured,
            bound: self.bound,
            udp: self.udp,
            stream: dup(&passable.0)?,
            datagram: dup(&passable.1)?,
        }))
    }

    /// A receiver that turns true once the listener is removed.
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Stops the listener: accept loops end, its connections drain and close.
    pub fn stop(&self) {
        *lock(&self.passable) = (Vec::new(), Vec::new());
        self.stop.send_replace(true);
    }

    /// Stops the listener because a successor took its sockets over: accept loops end
    /// and let go of the sockets as they are (still open, in the successor); the
    /// connections accepted here drain and close.
    pub fn hand_over(&self) {
        self.handed_over.store(true, Ordering::SeqCst);
        self.stop();
    }

    /// Whether a successor took the sockets over.
    pub fn is_handed_over(&self) -> bool {
        self.handed_over.load(Ordering::SeqCst)
    }

    fn key(&self) -> (Kind, &str, SocketAddr, bool, bool, bool) {
        (
            self.kind,
            &self.name,
            self.configured,
            self.tls,
            self.udp,
            self.http3,
        )
    }
}

impl std::fmt::Debug for BoundListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundListener")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

/// Every listener of the serving configuration.
#[derive(Debug, Default)]
pub struct ListenerTable {
    /// In configuration order, the admin listener (if any) last.
    pub listeners: Vec<Arc<BoundListener>>,
}

/// One listener's sockets as a process passes them to its successor.
#[derive(Debug)]
pub struct Passed {
    /// What it serves.
    pub kind: Kind,
    /// Its name in the passing process.
    pub name: String,
    /// The address as configured there (port may be 0).
    pub configured: SocketAddr,
    /// The address bound.
    pub bound: SocketAddr,
    /// Whether it is a `udp` listener.
    pub udp: bool,
    /// Its listening TCP sockets.
    pub stream: Vec<Socket>,
    /// Its UDP sockets (a `udp` listener's, or the QUIC ones of an `http3` one).
    pub datagram: Vec<Socket>,
}

/// Sockets taken over from the process this one replaces, until the configuration
/// claims them: a listener whose kind, configured address and protocol match one of
/// them accepts on its sockets instead of binding new ones.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Each passed listener, by its position in the hand-over; `None` once claimed.
    listeners: Vec<Option<Passed>>,
}

impl Inherited {
    /// Holds `listeners` for claiming.
    pub fn new(listeners: Vec<Passed>) -> Self {
        Self {
            listeners: listeners.into_iter().map(Some).collect(),
        }
    }

    /// The positions of the listeners claimed so far (the predecessor lets go of
    /// those, and closes the others).
    pub fn claimed(&self) -> Vec<usize> {
        (0..self.listeners.len())
            .filter(|&i| self.listeners[i].is_none())
            .collect()
    }

    fn claim(&mut self, kind: Kind, configured: SocketAddr, udp: bool) -> Option<Passed> {
        self.listeners
            .iter_mut()
            .find(|p| {
                p.as_ref()
                    .is_some_and(|p| p.kind == kind && p.configured == configured && p.udp == udp)
            })
            .and_then(Option::take)
    }
}

/// A table ready to be published: built, but not yet in force.
pub struct Rebind {
    /// The new table.
    pub table: ListenerTable,
    /// Listeners of the old table not in the new one.
    pub removed: Vec<Arc<BoundListener>>,
    /// Listeners newly bound.
    pub added: Vec<Arc<BoundListener>>,
}

impl ListenerTable {
    /// The bound listener named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<BoundListener>> {
        self.listeners.iter().find(|l| &*l.name == name)
    }

    /// Builds the table `config` asks for, keeping every listener whose name, address
    /// and TLS-ness did not change, taking over the `inherited` sockets that match,
    /// and binding the others. Nothing is closed here: the caller stops the removed
    /// ones once the new table is in force.
    pub fn rebind(
        &self,
        config: &Config,
        workers: usize,
        inherited: &mut Inherited,
    ) -> Result<Rebind, ConfigErrors> {
        let mut old: HashMap<_, &Arc<BoundListener>> =
            self.listeners.iter().map(|l| (l.key(), l)).collect();
        let mut table = ListenerTable::default();
        let mut added = Vec::new();
        let mut errors = Vec::new();

        let wanted = config
            .listeners
            .iter()
            .map(|l| {
                let err = ConfigError::at(
                    &l.origin,
                    format!("listeners.{}.address", l.name),
                    String::new(),
                );
                let udp = l.protocol == ListenerProtocol::Udp;
                let tls = l.tls.is_some();
                let key = (Kind::Proxy, l.name.as_str(), l.address, tls, udp, l.http3);
                (key, workers, err)
            })
            .chain(config.admin.iter().map(|a| {
                let err = ConfigError::at(&a.origin, "admin.address", String::new());
                let key = (Kind::Admin, ADMIN_NAME, a.address, false, false, false);
                (key, 1, err)
            }));

        for (key, count, mut err) in wanted {
            if let Some(existing) = old.remove(&key) {
                table.listeners.push(Arc::clone(existing));
                continue;
            }
            let (kind, name, address, tls, udp, http3) = key;
            let count = count.max(1);
            let bound = match inherited.claim(kind, address, udp) {
                Some(passed) => adopt(passed, count, udp, http3),
                None => self.bind_new(address, count, udp, http3),
            };
            match bound {
                Ok((bound, sockets, udp_sockets)) => {
                    let dup = |v: &[Socket]| v.iter().map(Socket::try_clone).collect();
                    let passable = match (dup(&sockets), dup(&udp_sockets)) {
                        (Ok(s), Ok(u)) => (s, u),
                        (Err(e), _) | (_, Err(e)) => {
                            err.message = format!("cannot listen on {address}: {e}");
                            errors.push(err);
                            continue;
                        }
                    };
                    let l = Arc::new(BoundListener {
                        id: next_id(),
                        name: name.into(),
                        kind,
                        configured: address,
                        bound,
                        tls,
                        udp,
                        http3,
                        alt_svc: http3.then(|| alt_svc(bound.port())).flatten(),
                        sockets: Mutex::new(per_worker(sockets, count)),
                        udp_sockets: Mutex::new(per_worker(udp_sockets, count)),
                        passable: Mutex::new(passable),
                        handed_over: AtomicBool::new(false),
                        stop: watch::Sender::new(false),
                    });
                    added.push(Arc::clone(&l));
                    table.listeners.push(l);
                }
                Err(e) => {
                    err.message = format!("cannot listen on {address}: {e}");
                    errors.push(err);
                }
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let removed = old.into_values().cloned().collect();
        Ok(Rebind {
            table,
            removed,
            added,
        })
    }
}

impl ListenerTable {
    /// Binds `count` new sockets for `address`: stream ones, and datagram ones beside
    /// them for `http3`; datagram ones only for `udp`.
    fn bind_new(
        &self,
        address: SocketAddr,
        count: usize,
        udp: bool,
        http3: bool,
    ) -> io::Result<(SocketAddr, Vec<Socket>, Vec<Socket>)> {
        // Our own sockets may hold the address for a moment (a listener renamed, or
        // turned to TLS, on the same port): those are meant to share it.
        let ours = |udp: bool| {
            self.listeners
                .iter()
                .any(|l| l.bound == address && (l.udp == udp || (udp && l.http3)))
        };
        let (bound, sockets) = bind_all(address, count, !ours(udp), udp)?;
        if udp {
            return Ok((bound, Vec::new(), sockets));
        }
        // HTTP/3 on the port the TCP sockets took (port 0 included).
        let quic = if http3 {
            bind_all(bound, count, !ours(true), true)?.1
        } else {
            Vec::new()
        };
        Ok((bound, sockets, quic))
    }
}

/// Takes over a predecessor's sockets of a listener for `count` workers: when it ran
/// fewer, more join them (`SO_REUSEPORT`); when it ran more, some workers accept on
/// several. QUIC sockets are bound beside them when HTTP/3 is new to the listener,
/// and let go when it no longer asks for it.
fn adopt(
    passed: Passed,
    count: usize,
    udp: bool,
    http3: bool,
) -> io::Result<(SocketAddr, Vec<Socket>, Vec<Socket>)> {
    let bound = passed.bound;
    let top_up = |mut sockets: Vec<Socket>, udp: bool| -> io::Result<Vec<Socket>> {
        while sockets.len() < count {
            sockets.push(bind_one(bound, udp)?);
        }
        Ok(sockets)
    };
    if udp {
        return Ok((bound, Vec::new(), top_up(passed.datagram, true)?));
    }
    let stream = top_up(passed.stream, false)?;
    let datagram = match (http3, passed.datagram.is_empty()) {
        (false, _) => Vec::new(),
        (true, true) => bind_all(bound, count, true, true)?.1,
        (true, false) => top_up(passed.datagram, true)?,
    };
    Ok((bound, stream, datagram))
}

/// Deals `sockets` out to `workers` in turn, as the sockets each worker accepts on.
fn per_worker<T: From<Socket>>(sockets: Vec<Socket>, workers: usize) -> Vec<Vec<T>> {
    let mut slots: Vec<Vec<T>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, s) in sockets.into_iter().enumerate() {
        slots[i % workers].push(s.into());
    }
    slots
}

/// Locks `m`, recovering from poisoning: each value under these locks is replaced whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// `Alt-Svc: h3=":PORT"; ma=86400`: HTTP/3 on the same host, this port, for a day.
fn alt_svc(port: u16) -> Option<http::HeaderValue> {
    http::HeaderValue::try_from(format!("h3=\":{port}\"; ma=86400")).ok()
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Binds `count` sockets to `address` with `SO_REUSEPORT`: listening TCP sockets, or
/// UDP ones with `udp`. With port 0 the first socket picks the port and the others
/// join it. With `exclusive`, an address some other process holds is refused rather
/// than silently shared.
fn bind_all(
    address: SocketAddr,
    count: usize,
    exclusive: bool,
    udp: bool,
) -> io::Result<(SocketAddr, Vec<Socket>)> {
    if exclusive && address.port() != 0 {
        ensure_free(address, udp)?;
    }
    let first = bind_one(address, udp)?;
    let bound = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound to a non-IP address"))?;
    let mut sockets = Vec::with_capacity(count);
    sockets.push(first);
    for _ in 1..count {
        sockets.push(bind_one(bound, udp)?);
    }
    Ok((bound, sockets))
}

/// Fails if something already holds `address`. `SO_REUSEPORT` would let a second
/// Portcullis (or anything else of the same user that set it) share the port and take
/// half the connections (or datagrams); a probe bound without it sees such a socket.
fn ensure_free(address: SocketAddr, udp: bool) -> io::Result<()> {
    let probe = socket(address, udp)?;
    match probe.bind(&address.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "address already in use by another process",
        )),
        other => other,
    }
}

/// A TCP socket for `address` with `SO_REUSEADDR` (connections in TIME_WAIT from an
/// earlier run do not block the port), or a UDP one; for IPv6, v6 only.
fn socket(address: SocketAddr, udp: bool) -> io::Result<Socket> {
    let (ty, protocol) = if udp {
        (Type::DGRAM, Protocol::UDP)
    } else {
        (Type::STREAM, Protocol::TCP)
    };
    let socket = Socket::new(Domain::for_address(address), ty, Some(protocol))?;
    if !udp {
        socket.set_reuse_address(true)?;
    }
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

fn bind_one(address: SocketAddr, udp: bool) -> io::Result<Socket> {
    let socket = socket(address, udp)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    if !udp {
        socket.listen(BACKLOG)?;
    }
    Ok(socket)
}

#[cfg(test)]
mod tests;
