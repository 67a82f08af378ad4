//! Binding: port 0 shared by every worker, and addresses held by others refused.

use super::*;

#[test]
fn port_zero_binds_every_worker_to_the_same_port() {
    let (bound, sockets) = match bind_all(
        "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        3,
        true,
        false,
    ) {
        Ok(v) => v,
        Err(e) => panic!("binding 127.0.0.1:0 three times failed: {e}"),
    };
    assert_ne!(bound.port(), 0, "the kernel should have picked a port");
    for s in &sockets {
        let addr = s.local_addr().ok().and_then(|a| a.as_socket());
        assert_eq!(
            addr,
            Some(bound),
            "every worker socket should share the port"
        );
    }
}

#[test]
fn an_address_another_process_holds_is_refused_not_shared() {
    let any = "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!());
    for udp in [false, true] {
        // What another `portcullis run` on the same port holds: SO_REUSEPORT sockets.
        let (taken, _other) = match bind_all(any, 1, true, udp) {
            Ok(v) => v,
            Err(e) => panic!("binding 127.0.0.1:0 (udp: {udp}) failed: {e}"),
        };
        match bind_all(taken, 2, true, udp) {
            Ok(_) => panic!("{taken} is held by another listener, yet binding it succeeded"),
            Err(e) => assert!(
                e.to_string().contains("already in use by another process"),
                "expected an address-in-use error, got: {e}"
            ),
        }
        // Our own sockets on that address are meant to share it (a renamed listener).
        if let Err(e) = bind_all(taken, 2, false, udp) {
            panic!("joining our own listener on {taken} (udp: {udp}) failed: {e}");
        }
    }
}
