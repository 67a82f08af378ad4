//! `node:`: who this proxy is, as Envoy's bootstrap `node` tells filters (the `node.*`
//! properties); and the metadata mappings it shares with `upstreams[].metadata`.

use super::NodeConfig;
use super::walk::{Cx, Field, Fields};

/// Decodes `node: { id, cluster, metadata }`.
pub(crate) fn node(cx: &mut Cx, field: &Field) -> Option<NodeConfig> {
    let mut f = Fields::new(cx, field)?;
    let id = f.take("id").map(|v| v.string(cx));
    let cluster = f.take("cluster").map(|v| v.string(cx));
    let metadata = f.take("metadata").map(|v| values(cx, &v));
    f.finish(cx);
    Some(NodeConfig {
        id: id.unwrap_or(Some(String::new()))?,
        cluster: cluster.unwrap_or(Some(String::new()))?,
        metadata: metadata.unwrap_or(Some(Vec::new()))?,
        origin: Some(cx.origin(field.line)),
    })
}

/// A mapping of names to values, nested mappings flattened to dotted paths
/// (`{ a: { b: 1 } }` is `a.b`): a string as its bytes, any other value as compact JSON.
pub(crate) fn values(cx: &mut Cx, field: &Field) -> Option<Vec<(String, Vec<u8>)>> {
    let serde_json::Value::Object(map) = field.node.to_json() else {
        field.error(cx, "expected a mapping of names to values");
        return None;
    };
    let mut out = Vec::new();
    flatten(String::new(), serde_json::Value::Object(map), &mut out);
    Some(out)
}

fn flatten(path: String, value: serde_json::Value, out: &mut Vec<(String, Vec<u8>)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if path.is_empty() {
                    k
                } else {
                    format!("{path}.{k}")
                };
                flatten(key, v, out);
            }
        }
        serde_json::Value::String(s) => out.push((path, s.into_bytes())),
        other => out.push((path, other.to_string().into_bytes())),
    }
}
