//! Canonical JSON for everything we hash: compact, object keys sorted at every level; and
//! reading JSON into oci-spec types.
//!
//! oci-spec (0.8 to 0.10) serialises `Platform.os_version` / `os_features` as `os_version` /
//! `os_features` instead of the spec's `os.version` / `os.features`, and so also ignores the
//! real keys when reading. Both directions go through here, which renames them.

use serde::de::DeserializeOwned;
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

const PLATFORM_KEYS: [(&str, &str); 2] =
    [("os_version", "os.version"), ("os_features", "os.features")];

/// Renames platform keys in every `platform` object (`to_wire`: oci-spec → OCI spelling).
fn fix_platform_keys(v: &mut Value, to_wire: bool) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(p)) = map.get_mut("platform") {
                for (rust, wire) in PLATFORM_KEYS {
                    let (from, to) = if to_wire { (rust, wire) } else { (wire, rust) };
                    if let Some(x) = p.remove(from) {
                        p.insert(to.to_string(), x);
                    }
                }
            }
            map.values_mut().for_each(|x| fix_platform_keys(x, to_wire));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| fix_platform_keys(x, to_wire)),
        _ => {}
    }
}

/// Reads OCI JSON into an oci-spec type, keeping `os.version` and `os.features`.
pub fn from_slice<T: DeserializeOwned>(data: &[u8]) -> std::result::Result<T, serde_json::Error> {
    let mut v: Value = serde_json::from_slice(data)?;
    fix_platform_keys(&mut v, false);
    serde_json::from_value(v)
}

/// Converts to a JSON value with the OCI spelling of every platform key.
pub fn to_value(value: &impl Serialize) -> Result<Value> {
    let mut v = serde_json::to_value(value)
        .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot serialise JSON: {e}")))?;
    fix_platform_keys(&mut v, true);
    Ok(v)
}

/// Serialises `value` compactly with sorted keys, so equal content gives equal bytes no
/// matter how maps were built (oci-spec keeps annotations in a `HashMap`).
pub fn canonical_json(value: &impl Serialize) -> Result<Vec<u8>> {
    let v = to_value(value)?;
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

    #[test]
    fn platform_os_version_uses_the_oci_spelling_both_ways() {
        let wire = br#"{"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","mediaType":"application/vnd.oci.image.manifest.v1+json","platform":{"architecture":"amd64","os":"windows","os.features":["win32k"],"os.version":"10.0.17763"},"size":2}"#;
        let d: oci_spec::image::Descriptor = super::from_slice(wire).expect("read");
        let p = d.platform().as_ref().expect("platform");
        assert_eq!(p.os_version().as_deref(), Some("10.0.17763"));
        assert_eq!(super::canonical_json(&d).expect("json"), wire.to_vec());
    }
}
