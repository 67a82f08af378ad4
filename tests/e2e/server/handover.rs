//! Binary upgrades: a new process takes the listening sockets over from the running
//! one (`--upgrade-from`), under load, and the old one drains and exits 0; listeners
//! the new configuration adds are bound, those it drops are closed; a successor that
//! cannot load changes nothing.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::basic_conf;
use crate::support::*;

/// A directory for the upgrade socket, outside the configuration directory.
fn socket_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("portcullis-upgrade-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
    let path = dir.path().join("upgrade.sock");
    (dir, path)
}

/// `basic_conf` with `workers: N` and whatever `extra` adds at the top level.
fn conf(workers: usize, extra: &str) -> ConfDir {
    basic_conf("", &format!("workers: {workers}\n{extra}"))
}

/// Starts a process taking over from the one offering on `socket`, itself offering
/// there next; waits until it serves.
fn successor(conf: &ConfDir, socket: &str) -> Proxy {
    Proxy::try_start_with(
        conf,
        &["--upgrade-from", socket, "--upgrade-socket", socket],
        &[("RUST_LOG", "info,access=off")],
    )
    .unwrap_or_else(|e| panic!("the successor did not start: {e}"))
}

fn exit_code(proxy: &mut Proxy, within: Duration) -> Option<i32> {
    proxy.wait_exit(within).and_then(|s| s.code())
}

/// Upgrades `old` to a process serving `conf`: `old` must exit 0, and the successor
/// serve `web` on the same address.
fn take_over(old: &mut Proxy, conf: &ConfDir, socket: &str) -> Proxy {
    let web = old.addr("web");
    let new = successor(conf, socket);
    assert_eq!(
        exit_code(old, Duration::from_secs(30)),
        Some(0),
        "the old process should drain and exit 0:\n{}",
        old.logs()
    );
    assert_eq!(new.addr("web"), web, "the same address: {}", new.logs());
    new
}

