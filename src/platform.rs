//! Platform strings: `os[(os.version[+feature…])]/arch[/variant]`, parsed and normalised
//! exactly as containerd's `platforms.Parse` followed by `platforms.Normalize` (SPEC §2.5),
//! and converted to the OCI `platform` object.
//!
//! Two deliberate differences, both refusals of input containerd would complete from the
//! machine it runs on: a lone `linux` or `amd64` (containerd fills in the host's architecture
//! or OS, which would make a digest depend on the machine that packs).

use std::fmt;

/// Operating systems Go and containerd know (`GOOS` values); others are accepted, as
/// containerd accepts them, with a warning at validation.
pub(crate) const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
];

/// Architectures Go and containerd know (`GOARCH` values), after normalisation.
pub(crate) const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

/// A platform: as written ([`Platform::parse`]) or normalised ([`Platform::normalized`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// The parenthesised part, e.g. `10.0.17763` in `windows(10.0.17763)/amd64`.
    pub os_version: Option<String>,
    /// `os.features`: the `+feature` parts inside the parentheses (sorted, without
    /// duplicates once normalised).
    pub os_features: Vec<String>,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v7`, `v8`, … (`None` when none).
    pub variant: Option<String>,
}

/// containerd's `specifierRe`: `^[A-Za-z0-9_.-]+$`.
fn is_component(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The characters of an `os.version` or feature inside the parentheses: `[A-Za-z0-9_.%-]`.
fn is_os_option(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'%' | b'-'))
}

/// containerd's `decodeOSOption`: `%XX` escapes, decoded when there is a `%` at all.
fn decode_os_option(v: &str) -> Result<String, String> {
    if !v.contains('%') {
        return Ok(v.to_string());
    }
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    format!("invalid %-escape in \"{v}\" (write %XX with two hex digits)")
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("\"{v}\" decodes to invalid UTF-8"))
}

/// containerd's `encodeOSOption`, the inverse of [`decode_os_option`] for formatting.
fn encode_os_option(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '%' => out.push_str("%25"),
            '+' => out.push_str("%2B"),
            '(' => out.push_str("%28"),
            ')' => out.push_str("%29"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// The OS component: `name[(version[+feature…])]` (containerd's `osRe`).
fn parse_os(part: &str, text: &str) -> Result<(String, Option<String>, Vec<String>), String> {
    let invalid = || {
        format!(
            "\"{part}\" is not a valid OS in \"{text}\" (write os or os(version), with letters, \
             digits, '-', '_')"
        )
    };
    let (name, inside) = match part.split_once('(') {
        Some((name, rest)) => (name, Some(rest.strip_suffix(')').ok_or_else(invalid)?)),
        None => (part, None),
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        return Err(invalid());
    }
    let os = normalize_os(name);
    let Some(inside) = inside else {
        return Ok((os, None, Vec::new()));
    };
    let mut pieces = inside.split('+');
    let version = pieces.next().unwrap_or("");
    let features: Vec<&str> = pieces.collect();
    if !is_os_option(version) || features.iter().any(|f| f.is_empty() || !is_os_option(f)) {
        return Err(invalid());
    }
    let version = decode_os_option(version)?;
    let mut decoded = Vec::with_capacity(features.len());
    for f in features {
        let f = decode_os_option(f)?;
        if !f.is_empty() {
            decoded.push(f);
        }
    }
    Ok((os, (!version.is_empty()).then_some(version), decoded))
}

/// containerd's `normalizeOS` (the OS is never empty here).
fn normalize_os(os: &str) -> String {
    match os.to_ascii_lowercase().as_str() {
        "macos" => "darwin".to_string(),
        other => other.to_string(),
    }
}

/// containerd's `normalizeArch`: lower case, aliases, default variants.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    let (a, v) = match arch.as_str() {
        "i386" => ("386", ""),
        "x86_64" | "x86-64" | "amd64" => ("amd64", if variant == "v1" { "" } else { &variant }),
        "aarch64" | "arm64" => (
            "arm64",
            match variant.as_str() {
                "8" | "v8" | "v8.0" => "",
                "9" | "9.0" | "v9.0" => "v9",
                v => v,
            },
        ),
        "armhf" => ("arm", "v7"),
        "armel" => ("arm", "v6"),
        "arm" => (
            "arm",
            match variant.as_str() {
                "" | "7" => "v7",
                "5" => "v5",
                "6" => "v6",
                "8" => "v8",
                v => v,
            },
        ),
        other => (other, variant.as_str()),
    };
    (a.to_string(), v.to_string())
}

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl Platform {
    /// Parses a platform string as containerd's `Parse` does: the platform as written, with
    /// only the aliases and defaults `Parse` applies (`linux/arm64/v8` keeps its `v8`,
    /// `linux/arm` has no variant). Selection uses it so that an exact variant wins;
    /// [`Platform::normalized`] gives the form that groups and is written.
    ///
    /// Errors (a message saying what is wrong and what to write): wildcards, more than three
    /// components, characters outside `[A-Za-z0-9_.-]`, a bad `os(…)` part or `%` escape, and
    /// a lone OS or architecture.
    pub fn parse(text: &str) -> Result<Platform, String> {
        if text.contains('*') {
            return Err(format!("\"{text}\": wildcards are not supported"));
        }
        let parts: Vec<&str> = text.splitn(4, '/').collect();
        let (os, os_version, os_features) = parse_os(parts[0], text)?;
        if let Some(bad) = parts[1..].iter().find(|p| !is_component(p)) {
            return Err(format!(
                "\"{bad}\" is not a valid component of \"{text}\" (use letters, digits, '.', '-', '_')"
            ));
        }
        let (architecture, variant) = match parts.len() {
            1 => {
                return Err(format!(
                    "\"{text}\": expected os/arch[/variant], e.g. linux/amd64 (a lone os or arch \
                     would depend on the host)"
                ))
            }
            2 => {
                let (a, mut v) = normalize_arch(parts[1], "");
                if a == "arm" && v == "v7" {
                    v.clear();
                }
                (a, v)
            }
            3 => {
                let (a, mut v) = normalize_arch(parts[1], parts[2]);
                if a == "arm64" && v.is_empty() {
                    v = "v8".into();
                }
                (a, v)
            }
            _ => {
                return Err(format!(
                    "\"{text}\": expected os/arch[/variant], e.g. linux/arm64/v8"
                ))
            }
        };
        Ok(Platform {
            os,
            os_version,
            os_features,
            architecture,
            variant: some(variant),
        })
    }

    /// containerd's `Normalize`: OS and architecture aliases, default variants dropped or
    /// added, features sorted without duplicates. `linux/arm64/v8` and `linux/aarch64` are
    /// `linux/arm64`; `linux/arm` and `linux/armhf` are `linux/arm/v7`; `linux/x86_64/v1` is
    /// `linux/amd64`; `macos` is `darwin`.
    pub fn normalized(&self) -> Platform {
        let (architecture, variant) =
            normalize_arch(&self.architecture, self.variant.as_deref().unwrap_or(""));
        let mut os_features = self.os_features.clone();
        os_features.sort();
        os_features.dedup();
        Platform {
            os: normalize_os(&self.os),
            os_version: self.os_version.clone(),
            os_features,
            architecture,
            variant: some(variant),
        }
    }

    /// Names an OS or architecture Go does not know, for a warning (containerd accepts them).
    pub fn unknown_part(&self) -> Option<String> {
        if !KNOWN_OS.contains(&self.os.as_str()) {
            return Some(format!(
                "unknown operating system \"{}\" (known: {})",
                self.os,
                KNOWN_OS.join(", ")
            ));
        }
        if !KNOWN_ARCH.contains(&self.architecture.as_str()) {
            return Some(format!(
                "unknown architecture \"{}\" (known: {})",
                self.architecture,
                KNOWN_ARCH.join(", ")
            ));
        }
        None
    }

    /// The OCI `platform` object.
    pub fn to_oci(&self) -> oci_spec::image::Platform {
        let mut p = oci_spec::image::Platform::default();
        p.set_os(self.os.as_str().into());
        p.set_architecture(self.architecture.as_str().into());
        p.set_os_version(self.os_version.clone());
        p.set_os_features((!self.os_features.is_empty()).then(|| self.os_features.clone()));
        p.set_variant(self.variant.clone());
        p
    }

    /// Reads an OCI `platform` object (no normalisation: it is what a manifest says).
    pub fn from_oci(p: &oci_spec::image::Platform) -> Platform {
        Platform {
            os: p.os().to_string(),
            os_version: p.os_version().clone().filter(|v| !v.is_empty()),
            os_features: p.os_features().clone().unwrap_or_default(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone().filter(|v| !v.is_empty()),
        }
    }
}

impl Platform {
    /// The variant with the architecture's default filled in, for ordering compatible
    /// variants: a normalised `arm64` is `v8`, `amd64` is `v1`.
    fn effective_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            (_, Some(v)) => Some(v),
            ("arm64", None) => Some("v8"),
            ("amd64", None) => Some("v1"),
            _ => None,
        }
    }

    /// Whether `self` (a request) accepts a candidate's `os.version`: any when none is asked
    /// for; on Windows the same build (`major.minor.build`), elsewhere the same string.
    fn accepts_os_version(&self, candidate: Option<&str>) -> bool {
        let Some(want) = self.os_version.as_deref() else {
            return true;
        };
        let Some(have) = candidate else { return false };
        if self.os == "windows" {
            let build = |v: &str| v.split('.').take(3).collect::<Vec<_>>().join(".");
            build(want) == build(have)
        } else {
            want == have
        }
    }

    /// The index of the best of `candidates` (platforms as manifests give them) for this
    /// request, parsed with [`Platform::parse`]: same OS and architecture once
    /// both are normalised, the candidate's `os.features` among the requested ones, and the
    /// requested `os.version` (when asked for). Then an exact variant as written wins (so
    /// `linux/arm64/v8` picks an `arm64/v8` member over a plain `arm64` one), then an equal
    /// variant once normalised, then the highest lower variant that still runs here (`arm/v7`
    /// runs `arm/v6`, `amd64/v3` runs `amd64/v2`).
    pub fn best_match(&self, candidates: &[Platform]) -> Option<usize> {
        let want = self.normalized();
        let level = |v: Option<&str>| {
            v.and_then(|v| {
                v.trim_start_matches('v')
                    .split('.')
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
        };
        let want_level = level(want.effective_variant());
        let mut best: Option<(u32, usize)> = None;
        for (i, raw) in candidates.iter().enumerate() {
            let c = raw.normalized();
            if c.os != want.os
                || c.architecture != want.architecture
                || !want.accepts_os_version(c.os_version.as_deref())
                || !c.os_features.iter().all(|f| want.os_features.contains(f))
            {
                continue;
            }
            let exact = raw.architecture.eq_ignore_ascii_case(&self.architecture)
                && raw.variant.as_deref().map(str::to_ascii_lowercase) == self.variant;
            let score = if exact {
                2000
            } else if c.effective_variant() == want.effective_variant() {
                1000
            } else {
                match (level(c.effective_variant()), want_level) {
                    (Some(have), Some(w)) if have < w && want.architecture != "arm64" => have,
                    _ => continue,
                }
            };
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_platform(
            f,
            &self.os,
            self.os_version.as_deref(),
            &self.os_features,
            &self.architecture,
            self.variant.as_deref(),
        )
    }
}

/// Writes `os[(os.version[+feature…])]/architecture[/variant]`, the form pack files use
/// (containerd's `FormatAll`, with its `%` escapes inside the parentheses).
pub(crate) fn write_platform(
    f: &mut fmt::Formatter<'_>,
    os: &str,
    os_version: Option<&str>,
    os_features: &[String],
    architecture: &str,
    variant: Option<&str>,
) -> fmt::Result {
    f.write_str(os)?;
    if os_version.is_some() || !os_features.is_empty() {
        f.write_str("(")?;
        f.write_str(&encode_os_option(os_version.unwrap_or("")))?;
        for feature in os_features {
            write!(f, "+{}", encode_os_option(feature))?;
        }
        f.write_str(")")?;
    }
    write!(f, "/{architecture}")?;
    if let Some(v) = variant {
        write!(f, "/{v}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Platform;

    fn norm(s: &str) -> String {
        Platform::parse(s)
            .map(|p| p.normalized().to_string())
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn containerd_normalisation() {
        assert_eq!(norm("linux/amd64"), "linux/amd64");
        assert_eq!(norm("linux/amd64/v1"), "linux/amd64");
        assert_eq!(norm("Linux/x86_64"), "linux/amd64");
        assert_eq!(norm("linux/aarch64"), "linux/arm64");
        assert_eq!(norm("linux/arm64/v8"), "linux/arm64");
        assert_eq!(norm("linux/arm64/9"), "linux/arm64/v9");
        assert_eq!(norm("linux/arm"), "linux/arm/v7");
        assert_eq!(norm("linux/armhf"), "linux/arm/v7");
        assert_eq!(norm("linux/armel"), "linux/arm/v6");
        assert_eq!(norm("linux/i386"), "linux/386");
        assert_eq!(norm("macos/arm64"), "darwin/arm64");
        assert_eq!(norm("wasi/wasm"), "wasi/wasm");
        assert_eq!(
            norm("windows(10.0.17763)/amd64"),
            "windows(10.0.17763)/amd64"
        );
        assert_eq!(norm("linux(1.0+b+a+a)/amd64"), "linux(1.0+a+b)/amd64");
        assert_eq!(norm("linux(1.0%2B2)/amd64"), "linux(1.0%2B2)/amd64");
    }

    #[test]
    fn as_written_keeps_what_parse_keeps() {
        let p = Platform::parse("linux/arm64/v8").expect("valid");
        assert_eq!(p.variant.as_deref(), Some("v8"));
        let p = Platform::parse("linux/arm").expect("valid");
        assert_eq!(p.variant, None);
        assert_eq!(p.normalized().variant.as_deref(), Some("v7"));
    }

    #[test]
    fn best_match_with_variants() {
        let list: Vec<Platform> = [
            "linux/amd64",
            "linux/arm64/v8",
            "linux/arm/v7",
            "linux/arm/v6",
            "windows(10.0.17763)/amd64",
        ]
        .iter()
        .map(|s| Platform::parse(s).expect("valid"))
        .collect();
        let pick = |s: &str| Platform::parse(s).expect("valid").best_match(&list);
        assert_eq!(pick("linux/amd64"), Some(0));
        assert_eq!(pick("linux/amd64/v1"), Some(0));
        assert_eq!(pick("linux/x86_64/v3"), Some(0), "v3 runs v1");
        assert_eq!(pick("linux/arm64"), Some(1), "arm64 means arm64/v8");
        assert_eq!(pick("linux/arm64/v8"), Some(1));
        assert_eq!(pick("linux/arm/v7"), Some(2));
        assert_eq!(pick("linux/arm"), Some(2), "arm means arm/v7");
        assert_eq!(pick("linux/armhf"), Some(2));
        assert_eq!(pick("linux/arm/v6"), Some(3));
        assert_eq!(pick("linux/arm/v8"), Some(2), "v8 runs v7, the best lower");
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(pick("windows(10.0.17763)/amd64"), Some(4));
        assert_eq!(
            pick("windows(10.0.17763.2114)/amd64"),
            Some(4),
            "same build"
        );
        assert_eq!(pick("windows(10.0.20348)/amd64"), None);
    }

    #[test]
    fn an_exact_variant_wins_over_an_equivalent_one() {
        let list: Vec<Platform> = ["linux/arm64", "linux/arm64/v8", "linux/arm", "linux/arm/v7"]
            .iter()
            .map(|s| Platform::parse(s).expect("valid"))
            .collect();
        let pick = |s: &str| Platform::parse(s).expect("valid").best_match(&list);
        assert_eq!(pick("linux/arm64/v8"), Some(1));
        assert_eq!(pick("linux/arm64"), Some(0));
        assert_eq!(pick("linux/aarch64/v8"), Some(1));
        assert_eq!(pick("linux/arm/v7"), Some(3));
        assert_eq!(pick("linux/arm"), Some(2));
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(norm("linux").contains("expected os/arch"));
        assert!(norm("amd64").contains("lone os or arch"));
        assert!(norm("linux/amd64/v2/x").contains("expected os/arch"));
        assert!(norm("linux(v8/amd64").contains("not a valid OS"));
        assert!(norm("linux/*").contains("wildcards"));
        assert!(norm("linux/am d64").contains("\"am d64\" is not a valid component"));
        assert!(norm("linux(%zz)/amd64").contains("%-escape"));
        assert!(Platform::parse("lnux/amd64")
            .expect("accepted, as containerd does")
            .normalized()
            .unknown_part()
            .is_some_and(|m| m.contains("unknown operating system \"lnux\"")));
    }

    /// Differential test: containerd's own `Parse` + `Normalize` (a small Go program built
    /// against github.com/containerd/platforms) and ours agree on every spelling of the
    /// table, including which are refused.
    #[test]
    fn agrees_with_containerd() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/platforms");
        let table = std::fs::read_to_string(dir.join("spellings.txt")).expect("table");
        let spellings: Vec<&str> = table
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert!(spellings.len() >= 60, "{} spellings", spellings.len());
        let mut child = Command::new("go")
            .args(["run", "."])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the go command (install Go to run this test)");
        {
            let mut stdin = child.stdin.take().expect("stdin");
            for s in &spellings {
                writeln!(stdin, "{s}").expect("write");
            }
        }
        let out = child.wait_with_output().expect("go run");
        assert!(out.status.success(), "go run failed: {:?}", out.status);
        let theirs: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(theirs.len(), spellings.len());
        let mut disagreements = Vec::new();
        for (s, t) in spellings.iter().zip(&theirs) {
            let ours = match Platform::parse(s).map(|p| p.normalized()) {
                Ok(p) => serde_json::json!({
                    "in": s, "ok": true, "os": p.os,
                    "osVersion": p.os_version.unwrap_or_default(),
                    "osFeatures": p.os_features,
                    "architecture": p.architecture,
                    "variant": p.variant.unwrap_or_default(),
                }),
                Err(_) => serde_json::json!({"in": s, "ok": false}),
            };
            let field = |v: &serde_json::Value, k: &str| match &v[k] {
                serde_json::Value::Null => serde_json::json!(""),
                serde_json::Value::Array(a) if a.is_empty() => serde_json::json!(""),
                other => other.clone(),
            };
            let keys = [
                "ok",
                "os",
                "osVersion",
                "osFeatures",
                "architecture",
                "variant",
            ];
            if keys.iter().any(|k| field(&ours, k) != field(t, k)) {
                disagreements.push(format!("{s}: containerd {t}, ours {ours}"));
            }
        }
        assert!(
            disagreements.is_empty(),
            "{} disagreements:\n{}",
            disagreements.len(),
            disagreements.join("\n")
        );
    }
}
