//! The watcher against real files in a temporary directory, changed the ways editors,
//! deploy tools and Kubernetes change them.

use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// Generous: the machine running the tests may be busy.
const EXPECT: Duration = Duration::from_secs(10);
/// How long "nothing happens" is watched for.
const QUIET: Duration = Duration::from_millis(600);

struct Fixture {
    _root: tempfile::TempDir,
    root: PathBuf,
    conf: PathBuf,
    external: Arc<Mutex<Vec<PathBuf>>>,
    /// What `app.yaml` held each time the callback ran.
    calls: Receiver<String>,
    watcher: Watcher,
}

impl Fixture {
    fn new() -> Self {
        Self::with(|conf| std::fs::write(conf.join("app.yaml"), "v: 0\n").unwrap())
    }

    fn with(setup: impl FnOnce(&Path)) -> Self {
        let root_dir = tempfile::tempdir().unwrap();
        let root = root_dir.path().to_path_buf();
        let conf = root.join("conf");
        std::fs::create_dir(&conf).unwrap();
        setup(&conf);
        let external = Arc::new(Mutex::new(Vec::new()));
        let (tx, calls) = mpsc::channel();
        let ext = external.clone();
        let app = conf.join("app.yaml");
        let dir = conf.clone();
        let watcher = Watcher::spawn(
            conf.clone(),
            // What the app hands over: what it serves, and what its last load named
            // (this callback loads nothing, so the files are read here).
            move || {
                let mut files = ext.lock().unwrap().clone();
                files.extend(crate::config::named_files(&dir));
                files
            },
            move || {
                let _ = tx.send(std::fs::read_to_string(&app).unwrap_or_else(|e| format!("<{e}>")));
            },
        )
        .unwrap();
        Self {
            _root: root_dir,
            root,
            conf,
            external,
            calls,
            watcher,
        }
    }

    fn expect_call(&self, what: &str) -> String {
        self.calls.recv_timeout(EXPECT).unwrap_or_else(|_| {
            panic!("expected a reload after {what}, none came within {EXPECT:?}")
        })
    }

    /// Waits for reloads until one sees `content`; returns how many it took.
    fn expect_content(&self, what: &str, content: &str) -> usize {
        for n in 1.. {
            let seen = self.expect_call(what);
            if seen == content {
                return n;
            }
            assert!(
                n < 5,
                "after {what}, expected a reload to read {content:?}; the last read {seen:?}"
            );
        }
        unreachable!()
    }

    fn expect_no_call(&self, what: &str) {
        if let Ok(seen) = self.calls.recv_timeout(QUIET) {
            panic!("expected no reload after {what}, got one (app.yaml: {seen:?})");
        }
    }
}

#[test]
fn in_place_write_reloads_once_with_the_whole_file() {
    let f = Fixture::new();
    std::fs::write(f.conf.join("app.yaml"), "v: 1\n").unwrap();
    assert_eq!(f.expect_call("an in-place write"), "v: 1\n");
    f.expect_no_call("a single in-place write");
}

#[test]
fn a_slow_writer_is_not_read_half_way() {
    let f = Fixture::new();
    let mut file = std::fs::File::create(f.conf.join("app.yaml")).unwrap();
    file.write_all(b"v: ").unwrap();
    file.flush().unwrap();
    // Well past the debounce: only the writer's close may let the reload happen.
    std::thread::sleep(DEBOUNCE * 8);
    assert!(
        f.calls.try_recv().is_err(),
        "reloaded while the writer still had the file open"
    );
    file.write_all(b"2\n").unwrap();
    drop(file);
    assert_eq!(f.expect_call("the writer closed the file"), "v: 2\n");
}

#[test]
fn editor_rename_over_reloads() {
    let f = Fixture::new();
    let tmp = f.conf.join(".app.yaml.tmp");
    std::fs::write(&tmp, "v: 3\n").unwrap();
    std::fs::rename(&tmp, f.conf.join("app.yaml")).unwrap();
    assert_eq!(f.expect_call("a rename over the file"), "v: 3\n");
}

#[test]
fn mv_of_a_new_file_into_place_reloads() {
    let f = Fixture::new();
    let outside = f.root.join("staged.yaml");
    std::fs::write(&outside, "v: 4\n").unwrap();
    std::fs::rename(&outside, f.conf.join("app.yaml")).unwrap();
    assert_eq!(f.expect_call("mv into place"), "v: 4\n");
    // A brand-new file counts too.
    std::fs::write(f.root.join("more.yml"), "x: 1\n").unwrap();
    std::fs::rename(f.root.join("more.yml"), f.conf.join("more.yml")).unwrap();
    f.expect_call("mv of a new file into the directory");
}

#[test]
fn delete_and_recreate_reloads() {
    let f = Fixture::new();
    std::fs::remove_file(f.conf.join("app.yaml")).unwrap();
    std::fs::write(f.conf.join("app.yaml"), "v: 5\n").unwrap();
    f.expect_content("delete + re-create", "v: 5\n");
}

