//! Where registry credentials come from (SPEC §4), first match wins: the `-u/-p` flags; the
//! Docker config (`--registry-config`, `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`),
//! in Docker's order — the host's `credHelpers` helper, else the `credsStore` helper, then
//! `auths`; the containers auth file (`$REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`); anonymous. `login` and `logout` store and erase
//! through the configured helper, as `docker login` does.
//!
//! Why not the `docker_credential` crate: it reads only the Docker config at its default
//! places (no `--registry-config`, no containers auth file) and cannot write entries for
//! `login`/`logout`; the format is small enough to own.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::error::{Error, ErrorKind, Result};

/// A username and password (or identity token). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name (`<token>` for identity tokens).
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, ***)", self.username)
    }
}

/// Docker Hub is stored under this key by `docker login`.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// The Docker config file to read and write: the flag, `$DOCKER_CONFIG`, `~/.docker`.
pub fn docker_config_path(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    home().map(|h| h.join(".docker").join("config.json"))
}

fn containers_auth_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| PathBuf::from(d).join("containers").join("auth.json"))
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).map(Some).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("{}: not valid JSON ({e})", path.display()),
            )
            .with_path(path)
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

/// The keys a host may be stored under.
fn host_keys(host: &str) -> Vec<String> {
    let mut keys = vec![
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
    ];
    if host == "index.docker.io" {
        keys.extend([
            DOCKER_HUB_KEY.to_string(),
            "docker.io".into(),
            "registry-1.docker.io".into(),
        ]);
    }
    keys
}

fn from_auths(config: &Value, host: &str) -> Option<Credential> {
    let auths = config.get("auths")?.as_object()?;
    let entry = host_keys(host).iter().find_map(|k| auths.get(k))?;
    if let Some(token) = entry
        .get("identitytoken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        return Some(Credential {
            username: "<token>".into(),
            password: token.into(),
        });
    }
    let auth = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some(Credential {
        username: u.into(),
        password: p.into(),
    })
}

/// The server name a credential helper files `host` under (Docker Hub's historical URL).
fn helper_server(host: &str) -> &str {
    if host == "index.docker.io" {
        DOCKER_HUB_KEY
    } else {
        host
    }
}

/// Runs `docker-credential-NAME ACTION` with `input` on stdin (the helper protocol).
fn run_helper(name: &str, action: &str, input: &[u8]) -> Result<std::process::Output> {
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::new(
                ErrorKind::Authentication,
                format!("credential helper {program} (from the Docker config) cannot run: {e}; install it or remove it from the config"),
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    child.wait_with_output().map_err(|e| {
        Error::new(
            ErrorKind::Authentication,
            format!("credential helper {program}: {e}"),
        )
    })
}

/// What a helper said on failure, first line, for messages (never a secret: helpers print
/// their error there, and we never pass a secret to `get` or `erase`).
fn helper_says(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    });
    crate::text::printable(text.lines().next().unwrap_or("").trim()).into_owned()
}

/// Runs `docker-credential-NAME get` for `host`.
fn from_helper(name: &str, host: &str) -> Result<Option<Credential>> {
    let program = format!("docker-credential-{name}");
    let out = run_helper(name, "get", helper_server(host).as_bytes())?;
    if !out.status.success() {
        // "credentials not found in native keychain": not an error, just nothing stored.
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::new(
            ErrorKind::Authentication,
            format!("credential helper {program} printed invalid JSON: {e}"),
        )
    })?;
    let user = v
        .get("Username")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or_default();
    if secret.is_empty() {
        return Ok(None);
    }
    let username = if user.is_empty() { "<token>" } else { user };
    Ok(Some(Credential {
        username: username.into(),
        password: secret.into(),
    }))
}

