//! `node:`: who this proxy is, as Envoy's bootstrap `node` tells filters (the `node.*`
//! properties).

use super::NodeConfig;
use super::walk::{Cx, Field, Fields};

/// Decodes `node: { id, cluster, metadata }`.
pub(crate) fn node(cx: &mut Cx, field: &Field) -> Option<NodeConfig> {
    let mut f = Fields::new(cx, field)?;
    let id = f.take("id").map(|v| v.string(cx));
    let cluster = f.take("cluster").map(|v| v.string(cx));
    let metadata = f.take("metadata").map(|v| metadata(cx, &v));
    f.finish(cx);
    Some(NodeConfig {
        id: id.unwrap_or(Some(String::new()))?,
        cluster: cluster.unwrap_or(Some(String::new()))?,
        metadata: metadata.unwrap_or(Some(Vec::new()))?,
        origin: Some(cx.origin(field.line)),
    })
}

/// A mapping of names to values: a string as its bytes, anything else as compact JSON.
fn metadata(cx: &mut Cx, field: &Field) -> Option<Vec<(String, Vec<u8>)>> {
    let serde_json::Value::Object(map) = field.node.to_json() else {
        field.error(cx, "expected a mapping of names to values");
        return None;
    };
    Some(
        map.into_iter()
            .map(|(k, v)| {
                let bytes = match v {
                    serde_json::Value::String(s) => s.into_bytes(),
                    other => other.to_string().into_bytes(),
                };
                (k, bytes)
            })
            .collect(),
    )
}
