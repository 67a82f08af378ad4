//! The command line: `portcullis run`, `portcullis check`, `portcullis compile`,
//! `portcullis filter-test`, `portcullis sign` and `portcullis completions`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::app::App;
use crate::config::{self, ConfigErrors};
use crate::etcd::EtcdProvider;
use crate::handover::{self, Offer};
use crate::listeners::Inherited;
use crate::reload::{Trigger, Watcher};
use crate::snapshot::Snapshot;
use crate::{admin, extensions, server, wasm};

/// An edge proxy whose every middleware is a sandboxed proxy-wasm module.
#[derive(Parser, Debug)]
#[command(name = "portcullis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the configuration in DIR (the default when no command is given).
    Run(RunArgs),
    /// Load, validate, compile and configure everything, then exit: 0 when good,
    /// else 1 with every error on stderr, one a line.
    Check(CheckArgs),
    /// Run filter test specs (a module, its configuration, requests and what must
    /// happen to them) without a proxy: one line per case; exit 0 when all pass, 1
    /// when one fails, 2 when a spec or its filter cannot be loaded.
    FilterTest(FilterTestArgs),
    /// Compile modules ahead of time into the module cache that `run` and `check`
    /// read (see docs/operations.md): one line per module saying what was written
    /// where; exit 1 when one is not a proxy-wasm module or cannot be stored.
    Compile(CompileArgs),
    /// Sign modules for `require_signature`: writes MODULE.sig beside each, an
    /// ed25519 signature of its bytes (see docs/operations.md, "Signed modules").
    Sign(SignArgs),
    /// Print the completion script of SHELL on stdout (e.g. `portcullis completions
    /// bash > /etc/bash_completion.d/portcullis`).
    Completions(CompletionsArgs),
}

#[derive(Args, Debug)]
struct SignArgs {
    /// The ed25519 private key, PKCS#8 PEM (`openssl genpkey -algorithm ed25519`).
    #[arg(long, value_name = "KEY.pem")]
    key: PathBuf,
    /// Modules to sign.
    #[arg(required = true, value_name = "MODULE.wasm")]
    modules: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The configuration directory.
    #[arg(long, value_name = "DIR", default_value = "conf")]
    conf: PathBuf,
    /// The log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    /// Offer the listening sockets on this Unix socket to a new process started
    /// with `--upgrade-from` (a binary upgrade; docs/operations.md).
    #[arg(long, value_name = "SOCKET")]
    upgrade_socket: Option<PathBuf>,
    /// Take the listening sockets over from the process offering them on SOCKET;
    /// once serving, that process drains and exits.
    #[arg(long, value_name = "SOCKET")]
    upgrade_from: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// The configuration directory (default: `conf`, unless `--etcd` is given: then
    /// the etcd prefix alone is checked).
    #[arg(long, value_name = "DIR")]
    conf: Option<PathBuf>,
    /// Check the documents under an etcd prefix too, read from these client URLs
    /// (comma-separated `http(s)://HOST:PORT`): they stand for the directory's
    /// `providers.etcd.endpoints`, or for a `providers.etcd` block of their own.
    #[arg(long, value_name = "URL,...", value_delimiter = ',')]
    etcd: Vec<String>,
    /// The etcd prefix to check (default: the directory's `providers.etcd.prefix`,
    /// else /portcullis/): e.g. a staging prefix, before the fleet is pointed at it.
    #[arg(long, value_name = "PREFIX")]
    etcd_prefix: Option<String>,
}