/// The credential helper the Docker config names for `host`, as Docker picks it: the
/// host's `credHelpers` entry, else `credsStore`.
fn helper_for(config: &Value, host: &str) -> Option<String> {
    host_keys(host)
        .iter()
        .find_map(|k| {
            config
                .get("credHelpers")
                .and_then(|h| h.get(k))
                .and_then(Value::as_str)
        })
        .or_else(|| config.get("credsStore").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Looks up the credential for `host` in Docker's order (flags excluded): the helper the
/// Docker config names for it (`credHelpers`, else `credsStore`), then its `auths`; then
/// the containers auth file.
pub fn lookup(host: &str, config_flag: Option<&Path>) -> Result<Option<Credential>> {
    if let Some(path) = docker_config_path(config_flag) {
        if let Some(config) = read_json(&path)? {
            if let Some(name) = helper_for(&config, host) {
                if let Some(c) = from_helper(&name, host)? {
                    return Ok(Some(c));
                }
            }
            if let Some(c) = from_auths(&config, host) {
                return Ok(Some(c));
            }
        }
    }
    if let Some(path) = containers_auth_path() {
        if let Some(config) = read_json(&path)? {
            return Ok(from_auths(&config, host));
        }
    }
    Ok(None)
}

fn write_config(path: &Path, config: &Value) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.json.")
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating temp file in", dir, e))?;
    let text = serde_json::to_vec_pretty(config)
        .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
    tmp.write_all(&text)
        .map_err(|e| Error::io("writing", tmp.path(), e))?;
    // The file holds secrets: owner-only, like docker's.
    tmp.persist(path)
        .map_err(|e| Error::io("replacing", path, e.error))?;
    Ok(())
}

/// Stores a credential for `host` (`login`), as `docker login` does: through the credential
/// helper the Docker config names for the host (`credHelpers`, else `credsStore`), with an
/// empty `auths` entry so the host is known; in plain `auths` only when no helper is
/// configured. Returns the Docker config file.
pub fn store(host: &str, cred: &Credential, config_flag: Option<&Path>) -> Result<PathBuf> {
    let path = docker_config_path(config_flag).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidArgument,
            "no Docker config path: set HOME, DOCKER_CONFIG or --registry-config",
        )
    })?;
    let mut config = read_json(&path)?.unwrap_or_else(|| json!({}));
    let key = helper_server(host);
    let entry = match helper_for(&config, host) {
        Some(name) => {
            let input =
                json!({"ServerURL": key, "Username": cred.username, "Secret": cred.password});
            let out = run_helper(&name, "store", input.to_string().as_bytes())?;
            if !out.status.success() {
                return Err(Error::new(
                    ErrorKind::Authentication,
                    format!(
                        "credential helper docker-credential-{name} could not store the credentials for {host}: {}",
                        helper_says(&out)
                    ),
                ));
            }
            json!({})
        }
        None => {
            let auth = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", cred.username, cred.password));
            json!({ "auth": auth })
        }
    };
    let map = config.as_object_mut().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("{}: not a JSON object", path.display()),
        )
    })?;
    let auths = map.entry("auths").or_insert_with(|| json!({}));
    if let Some(a) = auths.as_object_mut() {
        // No plain-text copy stays under another spelling of the host.
        for k in host_keys(host) {
            a.remove(&k);
        }
        a.insert(key.to_string(), entry);
    }
    write_config(&path, &config)?;
    Ok(path)
}

/// Removes the credentials for `host` (`logout`): erased through the configured credential
/// helper, and the host's `auths` entries removed; false when there were none.
pub fn remove(host: &str, config_flag: Option<&Path>) -> Result<bool> {
    let Some(path) = docker_config_path(config_flag) else {
        return Ok(false);
    };
    let Some(mut config) = read_json(&path)? else {
        return Ok(false);
    };
    let mut removed = false;
    if let Some(name) = helper_for(&config, host) {
        let out = run_helper(&name, "erase", helper_server(host).as_bytes())?;
        if out.status.success() {
            removed = true;
        } else if !helper_says(&out).to_ascii_lowercase().contains("not found") {
            return Err(Error::new(
                ErrorKind::Authentication,
                format!(
                    "credential helper docker-credential-{name} could not erase the credentials for {host}: {}",
                    helper_says(&out)
                ),
            ));
        }
    }
    let mut edited = false;
    if let Some(auths) = config.get_mut("auths").and_then(Value::as_object_mut) {
        for k in host_keys(host) {
            edited |= auths.remove(&k).is_some();
        }
    }
    if edited {
        write_config(&path, &config)?;
    }
    Ok(removed || edited)
}

/// The `Authorization` value for Basic authentication.
pub fn basic_header(cred: &Credential) -> String {
    let raw = format!("{}:{}", cred.username, cred.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}
