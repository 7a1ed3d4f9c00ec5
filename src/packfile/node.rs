//! A YAML document as a tree of nodes that remember their line and column, so that every
//! problem found later (unknown key, bad platform, unset variable) can point at the text.
//!
//! Why not serde_yaml_ng for reading: its errors carry a position only for the first syntax
//! or type error, and a deserialised value has no spans, so it cannot report *every* problem
//! with `file:line:column` (SPEC §2.1). yaml-rust2's event parser gives a marker per event.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One node of the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// 1-based line (0 when the node did not come from text).
    pub line: usize,
    /// 1-based column (0 when the node did not come from text).
    pub column: usize,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// A scalar, as text (YAML numbers and booleans stay text: annotation values are strings).
    Scalar(String),
    /// A mapping, in document order.
    Map(Vec<(Node, Node)>),
    /// A sequence.
    Seq(Vec<Node>),
}

impl Node {
    fn at(value: Value, mark: Marker) -> Node {
        // yaml-rust2 reports 1-based lines and 0-based columns; editors count both from 1.
        Node {
            value,
            line: mark.line(),
            column: mark.col() + 1,
        }
    }

    /// A node with no position (built from a dict / JSON).
    pub fn bare(value: Value) -> Node {
        Node {
            value,
            line: 0,
            column: 0,
        }
    }

    /// A short name of the node's type for messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Scalar(_) => "a string",
            Value::Map(_) => "a mapping",
            Value::Seq(_) => "a list",
        }
    }

    /// Converts a JSON value (a Python dict, say) to nodes without positions.
    pub fn from_json(v: &serde_json::Value) -> Node {
        Node::bare(match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Scalar(b.to_string()),
            serde_json::Value::Number(n) => Value::Scalar(n.to_string()),
            serde_json::Value::String(s) => Value::Scalar(s.clone()),
            serde_json::Value::Array(a) => Value::Seq(a.iter().map(Node::from_json).collect()),
            serde_json::Value::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (Node::bare(Value::Scalar(k.clone())), Node::from_json(v)))
                    .collect(),
            ),
        })
    }
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What the parser said.
    pub message: String,
}

/// Deepest nesting of mappings and sequences (block or flow) a pack file may have; a real
/// pack file needs about five.
pub const MAX_DEPTH: usize = 64;

/// Most nodes a document may produce with its aliases expanded: far above any real pack file
/// (100,000 annotations are 200,001 nodes), far below what exhausts memory.
pub const MAX_NODES: usize = 500_000;

/// Most bytes of text anchors and aliases may copy in all (a 1 MB scalar aliased a thousand
/// times would otherwise be a gigabyte; each anchor keeps a copy of its tree).
pub const MAX_ALIASED_BYTES: usize = 16 << 20;

/// Parses the first document of `text`; `Ok(None)` for an empty document. A leading UTF-8
/// byte-order mark is skipped.
///
/// Bounded whatever the input: nesting deeper than [`MAX_DEPTH`] and documents that expand
/// (through aliases or not) to more than [`MAX_NODES`] nodes are errors at the position
/// where the limit was passed, found without building the rest.
pub fn parse_yaml(text: &str) -> Result<Option<Node>, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // YAML allows no control characters but tab, line feed and carriage return (and the
    // parser takes a NUL for the end of the text, silently dropping the rest).
    if let Some((at, c)) = text
        .char_indices()
        .find(|&(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{85}'))
    {
        let before = &text[..at];
        return Err(SyntaxError {
            line: before.matches('\n').count() + 1,
            column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
            message: format!(
                "control character U+{:04X} in the text; YAML allows none but tab and line \
                 breaks (write it as an escape inside double quotes)",
                c as u32
            ),
        });
    }
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, mark) = parser.next_token().map_err(|e| SyntaxError {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        let end = matches!(event, Event::StreamEnd);
        builder.on_event(event, mark);
        if let Some(e) = builder.error.take() {
            return Err(e);
        }
        if end || builder.done {
            return Ok(builder.root);
        }
    }
}

enum Open {
    Map(Node, Vec<(Node, Node)>, Option<Node>, usize),
    Seq(Node, Vec<Node>, usize),
}

#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Open>,
    root: Option<Node>,
    /// Anchored nodes with their sizes in nodes and in bytes of text.
    anchors: HashMap<usize, (Node, usize, usize)>,
    /// Nodes produced so far, aliases expanded.
    nodes: usize,
    /// Bytes of text aliases copied so far.
    aliased_bytes: usize,
    done: bool,
    error: Option<SyntaxError>,
}

/// The number of nodes in `node`'s tree and the bytes of its text (depth is bounded by
/// [`MAX_DEPTH`]).
fn size(node: &Node) -> (usize, usize) {
    let add = |(n, b): (usize, usize), (n2, b2): (usize, usize)| (n + n2, b + b2);
    let below = match &node.value {
        Value::Null => (0, 0),
        Value::Scalar(s) => (0, s.len()),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| add(size(k), size(v)))
            .fold((0, 0), add),
        Value::Seq(items) => items.iter().map(size).fold((0, 0), add),
    };
    add((1, 0), below)
}

impl TreeBuilder {
    fn fail(&mut self, mark: Marker, message: String) {
        self.error.get_or_insert(SyntaxError {
            line: mark.line(),
            column: mark.col() + 1,
            message,
        });
    }

