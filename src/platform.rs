//! Platform strings: `os[(os.version)]/arch[/variant]`, parsed and normalised with containerd's
//! rules (SPEC §2.1), and converted to the OCI `platform` object.

use std::fmt;

/// Operating systems Go and containerd know (`GOOS` values).
const KNOWN_OS: &[&str] = &[
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
const KNOWN_ARCH: &[&str] = &[
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

/// A normalised platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// The parenthesised part, e.g. `10.0.17763` in `windows(10.0.17763)/amd64`.
    pub os_version: Option<String>,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v7`, `v8`, … (empty when none).
    pub variant: Option<String>,
}

fn is_word(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || extra.contains(&b))
}

impl Platform {
    /// Parses and normalises a platform string; the error says what is wrong and what to write.
    ///
    /// Unlike containerd, a lone `linux` or `amd64` is refused: filling in the host's
    /// architecture or OS would make the digest depend on the machine that packs.
    pub fn parse(text: &str) -> Result<Platform, String> {
        let (os_part, rest) = match text.split_once('/') {
            Some((os, rest)) => (os, Some(rest)),
            None => (text, None),
        };
        let (os_raw, os_version) = match os_part.split_once('(') {
            Some((os, v)) => {
                let v = v.strip_suffix(')').ok_or_else(|| {
                    format!("\"{text}\": missing ')' after the os.version (write os(version)/arch)")
                })?;
                if !is_word(v, b".") {
                    return Err(format!("\"{text}\": invalid os.version \"{v}\""));
                }
                (os, Some(v.to_string()))
            }
            None => (os_part, None),
        };
        let Some(rest) = rest else {
            return Err(format!(
                "\"{text}\": expected os/arch[/variant], e.g. linux/amd64 (a lone os or arch \
                 would depend on the host)"
            ));
        };
        let os = match os_raw.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_string(),
            other => other.to_string(),
        };
        if !KNOWN_OS.contains(&os.as_str()) {
            return Err(format!(
                "unknown operating system \"{os_raw}\" (known: {})",
                KNOWN_OS.join(", ")
            ));
        }
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "\"{text}\": expected os/arch[/variant], e.g. linux/arm64/v8"
            ));
        }
        let arch_raw = parts[0];
        let variant_given = parts.get(1).copied();
        if !is_word(arch_raw, b"") || variant_given.is_some_and(|v| !is_word(v, b".")) {
            return Err(format!(
                "\"{text}\": invalid characters (use letters, digits, '-', '_')"
            ));
        }
        let (architecture, mut variant) = normalize_arch(
            &arch_raw.to_ascii_lowercase(),
            &variant_given.unwrap_or("").to_ascii_lowercase(),
        );
        if !KNOWN_ARCH.contains(&architecture.as_str()) {
            return Err(format!(
                "unknown architecture \"{arch_raw}\" (known: {})",
                KNOWN_ARCH.join(", ")
            ));
        }
        // containerd: with two components the default variant is dropped (`linux/arm` is
        // arm/v7 implicitly); an explicit `linux/arm64/v8` keeps its variant.
        match (
            variant_given.is_some(),
            architecture.as_str(),
            variant.as_str(),
        ) {
            (false, "arm", "v7") => variant.clear(),
            (true, "arm64", "") => variant = "v8".into(),
            _ => {}
        }
        Ok(Platform {
            os,
            os_version,
            architecture,
            variant: (!variant.is_empty()).then_some(variant),
        })
    }

    /// The OCI `platform` object.
    pub fn to_oci(&self) -> oci_spec::image::Platform {
        let mut p = oci_spec::image::Platform::default();
        p.set_os(self.os.as_str().into());
        p.set_architecture(self.architecture.as_str().into());
        p.set_os_version(self.os_version.clone());
        p.set_variant(self.variant.clone());
        p
    }

    /// Reads an OCI `platform` object (no normalisation: it is what a manifest says).
    pub fn from_oci(p: &oci_spec::image::Platform) -> Platform {
        Platform {
            os: p.os().to_string(),
            os_version: p.os_version().clone(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone(),
        }
    }
}

impl Platform {
    /// The variant with the architecture's default filled in (`arm64` → `v8`, `arm` → `v7`,
    /// `amd64` → `v1`), so `linux/arm64` and `linux/arm64/v8` compare equal.
    fn effective_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            (_, Some(v)) => Some(v),
            ("arm64", None) => Some("v8"),
            ("arm", None) => Some("v7"),
            ("amd64", None) => Some("v1"),
            _ => None,
        }
    }

    /// The index of the best of `candidates` for this platform, containerd-style: same OS
    /// and architecture (and `os.version` when asked for); the exact variant wins, else the
    /// highest lower variant that still runs here (`arm/v7` runs `arm/v6`, `amd64/v3` runs
    /// `amd64/v2`).
    pub fn best_match(&self, candidates: &[Platform]) -> Option<usize> {
        let level = |v: Option<&str>| {
            v.and_then(|v| {
                v.trim_start_matches('v')
                    .split('.')
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
        };
        let want = level(self.effective_variant());
        let mut best: Option<(u32, usize)> = None;
        for (i, c) in candidates.iter().enumerate() {
            if c.os != self.os || c.architecture != self.architecture {
                continue;
            }
            if self.os_version.is_some() && c.os_version != self.os_version {
                continue;
            }
            let score = if c.effective_variant() == self.effective_variant() {
                1000
            } else {
                match (level(c.effective_variant()), want) {
                    (Some(have), Some(want)) if have < want && self.architecture != "arm64" => have,
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

/// containerd's `normalizeArch`.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (a, v) = match arch {
        "i386" => ("386", ""),
        "x86_64" | "x86-64" | "amd64" => ("amd64", if variant == "v1" { "" } else { variant }),
        "aarch64" | "arm64" => (
            "arm64",
            if matches!(variant, "8" | "v8" | "v8.0") {
                ""
            } else {
                variant
            },
        ),
        "armhf" => ("arm", "v7"),
        "armel" => ("arm", "v6"),
        "arm" => match variant {
            "" | "7" => ("arm", "v7"),
            "5" => ("arm", "v5"),
            "6" => ("arm", "v6"),
            "8" => ("arm", "v8"),
            v => ("arm", v),
        },
        other => (other, variant),
    };
    (a.to_string(), v.to_string())
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_platform(
            f,
            &self.os,
            self.os_version.as_deref(),
            &self.architecture,
            self.variant.as_deref(),
        )
    }
}

/// Writes `os[(os.version)]/architecture[/variant]`, the form pack files use.
pub(crate) fn write_platform(
    f: &mut fmt::Formatter<'_>,
    os: &str,
    os_version: Option<&str>,
    architecture: &str,
    variant: Option<&str>,
) -> fmt::Result {
    f.write_str(os)?;
    if let Some(v) = os_version {
        write!(f, "({v})")?;
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
            .map(|p| p.to_string())
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn containerd_normalisation() {
        assert_eq!(norm("linux/amd64"), "linux/amd64");
        assert_eq!(norm("Linux/x86_64"), "linux/amd64");
        assert_eq!(norm("linux/x86-64"), "linux/amd64");
        assert_eq!(norm("linux/aarch64"), "linux/arm64");
        assert_eq!(norm("linux/arm64/v8"), "linux/arm64/v8");
        assert_eq!(norm("linux/arm64/8"), "linux/arm64/v8");
        assert_eq!(norm("linux/arm"), "linux/arm");
        assert_eq!(norm("linux/arm/7"), "linux/arm/v7");
        assert_eq!(norm("linux/armhf"), "linux/arm");
        assert_eq!(norm("linux/armel"), "linux/arm/v6");
        assert_eq!(norm("linux/i386"), "linux/386");
        assert_eq!(norm("macos/arm64"), "darwin/arm64");
        assert_eq!(
            norm("windows(10.0.17763)/amd64"),
            "windows(10.0.17763)/amd64"
        );
    }

    #[test]
    fn best_match_with_variants() {
        let list: Vec<Platform> = [
            "linux/amd64",
            "linux/arm64/v8",
            "linux/arm/v7",
            "linux/arm/v6",
            "windows(10.0)/amd64",
        ]
        .iter()
        .map(|s| Platform::parse(s).expect("valid"))
        .collect();
        let pick = |s: &str| Platform::parse(s).expect("valid").best_match(&list);
        assert_eq!(pick("linux/amd64"), Some(0));
        assert_eq!(pick("linux/arm64"), Some(1), "arm64 means arm64/v8");
        assert_eq!(pick("linux/arm64/v8"), Some(1));
        assert_eq!(pick("linux/arm/v7"), Some(2));
        assert_eq!(pick("linux/arm"), Some(2), "arm means arm/v7");
        assert_eq!(pick("linux/arm/v6"), Some(3));
        assert_eq!(
            pick("linux/arm/v8"),
            Some(2),
            "v8 runs v7, the best lower variant"
        );
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(pick("windows(10.0)/amd64"), Some(4));
        assert_eq!(pick("windows(11.0)/amd64"), None);
    }

    #[test]
    fn os_version_in_parentheses() {
        let p = Platform::parse("linux(v8)/amd64").expect("valid");
        assert_eq!(p.os, "linux");
        assert_eq!(p.os_version.as_deref(), Some("v8"));
        assert_eq!(p.architecture, "amd64");
        assert_eq!(p.variant, None);
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(norm("linux/amd46").contains("unknown architecture \"amd46\""));
        assert!(norm("lnux/amd64").contains("unknown operating system \"lnux\""));
        assert!(norm("linux").contains("expected os/arch"));
        assert!(norm("linux/amd64/v2/x").contains("expected os/arch"));
        assert!(norm("linux(v8/amd64").contains("missing ')'"));
        assert!(norm("linux/*").contains("invalid characters"));
    }
}
