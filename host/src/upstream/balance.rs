//! Balancing: which target of an upstream a request goes to.
//!
//! A policy is a [`Policy`]: built once per upstream from its settings and targets
//! (and kept with the upstream across reloads that leave it unchanged), asked for a
//! target on every request with a per-worker state of its own ([`Policy::Local`], so
//! the hot path shares no lock) and a view of the targets' health and load
//! ([`Candidates`]). Modelled on Pingora's `SelectionAlgorithm`/`BackendSelection`
//! split, smaller: a policy sees indices, never connections.
//!
//! Adding one is a file under `balance/` with a `build` function, and its line in
//! [`POLICIES`]; its settings arrive as written under `balance:` ([`Settings`]), so
//! the config layer needs no change.
//!
//! Health is handled here, the same for every policy: a policy picks among the
//! targets that are up; when none is, it is asked again with every target eligible
//! (fail open: health data can lag, and trying costs less than certain failure).

mod consistent_hash;
mod least_request;
mod random;
mod round_robin;
pub(super) mod sample;

use std::any::Any;
use std::net::IpAddr;

use super::target::TargetSet;
use crate::config::{BalanceConfig, BalanceOption, ConfigError};

/// Every policy by the name `balance:` gives it, and its constructor.
const POLICIES: &[(&str, Build)] = &[
    ("round_robin", round_robin::build),
    ("least_request", least_request::build),
    ("random", random::build),
    ("consistent_hash", consistent_hash::build),
];

/// Builds a policy for `targets` from its settings, reporting what is wrong with them
/// through `settings`.
type Build = fn(&mut Settings<'_>, &TargetSet) -> Option<Balancer>;

/// What a policy may read of the request it balances.
#[derive(Debug, Clone, Copy)]
pub struct PickRequest<'a> {
    /// The request's URI (origin-form, or absolute for HTTP/2).
    pub uri: &'a http::Uri,
    /// The request's headers.
    pub headers: &'a http::HeaderMap,
    /// The client's IP (the peer the proxy saw), when there is a client.
    pub client: Option<IpAddr>,
}

/// The value of cookie `name` in `headers` (every `Cookie` header, `a=1; b=2`), as
/// sent; for the policies and canaries that key on a cookie.
pub fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, value) = pair.trim().split_once('=')?;
            (n == name).then_some(value)
        })
}

/// The targets as a policy sees them for one pick: which may be picked, their weights
/// and their load.
pub struct Candidates<'a> {
    set: &'a TargetSet,
    /// Failover and locality: only targets of this tier may be picked.
    tier: Option<Within<'a>>,
    /// Read on first need: most picks never need the clock.
    now_ms: std::cell::Cell<Option<u64>>,
    fail_open: bool,
}

impl Candidates<'_> {
    /// How many targets there are (indices are `0..len`).
    pub fn len(&self) -> usize {
        self.set.list.len()
    }

    /// Whether there are no targets (never, for a built upstream).
    pub fn is_empty(&self) -> bool {
        self.set.list.is_empty()
    }

    /// Whether target `i` may be picked now.
    pub fn eligible(&self, i: usize) -> bool {
        if let Some(w) = &self.tier
            && w.tier_of.get(i) != Some(&w.tier)
        {
            return false;
        }
        self.set.list.get(i).is_some_and(|t| {
            self.fail_open
                || t.is_available_with(|| match self.now_ms.get() {
                    Some(now) => now,
                    None => {
                        let now = super::now_ms();
                        self.now_ms.set(Some(now));
                        now
                    }
                })
        })
    }

    /// Target `i`'s configured weight (0 for an index out of range).
    pub fn weight(&self, i: usize) -> u32 {
        self.set.list.get(i).map_or(0, |t| t.weight)
    }

    /// Requests in flight to target `i`, from every worker.
    pub fn active(&self, i: usize) -> u32 {
        self.set.list.get(i).map_or(0, |t| t.active())
    }

    /// Requests in flight to the whole upstream.
    pub fn total_active(&self) -> u32 {
        self.set.active()
    }

    /// The tier this pick is confined to, if any.
    pub fn within(&self) -> Option<&Within<'_>> {
        self.tier.as_ref()
    }
}

/// A failover or locality tier a pick is confined to (see `upstream::tiers`).
pub struct Within<'a> {
    /// The tier of each target.
    pub tier_of: &'a [u16],
    /// The tier picked from.
    pub tier: u16,
    /// Its targets, in config order.
    pub members: &'a [u32],
    /// Their weights, for the policies that draw.
    pub sampler: &'a sample::Weighted,
}

/// A balancing policy (see the module documentation).
pub trait Policy: Send + Sync + 'static {
    /// A worker's own state: running scores, a random stream. Made on the worker's
    /// first pick of the upstream and kept while the upstream lives.
    type Local: 'static;

    /// A fresh worker state.
    fn local(&self) -> Self::Local;

    /// The index of the target for `request`, among those `targets` says are eligible;
    /// `None` when none is.
    fn pick(
        &self,
        local: &mut Self::Local,
        targets: &Candidates<'_>,
        request: &PickRequest<'_>,
    ) -> Option<usize>;
}

/// A worker's state for one upstream's policy.
pub struct Local(Box<dyn Any>);

/// An upstream's policy, whichever it is.
pub struct Balancer {
    name: &'static str,
    policy: Box<dyn ErasedPolicy>,
}

