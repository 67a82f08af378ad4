//! `module_cache:`: where compiled filter modules are kept between runs.

use super::walk::{Cx, Field, Fields};
use super::{MODULE_CACHE_MAX_SIZE, ModuleCacheConfig};

/// Decodes `module_cache: { enabled, dir, max_size }`.
pub(crate) fn module_cache(cx: &mut Cx, field: &Field) -> Option<ModuleCacheConfig> {
    let mut f = Fields::new(cx, field)?;
    let enabled = f.take("enabled").map(|v| v.bool(cx));
    // A directory that need not exist yet: it is made on first use.
    let dir = f
        .take("dir")
        .map(|v| v.string(cx).map(|text| cx.base.join(text)));
    let max_size = f.take("max_size").map(|v| v.size(cx));
    f.finish(cx);
    Some(ModuleCacheConfig {
        enabled: enabled.unwrap_or(Some(true))?,
        dir: match dir {
            Some(d) => Some(d?),
            None => None,
        },
        max_size: max_size.unwrap_or(Some(MODULE_CACHE_MAX_SIZE))?,
        origin: cx.origin(field.line),
    })
}
