//! References to targets and image sources: registries and OCI image layouts (SPEC §3).

use std::fmt;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};

/// Where an artifact lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A repository in a registry.
    Registry(RegistryRef),
    /// An entry of a local OCI image layout.
    Layout(LayoutRef),
}

/// `host[:port]/repo[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// Registry host with optional port, normalised (`docker.io` → `index.docker.io`).
    pub host: String,
    /// Repository path (`library/alpine`).
    pub repository: String,
    /// Tag, when given.
    pub tag: Option<String>,
    /// Digest, when given; it wins over the tag for fetching.
    pub digest: Option<Digest>,
}

/// `oci://DIR[:REF]` or `oci://DIR@sha256:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRef {
    /// The layout directory as written (relative paths are relative to the working directory).
    pub dir: PathBuf,
    /// Which entry.
    pub selector: LayoutSelector,
}

/// How an entry of a layout is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutSelector {
    /// Matched against `org.opencontainers.image.ref.name`.
    Name(String),
    /// Matched against the entry's digest.
    Digest(Digest),
    /// `NAME@DIGEST`: the digest is what is read; written, the content must have that
    /// digest, and is then named NAME.
    NameAndDigest(String, Digest),
}

impl Reference {
    /// Parses a target or image reference.
    ///
    /// Without a scheme the text is a registry reference (CLI and API targets); `docker://`
    /// and `cr://` are registries; `oci://` is a registry when its first segment looks like
    /// a host, else a layout.
    pub fn parse(text: &str) -> Result<Reference> {
        let invalid = |why: String| {
            Error::new(
                ErrorKind::InvalidReference,
                format!("invalid reference \"{text}\": {why}"),
            )
            .with_reference(text)
        };
        if text.is_empty() {
            return Err(invalid("empty".into()));
        }
        // skopeo's spellings (`oci:DIR:TAG`, `docker://` with one slash missing) would be
        // read as a Docker Hub repository named `oci`.
        for scheme in ["oci", "docker", "cr"] {
            if let Some(rest) = text.strip_prefix(scheme).and_then(|r| r.strip_prefix(':')) {
                let port = rest
                    .split_once('/')
                    .is_some_and(|(p, _)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
                if !rest.starts_with("//") && !port {
                    return Err(invalid(format!(
                        "write {scheme}://{}",
                        rest.trim_start_matches('/')
                    )));
                }
            }
        }
        match text.split_once("://") {
            Some(("oci", rest)) if looks_like_registry(rest) => RegistryRef::parse(rest)
                .map(Reference::Registry)
                .map_err(invalid),
            Some(("oci", rest)) => LayoutRef::parse(rest)
                .map(Reference::Layout)
                .map_err(invalid),
            Some(("docker" | "cr", rest)) => RegistryRef::parse(rest)
                .map(Reference::Registry)
                .map_err(invalid),
            Some((scheme, _)) => Err(invalid(format!(
                "unknown scheme \"{scheme}://\" (use oci://DIR[:REF] for a layout, or \
                 host/repo[:tag], docker:// or cr:// for a registry)"
            ))),
            None => RegistryRef::parse(text)
                .map(Reference::Registry)
                .map_err(invalid),
        }
    }
}

/// SPEC §3: a `/`, and before it a `.` or `:` or `localhost`; never a path-looking start.
fn looks_like_registry(rest: &str) -> bool {
    if ["./", "../", "/", "~"].iter().any(|p| rest.starts_with(p)) {
        return false;
    }
    match rest.split_once('/') {
        Some((host, _)) => host.contains('.') || host.contains(':') || host == "localhost",
        None => false,
    }
}

/// Why `host` (`NAME[:PORT]`) is not a registry host, if it is not: the name is DNS labels
/// of ASCII letters, digits and inner '-' joined by '.', or an IPv6 address in brackets (the
/// Distribution grammar; a name in another script is written in its `xn--` form, and
/// invisible or look-alike characters are refused rather than sent to a resolver); the
/// port is 1 to 65535.
fn bad_host(host: &str) -> Option<String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.starts_with('[') || n.ends_with(']') => (n, Some(p)),
        _ => (host, None),
    };
    if let Some(p) = port {
        if !p.bytes().all(|b| b.is_ascii_digit()) || !p.parse::<u16>().is_ok_and(|p| p > 0) {
            return Some(format!(
                "the port \"{p}\" is not a number from 1 to 65535 (write HOST or HOST:PORT)"
            ));
        }
    }
    if let Some(ip) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return match ip.parse::<std::net::Ipv6Addr>() {
            Ok(_) => None,
            Err(_) => Some(format!("\"{ip}\" is not an IPv6 address")),
        };
    }
    // A name whose last label is a number is an IPv4 address, written in the four decimal
    // parts everyone reads the same way (`127.1`, `0x7f000001` and `2130706433` all reach
    // 127.0.0.1, which is not what they show).
    let last = name.rsplit('.').next().unwrap_or(name);
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .or(last.strip_prefix("0X"))
                .is_some());
    if numeric && name.parse::<std::net::Ipv4Addr>().is_err() {
        return Some(format!(
            "\"{name}\" is neither a host name nor an IPv4 address in four decimal parts \
             (such as 127.0.0.1)"
        ));
    }
    if !name.is_ascii() {
        return Some(
            "host names are ASCII: write a name in another script in its xn-- form, and \
             check for invisible or look-alike characters"
                .into(),
        );
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Some("a host name is labels of letters, digits and inner '-' joined by '.'".into());
    }
    None
}