/// Two upgrades in a row under load (2 workers -> 1 -> 3, so that sockets are dealt
/// out to fewer workers and then joined by new ones): no request fails, no
/// connection is refused, each old process exits 0 and the last one serves on the
/// same addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_under_load_fail_no_request_and_the_old_process_exits_0() {
    let (_dir, socket) = socket_dir();
    let socket = socket.to_string_lossy().into_owned();
    let first = conf(2, "");
    let mut old = Proxy::try_start_with(
        &first,
        &["--upgrade-socket", &socket],
        &[("RUST_LOG", "info,access=off")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (web, admin) = (old.addr("web"), old.addr("admin"));
    let load = Load::start(web, "/load", 8, 8, 2);
    assert!(
        load.wait_for_ok(2000, Duration::from_secs(60)).await,
        "the load did not get going: {:?}\n{}",
        load.tally,
        old.logs()
    );

    let mut taken_over = 0;
    for workers in [1, 3] {
        let before = load.tally.ok.load(Ordering::Relaxed);
        let new = take_over(&mut old, &conf(workers, ""), &socket);
        assert!(
            old.logs().contains("took the listeners over"),
            "{}",
            old.logs()
        );
        assert_eq!(new.addr("admin"), admin, "{}", new.logs());
        // The successor alone serves now, new connections and old clients alike.
        assert!(
            load.wait_for_ok(before + 2000, Duration::from_secs(60))
                .await,
            "the load stalled after the upgrade to {workers} worker(s): {:?}\n{}",
            load.tally,
            new.logs()
        );
        let ready = client().get(new.admin_url("/ready")).send().await;
        assert_eq!(ready.map(|r| r.status().as_u16()).ok(), Some(200));
        taken_over += 1;
        old = new;
    }

    let tally = std::sync::Arc::clone(&load.tally);
    load.stop(Duration::from_secs(10)).await;
    let failures = tally.failures();
    assert!(
        failures.is_empty(),
        "{} request(s) failed across {taken_over} upgrades (of {} answered): {:#?}\n{}",
        failures.len(),
        tally.ok.load(Ordering::Relaxed),
        &failures[..failures.len().min(10)],
        old.logs()
    );
    assert_eq!(
        tally.refused.load(Ordering::Relaxed),
        0,
        "no connection may be refused during an upgrade: {tally:?}"
    );
    eprintln!(
        "{taken_over} upgrades under load: {} ok, {} told to close, {} h2 unsent, 0 refused, 0 failed",
        tally.ok.load(Ordering::Relaxed),
        tally.told_to_close.load(Ordering::Relaxed),
        tally.unsent.load(Ordering::Relaxed),
    );
}

/// The successor's configuration decides the listeners: one it adds is bound, one
/// the old process had and it drops is closed.
#[tokio::test]
async fn listeners_added_are_bound_and_listeners_dropped_are_closed() {
    let (_dir, socket) = socket_dir();
    let socket = socket.to_string_lossy().into_owned();
    let listeners = |second: &str, address: &str| {
        ConfDir::with(&format!(
            "admin: {{ address: 127.0.0.1:0 }}
workers: 2
listeners:
  - {{ name: web, address: 127.0.0.1:0 }}
  - {{ name: {second}, address: {address} }}
routes:
  - {{ name: all, upstream: echo@internal }}
"
        ))
    };
    let first = listeners("gone", "127.0.0.2:0");
    let mut old = Proxy::try_start_with(&first, &["--upgrade-socket", &socket], &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let (web, gone) = (old.addr("web"), old.addr("gone"));

    // Another configured address: the same one would take `gone`'s sockets over.
    let second = listeners("added", "127.0.0.3:0");
    let new = take_over(&mut old, &second, &socket);
    let added = new.addr("added");
    for addr in [web, added] {
        let resp = client()
            .get(format!("http://{addr}/after"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{addr} after the upgrade: {e}\n{}", new.logs()));
        assert_eq!(resp.status(), 200);
    }
    let refused = tokio::net::TcpStream::connect(gone).await;
    assert!(
        refused.is_err(),
        "the listener the new configuration dropped should be closed"
    );
}

/// A successor whose configuration does not load exits 1 with its errors; the old
/// process never hands over and keeps serving, and a later upgrade still works.
#[tokio::test]
async fn a_successor_that_cannot_load_leaves_the_old_process_serving() {
    let (_dir, socket) = socket_dir();
    let socket = socket.to_string_lossy().into_owned();
    let good = conf(2, "");
    let mut old = Proxy::try_start_with(&good, &["--upgrade-socket", &socket], &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let web = old.addr("web");

    let bad = ConfDir::with(
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
routes: [{ name: r, upstream: nowhere }]
",
    );
    let err = match Proxy::try_start_with(
        &bad,
        &["--upgrade-from", &socket, "--upgrade-socket", &socket],
        &[],
    ) {
        Ok(_) => panic!("a configuration routing to an unknown upstream must not serve"),
        Err(e) => e,
    };
    assert!(err.contains("exit status: 1"), "{err}");
    assert!(err.contains("nowhere"), "the error names the field: {err}");

    let resp = client()
        .get(format!("http://{web}/still"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the old process stopped serving: {e}\n{}", old.logs()));
    assert_eq!(resp.status(), 200);
    assert!(
        old.wait_exit(Duration::from_millis(300)).is_none(),
        "{}",
        old.logs()
    );

    take_over(&mut old, &good, &socket);
}

/// A second process told to offer on a socket a live process offers on refuses to
/// start rather than take the path (and so the next upgrade) from it.
#[tokio::test]
async fn a_fresh_start_refuses_a_socket_a_live_process_offers_on() {
    let (_dir, socket) = socket_dir();
    let socket = socket.to_string_lossy().into_owned();
    let _old = Proxy::try_start_with(&conf(1, ""), &["--upgrade-socket", &socket], &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let err = match Proxy::try_start_with(&conf(1, ""), &["--upgrade-socket", &socket], &[]) {
        Ok(_) => panic!("a second process took a live process's upgrade socket"),
        Err(e) => e,
    };
    assert!(
        err.contains("--upgrade-from"),
        "the error says what to do: {err}"
    );
}