#[test]
fn kubernetes_data_symlink_swap_reloads() {
    let f = Fixture::with(|conf| {
        std::fs::create_dir(conf.join("..2026_x")).unwrap();
        std::fs::write(conf.join("..2026_x/app.yaml"), "v: old\n").unwrap();
        symlink("..2026_x", conf.join("..data")).unwrap();
        symlink("..data/app.yaml", conf.join("app.yaml")).unwrap();
    });
    // What the kubelet does: a new timestamped directory, a new symlink beside the old
    // one, renamed over it atomically, then the old directory removed.
    std::fs::create_dir(f.conf.join("..2026_y")).unwrap();
    std::fs::write(f.conf.join("..2026_y/app.yaml"), "v: new\n").unwrap();
    symlink("..2026_y", f.conf.join("..data_tmp")).unwrap();
    std::fs::rename(f.conf.join("..data_tmp"), f.conf.join("..data")).unwrap();
    std::fs::remove_dir_all(f.conf.join("..2026_x")).unwrap();
    f.expect_content("the ..data symlink swap", "v: new\n");
}

/// A conf dir laid out as the kubelet mounts a ConfigMap whose one key is `app.yaml`.
fn configmap(conf: &Path) {
    std::fs::create_dir(conf.join("..2026_0")).unwrap();
    std::fs::write(conf.join("..2026_0/app.yaml"), "v: 0\n").unwrap();
    symlink("..2026_0", conf.join("..data")).unwrap();
    symlink("..data/app.yaml", conf.join("app.yaml")).unwrap();
}

/// The kubelet's update: every key written into a new directory, `..data` swapped to it,
/// the old directory removed.
fn kubelet_swap(conf: &Path, n: usize, keys: &[(&str, &str)]) {
    let new = format!("..2026_{n}");
    std::fs::create_dir(conf.join(&new)).unwrap();
    for (key, text) in keys {
        std::fs::write(conf.join(&new).join(key), text).unwrap();
    }
    let old = std::fs::read_link(conf.join("..data")).unwrap();
    symlink(&new, conf.join("..data_tmp")).unwrap();
    std::fs::rename(conf.join("..data_tmp"), conf.join("..data")).unwrap();
    std::fs::remove_dir_all(conf.join(old)).unwrap();
}

#[test]
fn a_kubernetes_swap_goes_live_without_the_debounce() {
    let f = Fixture::with(configmap);
    // A write is waited on for DEBOUNCE every time; the swap is the kubelet's commit.
    // The quickest of five shows it, however busy the machine.
    let mut quickest = Duration::MAX;
    for n in 1..=5 {
        let text = format!("v: {n}\n");
        let t0 = Instant::now();
        kubelet_swap(&f.conf, n, &[("app.yaml", &text)]);
        f.expect_content("a ..data swap", &text);
        quickest = quickest.min(t0.elapsed());
    }
    assert!(
        quickest < DEBOUNCE,
        "the quickest of five swaps went live in {quickest:?}, not under {DEBOUNCE:?}"
    );
}

#[test]
fn a_swap_adding_a_key_waits_for_its_link() {
    let f = Fixture::with(configmap);
    // The kubelet links a new key beside `..data` only after the swap: until then the
    // configuration is not whole, and the usual debounce applies.
    let t0 = Instant::now();
    kubelet_swap(
        &f.conf,
        1,
        &[("app.yaml", "v: 1\n"), ("more.yaml", "m: 1\n")],
    );
    std::thread::sleep(DEBOUNCE / 2);
    // A reload seen before DEBOUNCE has passed can only be the swap's shortcut. (Woken
    // later than that on a busy machine, this test cannot tell, and says so.)
    let in_time = t0.elapsed() < DEBOUNCE;
    let early = f.calls.try_recv();
    if in_time && let Ok(seen) = early {
        panic!("reloaded ({seen:?}) before the new key more.yaml was linked");
    } else if !in_time {
        eprintln!(
            "woken after {:?}: the early-reload check was skipped",
            t0.elapsed()
        );
    }
    symlink("..data/more.yaml", f.conf.join("more.yaml")).unwrap();
    f.expect_content("the new key's link", "v: 1\n");
}

#[test]
fn editor_droppings_are_ignored() {
    let f = Fixture::new();
    for name in [
        ".app.yaml.swp",
        "app.yaml~",
        ".#app.yaml",
        "#app.yaml#",
        "4913",
        ".hidden.yaml",
        "notes.txt",
    ] {
        std::fs::write(f.conf.join(name), "junk").unwrap();
    }
    std::fs::create_dir(f.conf.join("subdir")).unwrap();
    std::fs::write(f.conf.join("subdir/x.yaml"), "junk").unwrap();
    f.expect_no_call("writing editor droppings and unrelated files");
}

#[test]
fn a_burst_of_ten_files_is_one_reload() {
    let f = Fixture::new();
    for i in 0..10 {
        std::fs::write(f.conf.join(format!("part-{i}.yaml")), format!("n: {i}\n")).unwrap();
    }
    f.expect_call("writing ten files");
    f.expect_no_call("the burst's one reload");
}

