//! Canonical JSON for everything we hash: compact, object keys sorted at every level.

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Serialises `value` compactly with sorted keys, so equal content gives equal bytes no
/// matter how maps were built (oci-spec keeps annotations in a `HashMap`).
pub fn canonical_json(value: &impl Serialize) -> Result<Vec<u8>> {
    let v = serde_json::to_value(value)
        .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot serialise JSON: {e}")))?;
    serde_json::to_vec(&sorted(v))
        .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot serialise JSON: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_sorted_at_every_level() {
        let v = serde_json::json!({"b": 1, "a": {"z": [ {"y": 1, "x": 2} ], "c": null}});
        let out = String::from_utf8(super::canonical_json(&v).expect("json")).expect("utf8");
        assert_eq!(out, r#"{"a":{"c":null,"z":[{"x":2,"y":1}]},"b":1}"#);
    }
}
