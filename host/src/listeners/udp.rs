//! The sockets of `udp` listeners: one per worker with `SO_REUSEPORT`, so the kernel
//! spreads clients over the workers, and keeps each client (by its address) on one.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `count` UDP sockets to `address` (port 0: the first picks, the others
/// join). With `exclusive`, an address another process holds is refused.
pub(super) fn bind_all(
    address: SocketAddr,
    count: usize,
    exclusive: bool,
) -> io::Result<(SocketAddr, Vec<std::net::UdpSocket>)> {
    if exclusive && address.port() != 0 {
        // Bound without SO_REUSEPORT, the probe fails where anyone holds the port.
        let probe = udp_socket(address)?;
        if let Err(e) = probe.bind(&address.into()) {
            return Err(if e.kind() == io::ErrorKind::AddrInUse {
                io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "address already in use by another process",
                )
            } else {
                e
            });
        }
    }
    let first = bind_one(address)?;
    let bound = first.local_addr()?;
    let mut sockets = Vec::with_capacity(count);
    sockets.push(first);
    for _ in 1..count {
        sockets.push(bind_one(bound)?);
    }
    Ok((bound, sockets))
}

fn udp_socket(address: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

fn bind_one(address: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = udp_socket(address)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket.into())
}