/// The name `text` gives (a registry reference, perhaps with `docker://` or `cr://`) when it
/// names no registry host and no namespace — Docker Hub's `library/NAME`, where only
/// Docker's official images are published: as a place to write, always a slip (a file name,
/// a layout directory, a host without a repository).
pub fn docker_hub_short_name(text: &str) -> Option<&str> {
    let rest = ["docker://", "cr://"]
        .iter()
        .find_map(|s| text.strip_prefix(s))
        .unwrap_or(text);
    let name = rest.split(['@', ':']).next().unwrap_or(rest);
    (!rest.split('@').next().unwrap_or(rest).contains('/')).then_some(name)
}

fn valid_path_component(c: &str) -> bool {
    // distribution's path-component grammar: [a-z0-9]+ joined by ".", "_", "__" or "-"+.
    !c.is_empty()
        && c.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
}

/// A tag by the Distribution grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(crate) fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl RegistryRef {
    fn parse(text: &str) -> std::result::Result<RegistryRef, String> {
        let (name, digest) = match text.split_once('@') {
            // `user@host/repo`: '@' starts a digest; credentials never go in a reference.
            Some((user, rest)) if !user.contains('/') && rest.contains('/') => {
                return Err(format!(
                    "'@' starts a digest (repo@sha256:…), and \"{user}@\" is not one: user \
                     names do not go in references; use -u/-p or `oci-packer login {}`",
                    rest.split('/').next().unwrap_or(rest)
                ))
            }
            Some((n, d)) => (
                n,
                Some(Digest::parse(d).map_err(|e| e.message().to_string())?),
            ),
            None => (text, None),
        };
        let (name, tag) = match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => (&name[..i], Some(name[i + 1..].to_string())),
            _ => (name, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(format!(
                    "invalid tag \"{t}\" (letters, digits, '_', '.', '-'; at most 128)"
                ));
            }
        }
        let (host, repo) = match name.split_once('/') {
            Some((h, r)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_string(), r.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        if host.is_empty() {
            return Err("missing registry host".into());
        }
        if host.starts_with('.') {
            return Err(format!(
                "\"{host}\" is a path, not a registry host: a layout is written oci://{name}:TAG"
            ));
        }
        if let Some(why) = bad_host(&host) {
            return Err(format!("invalid registry host \"{host}\": {why}"));
        }
        let host = match host.as_str() {
            "docker.io" | "registry-1.docker.io" => "index.docker.io".to_string(),
            _ => host,
        };
        if repo.is_empty() || !repo.split('/').all(valid_path_component) {
            return Err(format!(
                "invalid repository \"{repo}\" (lower-case letters, digits and separators, \
                 components joined by '/')"
            ));
        }
        let repository = if host == "index.docker.io" && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".into())
        } else {
            tag
        };
        Ok(RegistryRef {
            host,
            repository,
            tag,
            digest,
        })
    }
}

