//! The Redis store of global rate limits: a few multiplexed connections kept open (and
//! reopened) by a thread of their own, and the GCRA check done atomically in Redis by
//! one Lua script (EVALSHA, loaded again after a Redis restart).
//!
//! The connections live on their own runtime so that no worker owns them: a worker's
//! check only sends a command down a connection's channel and awaits the reply, and a
//! worker that stops takes no connection with it. A connection that breaks is marked
//! down at once (checks on it fail fast, and `on_store_error` decides without waiting
//! for the timeout) and reopened in the background, every 100 ms to 1 s, until Redis
//! is back.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use tokio::sync::Notify;

use crate::config::RedisConfig;
use crate::config::redis::redact;

/// GCRA with a partial grant, in microseconds on Redis' own clock (so instances'
/// clocks need not agree). Takes up to `want` tokens (at least `need`, else none)
/// from the bucket `KEYS[1]`; returns `{granted, remaining, reset_us, retry_after_us}`.
/// The TAT is stored with `%d`: Lua 5.1 prints a number this large in exponent form.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local avail = math.floor((now + tau - tat) / interval)
local n = 0
if avail >= need then n = math.min(want, avail) end
if n > 0 then
  tat = tat + n * interval
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
local retry = 0
if n == 0 then retry = tat + need * interval - tau - now end
return {n, math.floor((now + tau - tat) / interval), tat - now, retry}
";

/// Waits between attempts to reopen a broken connection: from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a check did not get Redis' answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No connection is open (Redis down or unreachable).
    #[error("no connection to Redis")]
    Down,
    /// Redis did not answer within `redis.timeout`.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection broke.
    #[error("Redis failed: {0}")]
    Failed(String),
}

/// What Redis granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Tokens taken (0: none, the bucket is short of `need`).
    pub granted: u32,
    /// Whole tokens left in the bucket.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// When nothing was granted: until `need` tokens are there.
    pub retry_after: Duration,
}

/// What `/status` shows of a store.
#[derive(Debug, Clone)]
pub struct Health {
    /// Connections open now, of `pool`.
    pub open: usize,
    /// Connections kept (the `redis.pool`).
    pub pool: usize,
    /// Calls that got no answer (down, timed out, connection broke) since the store
    /// started: rate-limit checks and filters' calls alike.
    pub failures: u64,
    /// The last failure, or the last failed connection attempt, and when.
    pub last_error: Option<(SystemTime, String)>,
}

/// A store's failure counts, shared with its calls and its keepers.
#[derive(Default)]
struct Failures {
    calls: AtomicU64,
    last: Mutex<Option<(SystemTime, String)>>,
}

impl Failures {
    fn note(&self, e: &dyn std::fmt::Display) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some((SystemTime::now(), e.to_string()));
        }
    }

    fn call_failed(&self, e: &StoreError) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.note(e);
    }
}

/// One pooled connection: `None` while down.
struct Slot {
    conn: ArcSwapOption<MultiplexedConnection>,
    /// Tells the slot's keeper that the connection broke.
    broken: Notify,
}

/// Connections to one Redis server, as the `redis:` block configures them.
pub struct RedisStore {
    config: RedisConfig,
    slots: Arc<[Slot]>,
    next: AtomicUsize,
    script: Arc<redis::Script>,
    failures: Arc<Failures>,
    /// Dropped with the store: the connections' thread then stops, closing them.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl RedisStore {
    /// Starts connecting to `config.url` in the background (the proxy starts whether
    /// Redis is up or not: checks meanwhile go to `on_store_error`).
    pub fn start(config: &RedisConfig) -> Result<Self, StoreError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| StoreError::Failed(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("portcullis-redis")
            .build()
            .map_err(|e| StoreError::Failed(format!("cannot start the Redis thread: {e}")))?;
        let slots: Arc<[Slot]> = (0..config.pool.max(1))
            .map(|_| Slot {
                conn: ArcSwapOption::empty(),
                broken: Notify::new(),
            })
            .collect();
        // One thread drives every connection's socket (a current-thread runtime's
        // I/O is driven only by its own `block_on`).
        let keeper_slots = slots.clone();
        let url = redact(&config.url);
        let failures = Arc::new(Failures::default());
        let keeper_failures = failures.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("portcullis-redis".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let keepers = (0..keeper_slots.len()).map(|i| {
                        keep(
                            client.clone(),
                            keeper_slots.clone(),
                            i,
                            url.clone(),
                            keeper_failures.clone(),
                        )
                    });
                    tokio::select! {
                        _ = futures_util::future::join_all(keepers) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here closes the connections.
            })
            .map_err(|e| StoreError::Failed(format!("cannot start the Redis thread: {e}")))?;
        Ok(Self {
            config: config.clone(),
            slots,
            next: AtomicUsize::new(0),
            script: Arc::new(redis::Script::new(GCRA)),
            failures,
            _stop: stop,
        })
    }

    /// The configuration this store was started with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The connections' state and the failures so far.
    pub fn health(&self) -> Health {
        Health {
            open: self
                .slots
                .iter()
                .filter(|s| s.conn.load().is_some())
                .count(),
            pool: self.slots.len(),
            failures: self.failures.calls.load(Ordering::Relaxed),
            last_error: self.failures.last.lock().ok().and_then(|l| l.clone()),
        }
    }

