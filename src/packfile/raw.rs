//! The pack file as the user wrote it ([`PackFile`]) and its strict reading from a node tree,
//! which collects every structural problem with its position instead of stopping at the first.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::node::{expand_vars, Node, Value};
use crate::error::{Problem, Problems};
use crate::store::MAX_MANIFEST_BYTES;

/// A pack file: what to build (SPEC §2.1). Field names are those of the YAML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackFile {
    /// `type`: the `artifactType` of the root manifest or index.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations of the root manifest or index.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Config of the root manifest (index mode: default config of every built member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigSpec>,
    /// The sources, at least one.
    pub items: Vec<ItemSpec>,
}

/// One entry of `items`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemSpec {
    /// Source URI.
    pub from: String,
    /// Media type of each layer (image items: the member's `artifactType`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// `os[(os.version)]/arch[/variant]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Added to every layer the item produces.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Config of the member manifest this item lands in (index mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigSpec>,
    /// Expected digest of the item's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `dir://` only: `tar`, `tar+gzip` or `tar+zstd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
}

/// A config descriptor's source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// Source URI of a single blob.
    pub from: String,
    /// The config descriptor's `mediaType`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Annotations of the config descriptor.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Expected digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Where each field path was written: `items[2].platform` → (line, column).
pub type Positions = HashMap<String, (usize, usize)>;

/// Reads a node tree strictly into a [`PackFile`], expanding `${VAR}` from `env`.
pub(crate) fn read_pack(
    root: &Node,
    env: &dyn Fn(&str) -> Option<String>,
) -> (PackFile, Positions, Problems) {
    let mut r = Reader {
        env,
        positions: Positions::new(),
        problems: Problems::default(),
        reported: HashSet::new(),
        expanded_bytes: 0,
    };
    let mut pack = PackFile::default();
    let mut items_seen = false;
    r.mapping(
        root,
        "",
        &["type", "annotations", "config", "items"],
        |r, key, path, value| match key {
            "type" => pack.artifact_type = r.string(value, path),
            "annotations" => pack.annotations = r.string_map(value, path),
            "config" => pack.config = r.config(value, path),
            _ => {
                items_seen = true;
                pack.items = r.items(value, path);
            }
        },
    );
    if !items_seen && matches!(root.value, Value::Map(_)) {
        r.problem(
            root,
            "items",
            "missing required key \"items\" (a list of at least one item)",
        );
    }
    (pack, r.positions, r.problems)
}

/// The problem text for a value that alone cannot fit in a manifest.
pub(crate) fn too_large(bytes: u64, what: &str) -> String {
    format!(
        "{what} is {bytes} bytes; a manifest holds at most {MAX_MANIFEST_BYTES} bytes (4 MiB), \
         so it could never be pushed: put large content in a file item instead"
    )
}