// === impl Balancer ===

impl Balancer {
    /// Builds the policy `config` names for `targets`; errors name the file, line and
    /// field under `upstreams.UPSTREAM.balance`.
    pub fn build(
        upstream: &str,
        config: &BalanceConfig,
        targets: &TargetSet,
    ) -> Result<Balancer, Vec<ConfigError>> {
        let mut settings = Settings {
            config,
            path: format!("upstreams.{upstream}.balance"),
            taken: vec![false; config.options.len()],
            errors: Vec::new(),
        };
        let Some(&(name, build)) = POLICIES.iter().find(|(n, _)| *n == config.policy) else {
            let names: Vec<&str> = POLICIES.iter().map(|(n, _)| *n).collect();
            settings.error_at(
                config.origin.line,
                "",
                format!(
                    "`{}` is not a balancing policy (one of: {})",
                    config.policy,
                    names.join(", ")
                ),
            );
            return Err(settings.errors);
        };
        let built = build(&mut settings, targets);
        settings.finish();
        match built {
            Some(b) if settings.errors.is_empty() => Ok(Balancer { name, ..b }),
            _ => Err(settings.errors),
        }
    }

    /// `policy`, for an upstream.
    pub fn new<P: Policy>(policy: P) -> Balancer {
        Balancer {
            name: "",
            policy: Box::new(policy),
        }
    }

    /// The policy's name as configured.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A fresh worker state for this policy.
    pub fn local(&self) -> Local {
        Local(self.policy.local())
    }

    /// Picks a target of `set` for `request`: among those up now, else (fail open)
    /// among all.
    pub fn pick(
        &self,
        local: &mut Local,
        set: &TargetSet,
        request: &PickRequest<'_>,
    ) -> Option<usize> {
        let mut targets = Candidates {
            set,
            tier: None,
            now_ms: std::cell::Cell::new(None),
            fail_open: false,
        };
        if let Some(i) = self.policy.pick(&mut *local.0, &targets, request) {
            return Some(i);
        }
        targets.fail_open = true;
        self.policy.pick(&mut *local.0, &targets, request)
    }

    /// [`Balancer::pick`] among the targets up in tier `within`; when none of them is
    /// up (its health changed since the tier was chosen), among all targets as
    /// [`Balancer::pick`] does.
    pub fn pick_in(
        &self,
        local: &mut Local,
        set: &TargetSet,
        request: &PickRequest<'_>,
        within: Within<'_>,
    ) -> Option<usize> {
        let targets = Candidates {
            set,
            tier: Some(within),
            now_ms: std::cell::Cell::new(None),
            fail_open: false,
        };
        match self.policy.pick(&mut *local.0, &targets, request) {
            Some(i) => Some(i),
            None => self.pick(local, set, request),
        }
    }
}

/// [`Policy`] with its worker state type erased, so that upstreams of different
/// policies sit side by side.
trait ErasedPolicy: Send + Sync {
    fn local(&self) -> Box<dyn Any>;
    fn pick(
        &self,
        local: &mut dyn Any,
        targets: &Candidates<'_>,
        request: &PickRequest<'_>,
    ) -> Option<usize>;
}

impl<P: Policy> ErasedPolicy for P {
    fn local(&self) -> Box<dyn Any> {
        Box::new(Policy::local(self))
    }

    fn pick(
        &self,
        local: &mut dyn Any,
        targets: &Candidates<'_>,
        request: &PickRequest<'_>,
    ) -> Option<usize> {
        // Always the type `local` made: the worker keeps the pair together.
        let local = local.downcast_mut::<P::Local>()?;
        Policy::pick(self, local, targets, request)
    }
}

/// A policy's settings as written under `balance:`, handed to its `build`: each is
/// taken by name, and whatever is left over is reported as unknown.
pub struct Settings<'a> {
    config: &'a BalanceConfig,
    path: String,
    taken: Vec<bool>,
    errors: Vec<ConfigError>,
}

impl<'a> Settings<'a> {
    /// The setting `name`, if written.
    pub fn take(&mut self, name: &str) -> Option<&'a BalanceOption> {
        let config: &'a BalanceConfig = self.config;
        let i = config.options.iter().position(|o| o.name == name)?;
        if let Some(t) = self.taken.get_mut(i) {
            *t = true;
        }
        config.options.get(i)
    }

    /// Records an error about `option`'s value.
    pub fn error(&mut self, option: &BalanceOption, message: impl Into<String>) {
        let field = format!(".{}", option.name);
        self.error_at(option.line, &field, message);
    }

    /// Records that the required setting `name` is missing.
    pub fn missing(&mut self, name: &str) {
        let field = format!(".{name}");
        let line = self.config.origin.line;
        self.error_at(line, &field, "missing required field");
    }

    fn error_at(&mut self, line: usize, field: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.config.origin.file.clone(),
            line,
            path: format!("{}{field}", self.path),
            message: message.into(),
        });
    }

    fn finish(&mut self) {
        let unknown: Vec<BalanceOption> = self
            .config
            .options
            .iter()
            .zip(&self.taken)
            .filter(|(_, taken)| !**taken)
            .map(|(o, _)| o.clone())
            .collect();
        for o in unknown {
            let message = format!("unknown setting of `{}`", self.config.policy);
            self.error(&o, message);
        }
    }
}