#[derive(Args, Debug)]
struct CompileArgs {
    /// Modules to compile.
    #[arg(value_name = "FILE.wasm", required_unless_present = "builtins")]
    files: Vec<PathBuf>,
    /// Also compile every standard filter embedded in this binary.
    #[arg(long)]
    builtins: bool,
    /// The cache directory (default: $PORTCULLIS_MODULE_CACHE, else
    /// $XDG_CACHE_HOME/portcullis/modules, else $HOME/.cache/portcullis/modules).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct FilterTestArgs {
    /// Spec files (YAML; see docs/writing-filters.md, "Testing a filter").
    #[arg(required = true, value_name = "SPEC.yaml")]
    specs: Vec<PathBuf>,
    /// Print every case's outcome and the filter's log lines, not only failures'.
    #[arg(long, short)]
    verbose: bool,
    /// Compile the filter with its debug info for a debugger, without callback
    /// deadlines: `gdb -ex 'set breakpoint pending on' -ex 'break src/lib.rs:42' -ex run
    /// --args portcullis filter-test --debug SPEC.yaml` stops on the filter's own
    /// source line (see docs/writing-filters.md, "Debugging a filter").
    #[arg(long)]
    debug: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable `key=value` lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Parses the command line and runs the chosen command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check(args)) => {
            init_tracing(LogFormat::Plain, "warn");
            check(&args)
        }
        Some(Command::FilterTest(args)) => {
            init_tracing(LogFormat::Plain, "warn");
            match args.debug.then(crate::testkit::debug).transpose() {
                Ok(_) => {
                    let verdict = crate::testkit::run_files(&args.specs, args.verbose);
                    Ok(ExitCode::from(verdict.code()))
                }
                Err(e) => Err(anyhow::Error::msg(e)),
            }
        }
        Some(Command::Compile(args)) => {
            init_tracing(LogFormat::Plain, "warn");
            Ok(wasm::precompile::run(
                &args.files,
                args.builtins,
                args.cache_dir.as_deref(),
            ))
        }
        Some(Command::Sign(args)) => Ok(crate::integrity::sign(&args.key, &args.modules)),
        Some(Command::Completions(args)) => {
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "portcullis",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Run(args)) => {
            init_tracing(args.log_format, "info");
            run(&args)
        }
        None => {
            init_tracing(LogFormat::Plain, "info");
            run(&RunArgs {
                conf: PathBuf::from("conf"),
                log_format: LogFormat::Plain,
                upgrade_socket: None,
                upgrade_from: None,
            })
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (else `default`), coloured only on a terminal.
fn init_tracing(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Plain => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    if let Err(e) = result {
        eprintln!("portcullis: cannot set up logging: {e}");
    }
}

fn print_errors(errors: &ConfigErrors) {
    for e in &errors.0 {
        eprintln!("{e}");
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let default_dir = args.etcd.is_empty().then(|| PathBuf::from("conf"));
    let dir = args.conf.clone().or(default_dir);
    let from_dir = match dir.as_deref().map(config::providers::from_dir).transpose() {
        Ok(p) => p.and_then(|p| p.etcd),
        Err(errors) => {
            print_errors(&errors);
            return Ok(ExitCode::FAILURE);
        }
    };
    let etcd = config::providers::from_flags(&args.etcd, args.etcd_prefix.as_deref(), from_dir)
        .map_err(anyhow::Error::msg)?;
    let documents = match &etcd {
        Some(etcd) => match crate::etcd::read_once(etcd) {
            Ok(docs) => Some(docs),
            Err(e) => {
                eprintln!("{}: cannot read the configuration: {e}", etcd_origin(etcd));
                return Ok(ExitCode::FAILURE);
            }
        },
        None => None,
    };
    // Compiling every module anyway, check leaves them in the cache for `run`.
    wasm::disk_cache::use_defaults();
    let runtime = extensions::runtime().context("cannot start the wasm runtime")?;
    let texts = documents.as_ref().map(|d| d.texts()).unwrap_or_default();
    let _held = crate::alloc::HoldFreed::start();
    let built = config::load_with(dir.as_deref(), &texts)
        .and_then(|c| Snapshot::build(Arc::new(c), &runtime, 1, None));
    let mut what = dir.map(|d| d.display().to_string()).unwrap_or_default();
    if let (Some(etcd), Some(docs)) = (&etcd, &documents) {
        let sep = if what.is_empty() { "" } else { " + " };
        what = format!(
            "{what}{sep}etcd {} at revision {}",
            etcd.prefix, docs.revision
        );
    }
    match built {
        Ok(snapshot) => {
            let c = &snapshot.config;
            println!(
                "{what}: configuration OK: {} listener(s), {} route(s), {} filter(s), {} upstream(s)",
                c.listeners.len(),
                c.routes.len(),
                c.filters.len(),
                c.upstreams.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            print_errors(&errors);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Where a `providers.etcd` block was written, as an error's `FILE:LINE: FIELD`.
fn etcd_origin(etcd: &config::EtcdConfig) -> String {
    format!("{}:{}: providers.etcd", etcd.origin.file, etcd.origin.line)
}

/// Starts the etcd provider the directory's `providers.etcd` asks for (reading the
/// prefix once: with nothing served yet, an unreachable etcd fails the start).
fn start_etcd(conf: &Path) -> Result<Option<EtcdProvider>, ExitCode> {
    let etcd = match config::providers::from_dir(conf) {
        Ok(p) => p.etcd,
        Err(errors) => {
            print_errors(&errors);
            return Err(ExitCode::FAILURE);
        }
    };
    let Some(etcd) = etcd else { return Ok(None) };
    let origin = etcd_origin(&etcd);
    match EtcdProvider::start(etcd) {
        Ok(provider) => Ok(Some(provider)),
        Err(e) => {
            eprintln!("{origin}: cannot read the configuration: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let conf = args.conf.as_path();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler")?;
    // Handlers first: a SIGHUP that arrives once the proxy says it is serving must
    // reload it, not kill it (the default action).
    let mut signals = {
        let _rt = rt.enter();
        Signals::new()?
    };
    // A fresh start refuses a socket a live process offers on before binding anything.
    let mut offer = match (&args.upgrade_socket, &args.upgrade_from) {
        (Some(path), None) => Some(
            Offer::bind(path, false)
                .with_context(|| format!("cannot offer upgrades on {}", path.display()))?,
        ),
        _ => None,
    };
    let (takeover, mut inherited) = match &args.upgrade_from {
        Some(path) => {
            let (takeover, passed) = handover::take(path).with_context(|| {
                format!("cannot take the listeners over from {}", path.display())
            })?;
            tracing::info!(
                from = takeover.pid,
                listeners = passed.len(),
                "taking the listeners over"
            );
            (Some(takeover), Inherited::new(passed))
        }
        None => (None, Inherited::default()),
    };
    wasm::disk_cache::use_defaults();
    let runtime = extensions::runtime().context("cannot start the wasm runtime")?;
    let etcd = match start_etcd(conf) {
        Ok(etcd) => etcd,
        Err(code) => return Ok(code),
    };
    let app = match App::start(conf, etcd, runtime, &mut inherited) {
        Ok(app) => app,
        Err(errors) => {
            print_errors(&errors);
            return Ok(ExitCode::FAILURE);
        }
    };
    // Watching starts before serving, so no change made once serving is missed.
    let watcher = watch_config(conf, &app);
    follow_etcd(&app, watcher.as_ref().map(Watcher::trigger));
    admin::start(&app).context("cannot start the admin listener")?;
    let server = server::start(&app).context("cannot start the workers")?;
    if let Some(takeover) = takeover {
        let from = takeover.pid;
        rt.block_on(until_serving(&app));
        // Unclaimed sockets are let go now; the old process closes its own copies.
        let claimed = inherited.claimed();
        drop(inherited);
        // Serving already: whatever the old process answers, this one goes on.
        match takeover.commit(claimed) {
            Ok(()) => tracing::info!(from, "the old process hands over and drains"),
            Err(e) => tracing::warn!(from, "the old process did not confirm the hand-over: {e}"),
        }
        if let Some(path) = &args.upgrade_socket {
            offer = Some(
                Offer::bind(path, true)
                    .with_context(|| format!("cannot offer upgrades on {}", path.display()))?,
            );
        }
    }
    handover::notify_systemd();
    let handed_over = Arc::new(tokio::sync::Notify::new());
    let offered = offer.as_ref().map(|o| o.path().to_owned());
    if let Some(offer) = offer {
        let handed_over = Arc::clone(&handed_over);
        offer.serve(Arc::clone(&app), move || handed_over.notify_one());
    }

    let stopped = rt.block_on(async {
        let stop = signals
            .until_stop(&app, watcher.as_ref().map(Watcher::trigger), &handed_over)
            .await;
        // The settings of the configuration serving now, reloads included.
        let shutdown = app.snapshot.load().config.shutdown.clone();
        app.unready();
        let drained = async {
            // After a hand-over the successor accepts: there is nothing to wait for.
            if stop == Stop::Signal && !shutdown.accept_grace.is_zero() {
                tracing::info!(
                    accept_grace_ms = shutdown.accept_grace.as_millis(),
                    "shutting down: /ready answers 503; still accepting for the grace period"
                );
                tokio::time::sleep(shutdown.accept_grace).await;
            }
            tracing::info!(
                drain_timeout_ms = shutdown.drain_timeout.as_millis(),
                "shutting down: no longer accepting, draining in-flight requests"
            );
            app.shutdown();
            let grace = shutdown.drain_timeout;
            let _ = tokio::task::spawn_blocking(move || server.join(grace)).await;
        };
        tokio::select! {
            () = drained => tracing::info!("stopped"),
            () = signals.stop() => tracing::warn!("second signal: exiting without waiting"),
        }
        stop
    });
    // The drain may still be running after a second signal: do not wait for it.
    rt.shutdown_background();
    drop(watcher);
    // The socket file is the successor's once it took over.
    if let Some(path) = offered
        && stopped == Stop::Signal
    {
        let _ = std::fs::remove_file(path);
    }
    Ok(ExitCode::SUCCESS)
}

/// Completes once every worker accepts on its sockets.
async fn until_serving(app: &App) {
    while !app.is_ready() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Reloads whenever the configuration directory (or a file it names) changes. Without
/// a watcher (e.g. the inotify limit is reached) SIGHUP still reloads.
fn watch_config(conf: &Path, app: &Arc<App>) -> Option<Watcher> {
    let files = Arc::clone(app);
    let reload = Arc::clone(app);
    let watcher = Watcher::spawn(
        conf.to_owned(),
        move || files.watched_files(),
        move || {
            // Errors are logged and recorded by reload itself.
            let _ = reload.reload();
        },
    );
    match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("{e}; reload with SIGHUP instead");
            None
        }
    }
}

/// Reloads whenever the etcd documents change, through the watcher's debounce (a
/// change written as several keys, one `put` each, is applied once), or directly
/// without a watcher.
fn follow_etcd(app: &Arc<App>, trigger: Option<Trigger>) {
    let Some(etcd) = app.etcd() else { return };
    let loaded = app.etcd_revision();
    match trigger {
        Some(trigger) => etcd.on_change(loaded, move || trigger.reload()),
        None => {
            // Weak: the provider belongs to the app.
            let app = Arc::downgrade(app);
            etcd.on_change(loaded, move || {
                if let Some(app) = app.upgrade() {
                    // Errors are logged and recorded by reload itself.
                    let _ = app.reload();
                }
            });
        }
    }
}

/// Why the process stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM or SIGINT.
    Signal,
    /// A new process took the listeners over (a binary upgrade).
    HandedOver,
}

/// The signals the process answers to.
struct Signals {
    hup: Signal,
    /// Reopens the access log file (after a rotation).
    usr1: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
            usr1: signal(SignalKind::user_defined1()).context("cannot handle SIGUSR1")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    /// Reloads on SIGHUP (through the watcher's debounce when there is one), reopens
    /// the access log on SIGUSR1; returns
    /// on SIGTERM or SIGINT, or once a new process took the listeners over.
    async fn until_stop(
        &mut self,
        app: &Arc<App>,
        trigger: Option<Trigger>,
        handed_over: &tokio::sync::Notify,
    ) -> Stop {
        loop {
            tokio::select! {
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    if let Some(trigger) = &trigger {
                        trigger.reload();
                    } else {
                        let app = Arc::clone(app);
                        // Errors are logged and recorded by reload itself.
                        let _ = tokio::task::spawn_blocking(move || app.reload()).await;
                    }
                }
                _ = self.usr1.recv() => crate::access_log::reopen(),
                _ = self.term.recv() => return Stop::Signal,
                _ = self.int.recv() => return Stop::Signal,
                () = handed_over.notified() => return Stop::HandedOver,
            }
        }
    }

    /// Completes on the next SIGTERM or SIGINT.
    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