impl RegistryRef {
    /// A reference to the registry `host` itself (for `login`), normalised like any other.
    pub fn for_host(host: &str) -> Result<RegistryRef> {
        let host = host
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let invalid = |why: &str| {
            Error::new(
                ErrorKind::InvalidReference,
                format!("invalid registry host \"{host}\": {why}"),
            )
        };
        if host.is_empty() || host.contains('/') {
            return Err(invalid(
                "give a host name, e.g. registry.example.com or localhost:5000",
            ));
        }
        let parsed =
            RegistryRef::parse(&format!("{host}/oci-packer-login")).map_err(|w| invalid(&w))?;
        if parsed.host == "index.docker.io" && !host.contains("docker.io") && !host.contains('.') {
            return Err(invalid(
                "not a host name (it needs a '.', a ':port' or to be localhost)",
            ));
        }
        Ok(parsed)
    }
}

impl LayoutRef {
    fn parse(text: &str) -> std::result::Result<LayoutRef, String> {
        let cut = text.find([':', '@']);
        let (dir, selector) = match cut {
            Some(i) if text.as_bytes()[i] == b'@' => {
                let d = Digest::parse(&text[i + 1..]).map_err(|e| e.message().to_string())?;
                (&text[..i], LayoutSelector::Digest(d))
            }
            Some(i) => {
                let r = &text[i + 1..];
                if r.is_empty() {
                    return Err("empty reference after ':'".into());
                }
                // `NAME@ALGO:HEX` carries a digest (a ref name may hold '@', but not that).
                let digest = r.rsplit_once('@').filter(|(_, d)| {
                    d.split_once(':').is_some_and(|(algo, hex)| {
                        !algo.is_empty()
                            && algo.bytes().all(|b| b.is_ascii_alphanumeric())
                            && !hex.is_empty()
                            && hex.bytes().all(|b| b.is_ascii_hexdigit())
                    })
                });
                let selector = match digest {
                    Some(("", d)) => LayoutSelector::Digest(
                        Digest::parse(d).map_err(|e| e.message().to_string())?,
                    ),
                    Some((name, d)) => LayoutSelector::NameAndDigest(
                        name.to_string(),
                        Digest::parse(d).map_err(|e| e.message().to_string())?,
                    ),
                    None => LayoutSelector::Name(r.to_string()),
                };
                if let LayoutSelector::Name(n) | LayoutSelector::NameAndDigest(n, _) = &selector {
                    if n.chars()
                        .any(|c| c.is_whitespace() || crate::text::is_unsafe(c))
                    {
                        return Err(format!(
                            "the name {:?} holds spaces or control characters; a layout entry \
                             name is letters, digits and . _ - : / + @",
                            crate::text::printable(n)
                        ));
                    }
                }
                (&text[..i], selector)
            }
            None => (text, LayoutSelector::Name("latest".into())),
        };
        if dir.is_empty() {
            return Err("missing layout directory (write oci://DIR[:REF])".into());
        }
        let dir = match dir.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(rest))
                .unwrap_or_else(|| PathBuf::from(dir)),
            None => PathBuf::from(dir),
        };
        Ok(LayoutRef { dir, selector })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Registry(r) => write!(f, "{r}"),
            Reference::Layout(l) => write!(f, "{l}"),
        }
    }
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Display for LayoutRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            LayoutSelector::Name(n) => write!(f, "oci://{}:{n}", self.dir.display()),
            LayoutSelector::Digest(d) => write!(f, "oci://{}@{d}", self.dir.display()),
            LayoutSelector::NameAndDigest(n, d) => {
                write!(f, "oci://{}:{n}@{d}", self.dir.display())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(text: &str) -> (String, String) {
        match Reference::parse(text).expect(text) {
            Reference::Layout(l) => (
                l.dir.display().to_string(),
                match l.selector {
                    LayoutSelector::Name(n) => n,
                    LayoutSelector::Digest(d) => format!("@{d}"),
                    LayoutSelector::NameAndDigest(n, d) => format!("{n}@{d}"),
                },
            ),
            other => panic!("{text} parsed as {other:?}"),
        }
    }

    fn registry(text: &str) -> RegistryRef {
        match Reference::parse(text).expect(text) {
            Reference::Registry(r) => r,
            other => panic!("{text} parsed as {other:?}"),
        }
    }

    #[test]
    fn spec_examples() {
        assert_eq!(
            layout("oci://target/directory:image:tag"),
            ("target/directory".into(), "image:tag".into())
        );
        assert_eq!(layout("oci://out:v1"), ("out".into(), "v1".into()));
        assert_eq!(layout("oci://out"), ("out".into(), "latest".into()));
        assert_eq!(
            layout("oci://./build.d/x:v1"),
            ("./build.d/x".into(), "v1".into())
        );
        assert_eq!(
            layout("oci:///srv/images:team/app:2.3"),
            ("/srv/images".into(), "team/app:2.3".into())
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            layout(&format!("oci://out@{d}")),
            ("out".into(), format!("@{d}"))
        );

        let r = registry("oci://build.d/x:v1");
        assert_eq!(
            (r.host.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("build.d", "x", Some("v1"))
        );
        let r = registry("oci://registry.example.com/app:v1");
        assert_eq!(
            (r.host.as_str(), r.repository.as_str()),
            ("registry.example.com", "app")
        );
        let r = registry("oci://localhost:5000/app");
        assert_eq!(
            (r.host.as_str(), r.tag.as_deref()),
            ("localhost:5000", Some("latest"))
        );
        let r = registry("oci://localhost/app");
        assert_eq!(r.host, "localhost");
    }

    #[test]
    fn docker_hub_and_plain_targets() {
        let r = registry("docker://alpine");
        assert_eq!(
            (r.host.as_str(), r.repository.as_str()),
            ("index.docker.io", "library/alpine")
        );
        let r = registry("docker.io/myrepo/nginx:1");
        assert_eq!(
            (r.host.as_str(), r.repository.as_str()),
            ("index.docker.io", "myrepo/nginx")
        );
        let r = registry("registry-1.docker.io/nginx");
        assert_eq!(r.repository, "library/nginx");
        let d = format!("sha256:{}", "b".repeat(64));
        let r = registry(&format!("cr://127.0.0.1:5000/a/b:v1@{d}"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_ref().map(|d| d.as_str().to_string()), Some(d));
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "ftp://x/y",
            "localhost:5000/UPPER",
            "host.io/a//b",
            "host.io/a:bad tag",
            "oci://:v1",
            "localhost:99999/a",
            "localhost:0/a",
            "localhost:65536/a",
            "b\u{fc}cher.example/a",
            "re\u{200b}gistry.io/a",
            "registry.io\u{202e}/a",
            "-bad.io/a",
            "bad-.io/a",
            "a..io/a",
            "[zz]:5000/a",
            "127.1:5000/a",
            "0x7f000001:5000/a",
            "2130706433:5000/a",
            "127.0.0.01:5000/a",
            "user@127.0.0.1:5000/r:v1",
        ] {
            let e = Reference::parse(bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidReference, "{bad}");
        }
        for good in [
            "[::1]:5000/a",
            "xn--bcher-kva.example/a",
            "localhost:65535/a",
            "my-registry.local:443/a",
            "127.0.0.1:5000/a",
            "10.1.2.3/a",
        ] {
            Reference::parse(good).expect(good);
        }
        assert_eq!(docker_hub_short_name("out:v1"), Some("out"));
        assert_eq!(docker_hub_short_name("localhost:5000"), Some("localhost"));
        assert_eq!(
            docker_hub_short_name("docker://alpine@sha256:ab"),
            Some("alpine")
        );
        assert_eq!(docker_hub_short_name("library/alpine:3"), None);
        assert_eq!(docker_hub_short_name("localhost:5000/a"), None);
    }
}