struct Reader<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    positions: Positions,
    problems: Problems,
    /// Fields with a problem already (a set: a look-up per item must not scan every
    /// problem, or a pack of many bad items takes quadratic time).
    reported: HashSet<String>,
    /// Bytes `${VAR}` expansion added so far.
    expanded_bytes: usize,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Reader<'_> {
    fn problem(&mut self, node: &Node, field: &str, message: impl Into<String>) {
        self.push(Problem {
            file: None,
            field: field.to_string(),
            line: node.line,
            column: node.column,
            message: message.into(),
        });
    }

    fn push(&mut self, problem: Problem) {
        let field = problem.field.clone();
        if self.problems.push(problem) {
            self.reported.insert(field);
        }
    }

    /// Walks a mapping, rejecting unknown and duplicate keys, calling `f` for each known key.
    fn mapping(
        &mut self,
        node: &Node,
        path: &str,
        allowed: &[&str],
        mut f: impl FnMut(&mut Self, &str, &str, &Node),
    ) {
        self.positions
            .insert(path.to_string(), (node.line, node.column));
        let entries = match &node.value {
            Value::Map(entries) => entries,
            _ => {
                let what = if path.is_empty() {
                    "the pack file"
                } else {
                    "this field"
                };
                self.problem(
                    node,
                    path,
                    format!("{what} must be a mapping, found {}", node.type_name()),
                );
                return;
            }
        };
        for (key, k, v, field) in self.entries(entries, path) {
            if !allowed.contains(&key) {
                let allowed = allowed.join(", ");
                self.problem(
                    k,
                    &field,
                    format!("unknown key \"{key}\" (allowed here: {allowed})"),
                );
                continue;
            }
            f(self, key, &field, v);
        }
    }

    /// The entries of a mapping with string keys, each with its field path (recorded in
    /// `positions`); other keys and duplicates are reported and left out.
    fn entries<'n>(
        &mut self,
        entries: &'n [(Node, Node)],
        path: &str,
    ) -> Vec<(&'n str, &'n Node, &'n Node, String)> {
        let mut out: Vec<(&'n str, &'n Node, &'n Node, String)> = Vec::new();
        let mut seen: HashSet<&'n str> = HashSet::with_capacity(entries.len());
        for (k, v) in entries {
            let Value::Scalar(key) = &k.value else {
                self.problem(
                    k,
                    path,
                    format!("keys must be strings, found {}", k.type_name()),
                );
                continue;
            };
            let field = join(path, key);
            if !seen.insert(key) {
                self.problem(k, &field, format!("duplicate key \"{key}\""));
                continue;
            }
            self.positions.insert(field.clone(), (v.line, v.column));
            out.push((key, k, v, field));
        }
        out
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Null => None,
            Value::Scalar(s) => match expand_vars(s, self.env) {
                Ok(v) if v.len() as u64 > MAX_MANIFEST_BYTES => {
                    self.problem(node, path, too_large(v.len() as u64, "this value"));
                    None
                }
                Ok(v)
                    if {
                        self.expanded_bytes += v.len().saturating_sub(s.len());
                        self.expanded_bytes > super::node::MAX_ALIASED_BYTES
                    } =>
                {
                    self.problem(
                        node,
                        path,
                        format!(
                            "environment variables expand to more than {} bytes in all; \
                             put large content in a file item instead",
                            super::node::MAX_ALIASED_BYTES
                        ),
                    );
                    None
                }
                Ok(v) => Some(v),
                Err(missing) => {
                    for name in missing {
                        self.problem(
                            node,
                            path,
                            format!("environment variable {name} is not set (set it, or write ${{{name}:-default}})"),
                        );
                    }
                    None
                }
            },
            _ => {
                self.problem(
                    node,
                    path,
                    format!("expected a string, found {}", node.type_name()),
                );
                None
            }
        }
    }

    fn string_map(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match &node.value {
            Value::Null => {}
            Value::Map(entries) => {
                for (key, k, v, field) in self.entries(entries, path) {
                    if key.len() as u64 > MAX_MANIFEST_BYTES {
                        self.problem(k, &field, too_large(key.len() as u64, "this key"));
                        continue;
                    }
                    let value = match &v.value {
                        Value::Null => Some(String::new()),
                        _ => self.string(v, &field),
                    };
                    if let Some(value) = value {
                        out.insert(key.to_string(), value);
                    }
                }
            }
            _ => self.problem(
                node,
                path,
                format!("expected a mapping of strings, found {}", node.type_name()),
            ),
        }
        out
    }

    fn required_from(&mut self, node: &Node, path: &str, from: Option<String>) -> String {
        match from {
            Some(f) if !f.trim().is_empty() => f,
            Some(_) => {
                let at = join(path, "from");
                if self.reported.contains(&at) {
                    return String::new(); // already reported (an unset variable)
                }
                let (line, column) = self
                    .positions
                    .get(&at)
                    .copied()
                    .unwrap_or((node.line, node.column));
                self.push(Problem {
                    file: None,
                    field: at,
                    line,
                    column,
                    message: "empty \"from\": give a source URI such as file://path or dir://path/"
                        .into(),
                });
                String::new()
            }
            None => {
                if matches!(node.value, Value::Map(_))
                    && !self.reported.contains(&join(path, "from"))
                {
                    self.problem(
                        node,
                        &join(path, "from"),
                        "missing required key \"from\" (the source URI)",
                    );
                }
                String::new()
            }
        }
    }

    fn config(&mut self, node: &Node, path: &str) -> Option<ConfigSpec> {
        if node.value == Value::Null {
            return None;
        }
        let mut c = ConfigSpec::default();
        let mut from = None;
        self.mapping(
            node,
            path,
            &["from", "type", "annotations", "digest"],
            |r, key, field, v| match key {
                "from" => from = Some(r.string(v, field).unwrap_or_default()),
                "type" => c.media_type = r.string(v, field),
                "annotations" => c.annotations = r.string_map(v, field),
                _ => c.digest = r.string(v, field),
            },
        );
        c.from = self.required_from(node, path, from);
        Some(c)
    }

    fn items(&mut self, node: &Node, path: &str) -> Vec<ItemSpec> {
        let list = match &node.value {
            Value::Seq(list) if !list.is_empty() => list,
            Value::Seq(_) | Value::Null => {
                self.problem(node, path, "the pack file must contain at least one item");
                return Vec::new();
            }
            _ => {
                self.problem(
                    node,
                    path,
                    format!("expected a list of items, found {}", node.type_name()),
                );
                return Vec::new();
            }
        };
        let mut items = Vec::with_capacity(list.len());
        for (i, n) in list.iter().enumerate() {
            let ipath = format!("{path}[{i}]");
            let mut item = ItemSpec::default();
            let mut from = None;
            self.mapping(
                n,
                &ipath,
                &[
                    "from",
                    "type",
                    "platform",
                    "annotations",
                    "config",
                    "digest",
                    "archive",
                ],
                |r, key, field, v| match key {
                    "from" => from = Some(r.string(v, field).unwrap_or_default()),
                    "type" => item.media_type = r.string(v, field),
                    "platform" => item.platform = r.string(v, field),
                    "annotations" => item.annotations = r.string_map(v, field),
                    "config" => item.config = r.config(v, field),
                    "digest" => item.digest = r.string(v, field),
                    _ => item.archive = r.string(v, field),
                },
            );
            item.from = self.required_from(n, &ipath, from);
            items.push(item);
        }
        items
    }
}
