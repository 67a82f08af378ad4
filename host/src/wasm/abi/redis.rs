//! Higress's Redis host calls (see [`crate::wasm::redis`]): `proxy_redis_init` notes the
//! timeout a filter wants for a cluster, `proxy_redis_call` queues one command, sent
//! once the callback returns.

use std::time::Duration;

use wasmtime::Linker;

use super::C;
use crate::wasm::memory::{read, read_str, write_u32};
use crate::wasm::state::{Deferred, HostState, Status};

/// Links `proxy_redis_init` and `proxy_redis_call`.
pub(super) fn link(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    // The credentials are the `redis:` block's (its URL): a filter cannot log in as
    // someone else, so the ones it gives are not used.
    host!(l, "proxy_redis_init", |mut c: C<'_>,
                                  cp: u32,
                                  cn: u32,
                                  _up: u32,
                                  _un: u32,
                                  _pp: u32,
                                  _pn: u32,
                                  ms: u32|
     -> i32 {
        let cluster = s!(read_str(&c, cp, cn));
        let timeouts = &mut c.data_mut().redis_timeouts;
        if ms == 0 {
            timeouts.remove(&cluster);
        } else {
            timeouts.insert(cluster, Duration::from_millis(u64::from(ms)));
        }
        i32::from(Status::Ok)
    })?;
    host!(l, "proxy_redis_call", |mut c: C<'_>,
                                  cp: u32,
                                  cn: u32,
                                  qp: u32,
                                  qn: u32,
                                  rt: u32|
     -> i32 {
        let cluster = s!(read_str(&c, cp, cn));
        let query = s!(read(&c, qp, qn));
        let st = c.data();
        let sent = match st.extensions.redis() {
            Some(redis) => redis.call(&cluster, &query, st.redis_timeouts.get(&cluster).copied()),
            None => Err(crate::wasm::redis::Refused(
                "this runtime reaches no Redis".into(),
            )),
        };
        let answer = match sent {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(filter = %st.plugin_name, cluster = %cluster, "redis call refused: {e}");
                return Status::BadArgument.into();
            }
        };
        let token = c.data_mut().defer(Deferred::Redis(answer));
        s!(write_u32(&mut c, rt, token));
        Status::Ok.into()
    })?;
    Ok(())
}