#[test]
fn a_file_outside_the_directory_triggers() {
    let f = Fixture::new();
    let modules = f.root.join("modules");
    std::fs::create_dir(&modules).unwrap();
    let wasm = modules.join("filter.wasm");
    std::fs::write(&wasm, b"\0asm v1").unwrap();
    let other = modules.join("unrelated.wasm");
    // The external list is read again after each reload: make the watcher pick it up.
    f.external.lock().unwrap().push(wasm.clone());
    f.watcher.trigger().reload();
    f.expect_call("a manual trigger");

    std::fs::write(&wasm, b"\0asm v2").unwrap();
    f.expect_call("an in-place write of the .wasm");
    std::fs::write(&other, b"\0asm").unwrap();
    f.expect_no_call("a write to a module the configuration does not name");
    std::fs::write(modules.join("filter.wasm.new"), b"\0asm v3").unwrap();
    std::fs::rename(modules.join("filter.wasm.new"), &wasm).unwrap();
    f.expect_call("a rename over the .wasm");
}

#[test]
fn the_directory_itself_replaced_reloads_and_stays_watched() {
    let f = Fixture::new();
    let staged = f.root.join("conf.new");
    std::fs::create_dir(&staged).unwrap();
    std::fs::write(staged.join("app.yaml"), "v: replaced\n").unwrap();
    std::fs::rename(&f.conf, f.root.join("conf.old")).unwrap();
    std::fs::rename(&staged, &f.conf).unwrap();
    f.expect_content("the directory replaced", "v: replaced\n");
    // The new directory is the one watched now.
    std::fs::write(f.conf.join("app.yaml"), "v: after\n").unwrap();
    f.expect_content("a write into the new directory", "v: after\n");
}

#[test]
fn a_missing_module_is_seen_arriving() {
    // The YAML names a module that is not there yet (the load fails, so the serving
    // configuration does not name it): its arrival must still trigger a reload.
    let f = Fixture::with(|conf| {
        std::fs::write(
            conf.join("app.yaml"),
            "filters:\n  - { name: f, wasm: modules/late.wasm }\n",
        )
        .unwrap()
    });
    std::fs::create_dir(f.conf.join("modules")).unwrap();
    f.expect_call("the module's directory appearing");
    std::fs::write(f.conf.join("modules/late.wasm"), b"\0asm").unwrap();
    f.expect_call("the missing module written");
}

#[test]
fn a_file_first_named_by_a_reload_and_changed_during_it_reloads_again() {
    // The reload reads a module no configuration named before, so nothing watched it
    // while it was read: a write meanwhile must still be seen.
    let root = tempfile::tempdir().unwrap();
    let conf = root.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("app.yaml"), "v: 0\n").unwrap();
    let modules = root.path().join("modules");
    std::fs::create_dir(&modules).unwrap();
    let wasm = modules.join("f.wasm");
    std::fs::write(&wasm, b"\0asm v1").unwrap();
    let named: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
    let (tx, calls) = mpsc::channel();
    let (names, reload_names) = (named.clone(), named.clone());
    let _watcher = Watcher::spawn(
        conf.clone(),
        move || names.lock().unwrap().clone(),
        move || {
            let mut named = reload_names.lock().unwrap();
            if named.is_empty() {
                named.push(wasm.clone());
                std::fs::write(&wasm, b"\0asm v2").unwrap();
            }
            let _ = tx.send(());
        },
    )
    .unwrap();
    std::fs::write(conf.join("app.yaml"), "v: 1\n").unwrap();
    calls
        .recv_timeout(EXPECT)
        .expect("a reload after app.yaml changed");
    calls
        .recv_timeout(EXPECT)
        .expect("another reload: the module it named first changed while it read it");
    assert!(
        calls.recv_timeout(QUIET).is_err(),
        "a third reload, with nothing changed"
    );
}

#[test]
#[expect(
    unsafe_code,
    reason = "reads the process's and the callback's priority with getpriority"
)]
fn a_reload_runs_on_its_own_thread_at_the_workers_priority() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), "v: 0\n").unwrap();
    let (tx, seen) = mpsc::channel();
    let _watcher = Watcher::spawn(dir.path().to_path_buf(), Vec::new, move || {
        let name = std::thread::current().name().map(str::to_owned);
        // SAFETY: getpriority only reads its arguments; 0 names the calling thread.
        let _ = tx.send((name, unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }));
    })
    .unwrap();
    std::fs::write(dir.path().join("app.yaml"), "v: 1\n").unwrap();
    let (name, nice) = seen.recv_timeout(EXPECT).expect("a reload");
    // SAFETY: as above.
    let process = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    assert_eq!(name.as_deref(), Some("config-reload"));
    // A short reload must not wait behind busy workers (priority.rs).
    assert_eq!(
        nice, process,
        "the reload should start at the process's priority"
    );
}