    /// Counts `n` more nodes; false (with the error set) past [`MAX_NODES`].
    fn count(&mut self, n: usize, mark: Marker, alias: bool) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes <= MAX_NODES {
            return true;
        }
        self.fail(
            mark,
            if alias {
                format!(
                    "this alias expands the document past {MAX_NODES} nodes (aliases nested \
                     in aliases multiply); write the content out instead of aliasing it"
                )
            } else {
                format!("the document has more than {MAX_NODES} nodes; split the pack file")
            },
        );
        false
    }

    /// Counts `b` bytes of text copied by an anchor or an alias at `line`:`column`; false
    /// (with the error set) past [`MAX_ALIASED_BYTES`].
    fn copy_bytes(&mut self, b: usize, line: usize, column: usize) -> bool {
        self.aliased_bytes = self.aliased_bytes.saturating_add(b);
        if self.aliased_bytes <= MAX_ALIASED_BYTES {
            return true;
        }
        self.error.get_or_insert(SyntaxError {
            line,
            column,
            message: format!(
                "anchors and aliases copy more than {MAX_ALIASED_BYTES} bytes of text in all; \
                 write the content out instead of aliasing it"
            ),
        });
        false
    }

    /// Opens a mapping or sequence unless that passes [`MAX_DEPTH`].
    fn open(&mut self, open: Open, mark: Marker) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(
                mark,
                format!("nesting deeper than {MAX_DEPTH} levels; a pack file needs a handful"),
            );
            return;
        }
        if self.count(1, mark, false) {
            self.stack.push(open);
        }
    }

    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let (n, b) = size(&node);
            // Keeping the anchored tree is a copy too: nested anchors would multiply it.
            if !self.copy_bytes(b, node.line, node.column) {
                return;
            }
            self.anchors.insert(anchor, (node.clone(), n, b));
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                self.done = true;
            }
            Some(Open::Seq(_, items, _)) => items.push(node),
            Some(Open::Map(_, entries, key, _)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return; // only the first document counts
        }
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let null = style == TScalarStyle::Plain
                    && matches!(text.as_str(), "~" | "null" | "Null" | "NULL" | "");
                let value = if null {
                    Value::Null
                } else {
                    Value::Scalar(text)
                };
                if self.count(1, mark, false) {
                    self.push_value(Node::at(value, mark), anchor);
                }
            }
            Event::MappingStart(anchor, _) => self.open(
                Open::Map(Node::at(Value::Null, mark), Vec::new(), None, anchor),
                mark,
            ),
            Event::SequenceStart(anchor, _) => self.open(
                Open::Seq(Node::at(Value::Null, mark), Vec::new(), anchor),
                mark,
            ),
            Event::MappingEnd => {
                if let Some(Open::Map(mut node, entries, _, anchor)) = self.stack.pop() {
                    // A block mapping's start event is reported after its first key was
                    // scanned; the first key is where a reader looks.
                    if let Some((k, _)) = entries.first() {
                        node.line = k.line;
                        node.column = k.column;
                    }
                    node.value = Value::Map(entries);
                    self.push_value(node, anchor);
                }
            }
            Event::SequenceEnd => {
                if let Some(Open::Seq(mut node, items, anchor)) = self.stack.pop() {
                    node.value = Value::Seq(items);
                    self.push_value(node, anchor);
                }
            }
            Event::Alias(id) => {
                let Some((n, b)) = self.anchors.get(&id).map(|(_, n, b)| (*n, *b)) else {
                    self.fail(mark, "alias to an unknown anchor".into());
                    return;
                };
                if !self.count(n, mark, true) {
                    return;
                }
                if !self.copy_bytes(b, mark.line(), mark.col() + 1) {
                    return;
                }
                if let Some((mut node, _, _)) = self.anchors.get(&id).cloned() {
                    node.line = mark.line();
                    node.column = mark.col() + 1;
                    self.push_value(node, 0);
                }
            }
            _ => {}
        }
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` from `lookup`; `$$` is a literal `$`.
///
/// Returns the names of unset variables without a default as the error.
pub fn expand_vars(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                out.push_str(&rest[i..]);
                rest = "";
                break;
            };
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                // A few names say enough; a value of millions of them must not make a list
                // of millions.
                (None, None) if missing.len() < 8 && !missing.iter().any(|m| m == name) => {
                    missing.push(name.to_string())
                }
                (None, None) => {}
            }
            // Past a manifest's size the value is refused anyway (by its length): stop
            // copying.
            if out.len() as u64 > crate::store::MAX_MANIFEST_BYTES {
                rest = "";
                break;
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let root = parse_yaml("a: 1\nitems:\n  - from: x\n")
            .expect("valid")
            .expect("doc");
        let Value::Map(entries) = root.value else {
            panic!("map")
        };
        let (k, v) = &entries[1];
        assert_eq!((k.line, k.column), (2, 1));
        let Value::Seq(items) = &v.value else {
            panic!("seq")
        };
        let Value::Map(item) = &items[0].value else {
            panic!("map")
        };
        assert_eq!((item[0].1.line, item[0].1.column), (3, 11));
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse_yaml("items: [unclosed\n").expect_err("invalid");
        assert!(e.line >= 1 && e.column >= 1, "{e:?}");
    }

    #[test]
    fn vars() {
        let env = |n: &str| match n {
            "SET" => Some("v".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(expand_vars("a${SET}b", &env), Ok("avb".into()));
        assert_eq!(expand_vars("${NOPE:-d}", &env), Ok("d".into()));
        assert_eq!(expand_vars("${EMPTY:-d}", &env), Ok("d".into()));
        assert_eq!(expand_vars("$$HOME $5", &env), Ok("$HOME $5".into()));
        assert_eq!(
            expand_vars("${NOPE}/${ALSO}", &env),
            Err(vec!["NOPE".into(), "ALSO".into()])
        );
    }
}
