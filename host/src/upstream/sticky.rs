//! Sticky sessions: a cookie the proxy sets on a response names the target that
//! served it, and a later request carrying it goes to that target again, for as long
//! as it is in rotation; otherwise (down, ejected, or no longer configured) the
//! balancing policy picks, and the response pins the client to the new target.
//!
//! The cookie's value is a fixed hash of the target's address (16 hex digits), not
//! its position or the address itself: it means the same target in every worker,
//! every process and across reloads, whatever else the reload changed, and tells the
//! client nothing about the network behind the proxy.

use std::hash::BuildHasher;

use http::{HeaderMap, HeaderValue};

use super::balance::cookie;
use super::target::TargetSet;
use crate::config::StickyConfig;

/// Fixed, so that a value means the same target to every process of every version
/// that keeps this seed.
const HASHER: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x7374_6963_6b79);

/// An upstream's sticky cookie: its name, each target's value, and the `Set-Cookie`
/// that pins a client to each target (made once, not per response).
pub struct Sticky {
    cookie: String,
    /// The cookie's value for each target, in config order.
    values: Box<[u64]>,
    set_cookie: Box<[HeaderValue]>,
}

impl Sticky {
    /// The cookie of `config` for `targets`.
    pub fn new(config: &StickyConfig, targets: &TargetSet) -> Self {
        let values: Box<[u64]> = targets
            .list
            .iter()
            .map(|t| HASHER.hash_one(t.address.as_str()))
            .collect();
        let max_age = config
            .max_age
            .map(|a| format!("; Max-Age={}", a.as_secs()))
            .unwrap_or_default();
        let set_cookie = values
            .iter()
            .map(|v| {
                let cookie = format!(
                    "{}={v:016x}; Path=/; HttpOnly; SameSite=Lax{max_age}",
                    config.cookie
                );
                // The name was checked to be a token and the rest is ours.
                HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
            })
            .collect();
        Self {
            cookie: config.cookie.clone(),
            values,
            set_cookie,
        }
    }

    /// The target the request's cookie names, if it names one of these targets.
    pub fn pinned(&self, headers: &HeaderMap) -> Option<usize> {
        let value = cookie(headers, &self.cookie)?;
        if value.len() != 16 {
            return None;
        }
        let value = u64::from_str_radix(value, 16).ok()?;
        self.values.iter().position(|&v| v == value)
    }

    /// The `Set-Cookie` that pins a client to target `index`.
    pub fn set_cookie(&self, index: usize) -> Option<&HeaderValue> {
        self.set_cookie.get(index).filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sticky(max_age: Option<Duration>) -> Sticky {
        let config = StickyConfig {
            cookie: "srv".into(),
            max_age,
        };
        Sticky::new(&config, &TargetSet::with_weights(&[1, 1, 1]))
    }

    fn cookie_of(s: &Sticky, i: usize) -> String {
        let set = s.set_cookie(i).and_then(|v| v.to_str().ok()).unwrap_or("");
        set.split(';').next().unwrap_or("").to_string()
    }

    #[test]
    fn the_cookie_set_for_a_target_pins_it() {
        let s = sticky(None);
        for i in 0..3 {
            let mut headers = HeaderMap::new();
            let value = format!("a=1; {}", cookie_of(&s, i));
            headers.insert("cookie", value.parse().unwrap_or_else(|e| panic!("{e}")));
            assert_eq!(s.pinned(&headers), Some(i), "{headers:?}");
        }
        let set = s.set_cookie(0).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(
            set.ends_with("; Path=/; HttpOnly; SameSite=Lax"),
            "a session cookie: {set}"
        );
        let s = sticky(Some(Duration::from_secs(3600)));
        let set = s.set_cookie(0).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(set.ends_with("; Max-Age=3600"), "{set}");
    }

    #[test]
    fn an_unknown_or_malformed_value_pins_nothing() {
        let s = sticky(None);
        for value in ["srv=0000000000000000", "srv=zz", "srv=", "other=1"] {
            let mut headers = HeaderMap::new();
            headers.insert("cookie", HeaderValue::from_static(value));
            assert_eq!(s.pinned(&headers), None, "{value}");
        }
        assert_eq!(s.pinned(&HeaderMap::new()), None);
    }

    #[test]
    fn a_value_means_the_same_address_in_another_set() {
        let a = sticky(None);
        // The same addresses in another order: the values follow the addresses.
        let config = StickyConfig {
            cookie: "srv".into(),
            max_age: None,
        };
        let b = Sticky::new(&config, &TargetSet::with_weights(&[5, 1, 1, 1]));
        for i in 0..3 {
            assert_eq!(cookie_of(&a, i), cookie_of(&b, i));
        }
    }
}
