//! The pack-file model ([`PackFile`], [`ItemSpec`], [`ConfigSpec`]), what a pack is read from
//! ([`PackInput`]), and [`to_yaml`]. Reading is strict and reports every problem with its
//! position; the validated plan is internal.

use std::path::{Path, PathBuf};

use crate::error::{Error, Problem, Result};

pub(crate) mod node;
pub(crate) mod plan;
mod raw;

pub(crate) use plan::{BlobPlan, ItemPlan, Plan};
pub use raw::{ConfigSpec, ItemSpec, PackFile};

/// Where a pack comes from.
#[derive(Debug, Clone)]
pub enum PackInput {
    /// A YAML file; relative paths resolve against its directory.
    File(PathBuf),
    /// YAML text; relative paths resolve against `base_dir`.
    Yaml {
        /// The YAML.
        text: String,
        /// Directory for relative paths.
        base_dir: PathBuf,
    },
    /// JSON text (a Python dict, serialised); relative paths resolve against `base_dir`.
    Json {
        /// The JSON.
        text: String,
        /// Directory for relative paths.
        base_dir: PathBuf,
    },
}

impl From<&Path> for PackInput {
    fn from(p: &Path) -> Self {
        PackInput::File(p.to_path_buf())
    }
}

impl From<PathBuf> for PackInput {
    fn from(p: PathBuf) -> Self {
        PackInput::File(p)
    }
}

impl From<&str> for PackInput {
    fn from(p: &str) -> Self {
        PackInput::File(PathBuf::from(p))
    }
}

impl PackInput {
    /// A pack model (built in code) with `base_dir` for relative paths.
    pub fn model(pack: &PackFile, base_dir: impl Into<PathBuf>) -> Result<PackInput> {
        let text = serde_json::to_string(pack).map_err(|e| {
            Error::new(
                crate::error::ErrorKind::Internal,
                format!("cannot convert the pack: {e}"),
            )
        })?;
        Ok(PackInput::Json {
            text,
            base_dir: base_dir.into(),
        })
    }
}

/// Largest pack file read, in bytes: one whose manifest fits in 4 MiB is far smaller.
pub const MAX_PACK_FILE_BYTES: u64 = 64 << 20;

/// Reads a pack file as UTF-8 text, at most [`MAX_PACK_FILE_BYTES`]; a file that is larger
/// or not UTF-8 is a problem with the file (and, for bad UTF-8, the line and column of the
/// first bad byte), not an I/O error.
fn read_text(path: &Path) -> Result<std::result::Result<String, Problem>> {
    use std::io::Read;
    if path.is_dir() {
        return Ok(Err(problem(
            Some(path),
            0,
            0,
            "is a directory; give the pack file (-f DIR/pack.yaml)".into(),
        )));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io("reading pack file", path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_PACK_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("reading pack file", path, e))?;
    if bytes.len() as u64 > MAX_PACK_FILE_BYTES {
        return Ok(Err(problem(
            Some(path),
            0,
            0,
            format!("the pack file is larger than {MAX_PACK_FILE_BYTES} bytes (64 MiB); no pack file that fits in a manifest is"),
        )));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Ok(text)),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let good = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
            let line = good.matches('\n').count() + 1;
            let column = good.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            Ok(Err(problem(
                Some(path),
                line,
                column,
                format!(
                    "the pack file is not valid UTF-8 (byte 0x{:02x}); save it as UTF-8",
                    bytes[at]
                ),
            )))
        }
    }
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn problem(file: Option<&Path>, line: usize, column: usize, message: String) -> Problem {
    Problem {
        file: file.map(Path::to_path_buf),
        line,
        column,
        field: String::new(),
        message,
    }
}

/// The pack as YAML text (what `Pack.to_yaml()` gives in Python).
pub fn to_yaml(pack: &PackFile) -> Result<String> {
    serde_yaml_ng::to_string(pack).map_err(|e| {
        Error::new(
            crate::error::ErrorKind::Internal,
            format!("cannot write YAML: {e}"),
        )
    })
}

/// Reads and validates a pack: `Ok(Ok(plan))`, `Ok(Err(problems))` for an invalid pack, or
/// `Err` when the pack file itself cannot be read.
pub(crate) fn load(
    input: &PackInput,
) -> Result<std::result::Result<(Plan, PackFile), Vec<Problem>>> {
    let (root, file, base_dir) = match input {
        PackInput::File(path) => {
            let text = match read_text(path)? {
                Ok(text) => text,
                Err(p) => return Ok(Err(vec![p])),
            };
            // Relative sources resolve against the pack file's directory; for a pack file
            // that is no file (`-f /dev/stdin`, a pipe) against the working directory.
            let base = path
                .parent()
                .filter(|_| std::fs::metadata(path).is_ok_and(|m| m.is_file()))
                .map(crate::fsutil::absolute)
                .unwrap_or_else(|| crate::fsutil::absolute(Path::new(".")));
            match node::parse_yaml(&text) {
                Ok(root) => (root, Some(path.as_path()), base),
                Err(e) => {
                    return Ok(Err(vec![problem(
                        Some(path),
                        e.line,
                        e.column,
                        format!("YAML syntax error: {}", e.message),
                    )]))
                }
            }
        }
        PackInput::Yaml { text, base_dir } => match node::parse_yaml(text) {
            Ok(root) => (root, None, crate::fsutil::absolute(base_dir)),
            Err(e) => {
                return Ok(Err(vec![problem(
                    None,
                    e.line,
                    e.column,
                    format!("YAML syntax error: {}", e.message),
                )]))
            }
        },
        PackInput::Json { text, base_dir } => match serde_json::from_str(text) {
            Ok(value) => (
                Some(node::Node::from_json(&value)),
                None,
                crate::fsutil::absolute(base_dir),
            ),
            Err(e) => {
                return Ok(Err(vec![problem(
                    None,
                    e.line(),
                    e.column(),
                    format!("the pack is not valid JSON: {e}"),
                )]))
            }
        },
    };
    let Some(root) = root else {
        return Ok(Err(vec![problem(
            file,
            0,
            0,
            "the pack file is empty (it needs at least `items:`)".into(),
        )]));
    };
    let (pack, positions, raw) = raw::read_pack(&root, &env_lookup);
    Ok(plan::plan(&pack, &positions, raw, file, &base_dir).map(|p| (p, pack)))
}

/// Reads and validates a pack, turning problems into one [`Error`] of kind `PackFile`.
pub(crate) fn load_plan(input: &PackInput) -> Result<Plan> {
    load(input)?.map(|(p, _)| p).map_err(Error::pack_file)
}