    /// Whether a connection is open: when none is, a check fails at once.
    pub fn is_up(&self) -> bool {
        self.slots.iter().any(|s| s.conn.load().is_some())
    }

    /// Takes up to `want` tokens (at least `need`) from bucket `key` of a limiter
    /// whose tokens come every `interval_us` with a tolerance of `tau_us`; answered
    /// within `redis.timeout` or an error.
    pub fn take(
        &self,
        key: Vec<u8>,
        interval_us: u64,
        tau_us: u64,
        want: u32,
        need: u32,
    ) -> impl Future<Output = Result<Grant, StoreError>> + Send + 'static {
        let script = self.script.clone();
        let call = self.request(self.config.timeout, move |mut conn| async move {
            let mut invocation = script.prepare_invoke();
            invocation
                .key(key)
                .arg(interval_us)
                .arg(tau_us)
                .arg(want)
                .arg(need);
            invocation.invoke_async::<Vec<i64>>(&mut conn).await
        });
        async move { grant(&call.await?) }
    }

    /// Sends `cmd` (a filter's, see [`super::filter_calls`]) and returns Redis' reply:
    /// a value, or the error Redis answered with (`CODE detail`).
    pub fn command(
        &self,
        cmd: redis::Cmd,
        timeout: Duration,
    ) -> impl Future<Output = Result<Result<redis::Value, String>, StoreError>> + Send + 'static
    {
        self.request(timeout, move |mut conn| async move {
            match conn.req_packed_command(&cmd).await {
                Ok(redis::Value::ServerError(e)) => Ok(Err(server_error(e.code(), e.details()))),
                Ok(v) => Ok(Ok(v)),
                // Redis' own answer, not a failure to reach it.
                Err(e) if e.code().is_some() => {
                    Ok(Err(server_error(e.code().unwrap_or("ERR"), e.detail())))
                }
                Err(e) => Err(e),
            }
        })
    }

    /// Runs `call` on the next open connection within `timeout`; a connection found
    /// broken is marked down and handed to its keeper.
    fn request<T, F, Fut>(
        &self,
        timeout: Duration,
        call: F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        F: FnOnce(MultiplexedConnection) -> Fut + Send + 'static,
        Fut: Future<Output = redis::RedisResult<T>> + Send,
        T: Send,
    {
        let picked = self.pick();
        let (slots, failures) = (self.slots.clone(), self.failures.clone());
        async move {
            let result = async {
                let (i, conn) = picked.ok_or(StoreError::Down)?;
                run(&slots, i, timeout, call(conn)).await
            }
            .await;
            if let Err(e) = &result {
                failures.call_failed(e);
            }
            result
        }
    }

    /// The next open connection, round robin.
    fn pick(&self) -> Option<(usize, MultiplexedConnection)> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|k| {
            let i = (start + k) % n;
            let conn = self.slots.get(i)?.conn.load_full()?;
            Some((i, MultiplexedConnection::clone(&conn)))
        })
    }
}

/// Awaits `call` on connection `i` within `timeout`; a connection found broken is
/// marked down and handed to its keeper.
async fn run<T>(
    slots: &[Slot],
    i: usize,
    timeout: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(StoreError::Timeout(timeout)),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let broken = e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error();
            if broken && let Some(slot) = slots.get(i) {
                slot.conn.store(None);
                slot.broken.notify_one();
            }
            Err(StoreError::Failed(e.to_string()))
        }
    }
}

/// Keeps slot `i` connected: opens it, waits until a check finds it broken, opens it
/// again, backing off while Redis is away.
async fn keep(
    client: redis::Client,
    slots: Arc<[Slot]>,
    i: usize,
    url: String,
    failures: Arc<Failures>,
) {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None);
    let mut wait = BACKOFF.0;
    let mut down_since_logged = false;
    loop {
        let Some(slot) = slots.get(i) else { return };
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => {
                if down_since_logged || i == 0 {
                    tracing::info!(redis = %url, connection = i, "connected to Redis");
                }
                down_since_logged = false;
                wait = BACKOFF.0;
                slot.conn.store(Some(Arc::new(conn)));
                slot.broken.notified().await;
                tracing::warn!(redis = %url, connection = i, "connection to Redis lost; reconnecting");
            }
            Err(e) => {
                failures.note(&format_args!("cannot connect: {e}"));
                if !down_since_logged {
                    tracing::warn!(redis = %url, connection = i, "cannot connect to Redis: {e}; retrying");
                    down_since_logged = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(BACKOFF.1);
            }
        }
    }
}

/// An error reply as Redis words it: `CODE detail`.
fn server_error(code: &str, detail: Option<&str>) -> String {
    match detail {
        Some(d) => format!("{code} {d}"),
        None => code.to_string(),
    }
}

/// Reads the script's `{granted, remaining, reset_us, retry_after_us}`.
fn grant(v: &[i64]) -> Result<Grant, StoreError> {
    let [granted, remaining, reset, retry] = v else {
        return Err(StoreError::Failed(format!(
            "the rate-limit script answered {v:?}"
        )));
    };
    let u32_of = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    let dur = |us: i64| Duration::from_micros(u64::try_from(us.max(0)).unwrap_or(0));
    Ok(Grant {
        granted: u32_of(*granted),
        remaining: u32_of(*remaining),
        reset: dur(*reset),
        retry_after: dur(*retry),
    })
}
