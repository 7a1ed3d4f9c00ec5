//! Test helpers: temp dirs with files, the CLI binary, layout snapshots, skopeo checks and a
//! small HTTP server on 127.0.0.1 that can misbehave on purpose.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// A temporary directory with helpers to fill it.
pub struct TestDir {
    pub path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        let tmp = tempfile::Builder::new()
            .prefix("oci-packer-test-")
            .tempdir()
            .expect("temp dir");
        TestDir {
            path: tmp.path().to_path_buf(),
            _tmp: tmp,
        }
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
        p
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.join(rel);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    }
}

/// The `oci-packer` binary of this build.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oci-packer"))
}

/// The CLI to run in `cwd`, with `SOURCE_DATE_EPOCH` removed unless given in `env`.
fn cli(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = bin();
    // The digest cache goes to the test's own directory, never the real home.
    c.current_dir(cwd)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("XDG_CACHE_HOME", cwd.join("xdg-cache"));
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Runs the CLI in `cwd`, with `SOURCE_DATE_EPOCH` removed unless given in `env`.
pub fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    cli(cwd, args, env).output().expect("run oci-packer")
}

/// [`run`] with `input` on standard input.
pub fn run_with_stdin(cwd: &Path, args: &[&str], input: &[u8]) -> Output {
    use std::process::Stdio;
    let mut child = cli(cwd, args, &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn oci-packer");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait for oci-packer")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns the digest printed by `pack`.
pub fn packed_digest(o: &Output) -> String {
    assert!(
        o.status.success(),
        "pack failed: {}{}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .expect("Digest line")
        .to_string()
}

/// `oci-packer pack -f FILE TARGET` in `d`, which must succeed; returns the digest.
pub fn pack_ok(d: &TestDir, file: &str, target: &str) -> String {
    packed_digest(&run(&d.path, &["pack", "-f", file, target], &[]))
}

/// Every file under `dir` with its bytes, for byte-for-byte comparisons.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let e = e.expect("entry");
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            if p.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                go(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    go(dir, dir, &mut out);
    out
}

pub fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("json")
}

/// The blob `digest` of layout `dir`.
pub fn blob(dir: &Path, digest: &str) -> Vec<u8> {
    let (algo, hex) = digest.split_once(':').expect("digest");
    std::fs::read(dir.join("blobs").join(algo).join(hex)).expect("blob")
}

pub fn blob_json(dir: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(dir, digest)).expect("json blob")
}

/// The names in the layout `dir`'s `index.json`, in its order (entries without a name
/// left out).
pub fn entry_names(dir: &Path) -> Vec<String> {
    read_json(&dir.join("index.json"))["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

/// The `index.json` entry named `name`.
pub fn entry(dir: &Path, name: &str) -> Value {
    let index = read_json(&dir.join("index.json"));
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no entry {name} in {index}"))
}

/// skopeo (from Debian) must read what we wrote: the raw manifest byte for byte, and a
/// full copy (`--all`: every member of an index) to a `dir:` destination with every manifest
/// byte for byte. A missing skopeo fails the test.
pub fn skopeo_reads(layout: &Path, name: &str) {
    let reference = format!("oci:{}:{name}", layout.display());
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", &reference])
        .output()
        .expect("skopeo must be installed (.ci/run installs it)");
    assert!(
        raw.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let digest = entry(layout, name)["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    assert_eq!(
        raw.stdout,
        blob(layout, &digest),
        "skopeo's raw manifest differs from ours"
    );
    let root: Value = serde_json::from_slice(&raw.stdout).expect("json");
    let out = TestDir::new();
    let dest = format!("dir:{}", out.join("copy").display());
    let copy = Command::new("skopeo")
        .args(["copy", "--all", "--quiet", &reference, &dest])
        .output()
        .expect("skopeo");
    assert!(
        copy.status.success(),
        "skopeo copy {reference}: {}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let manifest = std::fs::read(out.join("copy/manifest.json")).expect("copied manifest");
    let is_index = root["mediaType"] == "application/vnd.oci.image.index.v1+json";
    if !is_index {
        assert_eq!(
            String::from_utf8_lossy(&manifest),
            String::from_utf8_lossy(&blob(layout, &digest))
        );
    }
    // An index: skopeo re-serialises the list itself (dropping artifactType and annotations),
    // but every member manifest must arrive byte for byte.
    for member in root["manifests"].as_array().into_iter().flatten() {
        let d = member["digest"].as_str().expect("digest");
        let hex = d.trim_start_matches("sha256:");
        let copied =
            std::fs::read(out.join(&format!("copy/{hex}.manifest.json"))).expect("member manifest");
        assert_eq!(
            String::from_utf8_lossy(&copied),
            String::from_utf8_lossy(&blob(layout, d)),
            "member {d}"
        );
    }
}

/// What the test server answers for a path.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with the body and an ETag; 304 when If-None-Match matches.
    Body { body: Vec<u8>, etag: String },
    /// This status with an empty body.
    Status(u16),
    /// 500 for the first `n` requests, then the body.
    FailFirst { n: usize, body: Vec<u8> },
    /// 302 to another path.
    Redirect(String),
    /// Announces the full length but closes after `cut` bytes, once; then the full body.
    CutOnce { body: Vec<u8>, cut: usize },
}

/// A request the server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub status: u16,
}

/// One HTTP request, as the handler of [`HttpServer`] sees it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// One HTTP response; `cut` closes the connection after that many body bytes.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub cut: Option<usize>,
    /// Instead of `body`: a body made on the fly, for hostile servers.
    pub stream: Option<Stream>,
}

/// Bodies a hostile server sends; each stops when the client hangs up.
#[derive(Clone, Debug)]
pub enum Stream {
    /// `total` bytes of `byte`, announced with `Content-Length: announced` (or chunked
    /// without any length when `None`).
    Flood {
        byte: u8,
        total: u64,
        announced: Option<u64>,
    },
    /// `body`, one byte a second.
    Trickle(Vec<u8>),
}

impl Response {
    pub fn status(status: u16) -> Response {
        Response {
            status,
            ..Response::default()
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Response {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// A tiny HTTP/1.1 server on 127.0.0.1 (one thread per connection, `Connection: close`)
/// that answers with a handler, or with fixed [`Reply`]s per path.
pub struct HttpServer {
    pub addr: String,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl HttpServer {
    /// Answers from the routes set with [`HttpServer::route`] (404 for anything else).
    pub fn start() -> HttpServer {
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let r = routes.clone();
        let mut server = HttpServer::with_handler(move |req| reply(&r, req));
        server.routes = routes;
        server
    }

    /// Answers every request with `handler`.
    pub fn with_handler(
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> HttpServer {
        HttpServer::with_handler_on("127.0.0.1", handler)
    }

    /// The same on another loopback address (another host, as far as clients can tell).
    pub fn with_handler_on(
        ip: &str,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> HttpServer {
        let listener = TcpListener::bind((ip, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (h, s) = (handler.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, h.as_ref(), &s);
                });
            }
        });
        HttpServer {
            addr,
            routes: Arc::default(),
            seen,
        }
    }

    pub fn route(&self, path: &str, reply: Reply) {
        self.routes
            .lock()
            .expect("lock")
            .insert(path.to_string(), reply);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn statuses(&self, path: &str) -> Vec<u16> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.path == path)
            .map(|s| s.status)
            .collect()
    }
}

fn reply(routes: &Mutex<HashMap<String, Reply>>, req: &Request) -> Response {
    let path = req.path.clone();
    let found = routes
        .lock()
        .expect("lock")
        .get(&path)
        .cloned()
        .unwrap_or(Reply::Status(404));
    match found {
        Reply::Body { etag, .. } if req.headers.get("if-none-match") == Some(&etag) => {
            Response::status(304).header("ETag", &etag)
        }
        Reply::Body { body, etag } => Response::status(200).header("ETag", &etag).body(body),
        Reply::Status(s) => Response::status(s),
        Reply::FailFirst { n, body } if n > 0 => {
            routes
                .lock()
                .expect("lock")
                .insert(path, Reply::FailFirst { n: n - 1, body });
            Response::status(500)
        }
        Reply::FailFirst { body, .. } => Response::status(200).body(body),
        Reply::Redirect(to) => Response::status(302).header("Location", &to),
        Reply::CutOnce { body, cut } => {
            let full = Reply::Body {
                body: body.clone(),
                etag: "\"full\"".into(),
            };
            routes.lock().expect("lock").insert(path, full);
            Response {
                cut: Some(cut),
                ..Response::status(200).body(body)
            }
        }
    }
}

fn serve(mut conn: TcpStream, handler: &Handler, seen: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("GET").to_string();
    let path = parts.next().unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if let Some(n) = headers
        .get("content-length")
        .and_then(|n| n.parse::<usize>().ok())
    {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    }
    let req = Request {
        method,
        path,
        headers,
        body,
    };
    let resp = handler(&req);
    seen.lock().expect("lock").push(Seen {
        path: req.path,
        headers: req.headers,
        status: resp.status,
    });
    if let Some(stream) = &resp.stream {
        return send_stream(&mut conn, &resp, stream, &req.method);
    }
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
        resp.status,
        resp.body.len()
    );
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    conn.write_all(head.as_bytes())?;
    let end = resp.cut.unwrap_or(resp.body.len()).min(resp.body.len());
    if req.method != "HEAD" {
        conn.write_all(&resp.body[..end])?;
    }
    conn.flush()?;
    let _ = conn.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn send_stream(
    conn: &mut TcpStream,
    resp: &Response,
    stream: &Stream,
    method: &str,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} X\r\n", resp.status);
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let announced = match stream {
        Stream::Flood { announced, .. } => *announced,
        Stream::Trickle(b) => Some(b.len() as u64),
    };
    match announced {
        Some(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
        None => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("Connection: close\r\n\r\n");
    conn.write_all(head.as_bytes())?;
    if method == "HEAD" {
        return Ok(());
    }
    match stream {
        Stream::Flood { byte, total, .. } => {
            let chunk = vec![*byte; 1 << 16];
            let mut sent = 0u64;
            while sent < *total {
                let n = (*total - sent).min(chunk.len() as u64) as usize;
                if announced.is_none() {
                    conn.write_all(format!("{n:x}\r\n").as_bytes())?;
                }
                conn.write_all(&chunk[..n])?;
                if announced.is_none() {
                    conn.write_all(b"\r\n")?;
                }
                sent += n as u64;
            }
            if announced.is_none() {
                conn.write_all(b"0\r\n\r\n")?;
            }
        }
        Stream::Trickle(body) => {
            for b in body {
                conn.write_all(std::slice::from_ref(b))?;
                conn.flush()?;
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
    conn.flush()
}

/// Runs the CLI like [`run`] under GNU time; returns its output and its peak RSS in KiB
/// (getrusage of the child, as GNU time reports it). A run past ten minutes is killed and
/// fails the test as a hang.
pub fn run_measured(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (Output, u64) {
    let rss_file = cwd.join(".peak-rss");
    let mut c = Command::new("/usr/bin/time");
    c.current_dir(cwd)
        .arg("-o")
        .arg(&rss_file)
        .args(["-f", "%M"])
        // Only a guard against a hang, never a measure: the peak RSS of `timeout` includes
        // its waited-for child's.
        .args(["timeout", "--kill-after=10", "600"])
        .arg(env!("CARGO_BIN_EXE_oci-packer"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("XDG_CACHE_HOME", cwd.join("xdg-cache"));
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .output()
        .expect("GNU time must be installed (.ci/run installs it)");
    assert_ne!(out.status.code(), Some(124), "oci-packer {args:?} hung");
    let text = std::fs::read_to_string(&rss_file).expect("GNU time's report");
    let kib = text
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no RSS in {text:?}"));
    (out, kib)
}

/// A real Distribution registry (Debian's `docker-registry`) on 127.0.0.1 with a temp
/// storage directory; stopped when dropped. A missing binary fails the test.
pub struct RegistryServer {
    pub addr: String,
    pub dir: TestDir,
    child: std::process::Child,
}

impl RegistryServer {
    /// No authentication.
    pub fn start() -> RegistryServer {
        RegistryServer::start_with(|_| String::new())
    }

    /// HTTPS with a certificate from a test CA; returns the server and the CA certificate.
    pub fn with_tls() -> (RegistryServer, PathBuf) {
        let mut cert_path = PathBuf::new();
        let server = RegistryServer::start_with(|dir| {
            let (ca, cert, key) = test_certificates(dir);
            cert_path = ca;
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            )
        });
        (server, cert_path)
    }

    /// htpasswd Basic authentication with one user.
    pub fn with_basic_auth(user: &str, password: &str) -> RegistryServer {
        RegistryServer::start_with(|dir| {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd must be installed (.ci/run installs apache2-utils)");
            assert!(out.status.success());
            let file = dir.write("htpasswd", &out.stdout);
            format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                file.display()
            )
        })
    }

    pub fn start_with(auth: impl FnOnce(&TestDir) -> String) -> RegistryServer {
        RegistryServer::start_configured(auth, true)
    }

    /// A registry as Distribution ships: deleting manifests is not enabled (405).
    pub fn start_without_deletes() -> RegistryServer {
        RegistryServer::start_configured(|_| String::new(), false)
    }

    fn start_configured(auth: impl FnOnce(&TestDir) -> String, deletes: bool) -> RegistryServer {
        let dir = TestDir::new();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: {deletes}\nhttp:\n  addr: {addr}\n{}",
            dir.join("data").display(),
            auth(&dir)
        );
        let config_path = dir.write("config.yml", config);
        let log = std::fs::File::create(dir.join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .args(["serve", config_path.to_str().expect("utf8")])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry must be installed (.ci/run installs it)");
        let server = RegistryServer { addr, dir, child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            if let Ok(mut s) = TcpStream::connect(&server.addr) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut head = [0u8; 12];
                if s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") {
                    return server;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "registry did not start: {}",
                server.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT/repo:tag`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// The registry's log (access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the ORAS CLI in `cwd`, which must succeed.
pub fn oras(args: &[&str], cwd: &Path) -> Output {
    let o = Command::new(peer("oras", "OCI_PACKER_ORAS"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("oras");
    assert!(
        o.status.success(),
        "oras {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A peer tool: `$NAME_ENV` if set, else on PATH, else in `~/go/bin` (where `go install`
/// puts it). Missing fails the test: `.ci/run` installs every peer.
pub fn peer(name: &str, env: &str) -> std::path::PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return p.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|c| c.is_file())
        })
        .unwrap_or_default();
    let in_go =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join("go/bin").join(name));
    on_path
        .or(in_go.filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run scripts/test (it installs the peers) or set {env}")
        })
}

/// A Distribution registry with `auth: token`, and the token server it trusts (a real HTTP
/// server on 127.0.0.1 that checks Basic credentials and signs RS256 JWTs with `openssl`,
/// carrying its self-signed certificate in `x5c`).
pub struct TokenRegistry {
    pub registry: RegistryServer,
    pub tokens: HttpServer,
    /// Token requests the server granted (scope strings).
    pub granted: Arc<Mutex<Vec<String>>>,
    /// Repositories the token server grants nothing on, whatever is asked.
    pub denied: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl TokenRegistry {
    pub fn start(user: &'static str, password: &'static str) -> TokenRegistry {
        TokenRegistry::start_with(user, password, false)
    }

    /// With `demand_scope`, the token server refuses (400) requests that name no scope, as
    /// some token services do; a granted request without scope is recorded as "".
    pub fn start_with(
        user: &'static str,
        password: &'static str,
        demand_scope: bool,
    ) -> TokenRegistry {
        use base64::Engine as _;
        let keys = TestDir::new();
        // The test CA's own key and self-signed certificate sign the tokens (x5c).
        let (cert, _, _) = test_certificates(&keys);
        let key = keys.join("ca.key");
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl");
        let x5c = base64::engine::general_purpose::STANDARD.encode(&der.stdout);
        let granted: Arc<Mutex<Vec<String>>> = Arc::default();
        let g = granted.clone();
        let denied: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
        let deny = denied.clone();
        let key_path = key.clone();
        let keys_dir = Arc::new(keys);
        let tokens = HttpServer::with_handler(move |req| {
            let _keep = &keys_dir;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            );
            if req.headers.get("authorization") != Some(&expected) {
                return Response::status(401).body(r#"{"details":"bad credentials"}"#);
            }
            let query = req.path.split_once('?').map(|(_, q)| q).unwrap_or("");
            let scoped = query.split('&').any(|kv| kv.starts_with("scope="));
            if !scoped {
                if demand_scope {
                    return Response::status(400).body(r#"{"details":"a scope is required"}"#);
                }
                g.lock().expect("lock").push(String::new());
            }
            let mut access = Vec::new();
            for kv in query.split('&') {
                if let Some(scope) = kv.strip_prefix("scope=") {
                    let scope = scope
                        .replace("%3A", ":")
                        .replace("%2F", "/")
                        .replace("%2C", ",");
                    g.lock().expect("lock").push(scope.clone());
                    let parts: Vec<&str> = scope.split(':').collect();
                    if parts.len() == 3 && !deny.lock().expect("lock").contains(parts[1]) {
                        access.push(serde_json::json!({"type": parts[0], "name": parts[1], "actions": parts[2].split(',').collect::<Vec<_>>()}));
                    }
                }
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_secs();
            let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
            let claims = serde_json::json!({"iss": "oci-packer-test", "sub": user, "aud": "oci-packer-registry",
                "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()), "access": access});
            let signing_input = format!(
                "{}.{}",
                b64.encode(header.to_string()),
                b64.encode(claims.to_string())
            );
            let mut child = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&key_path)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("openssl");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(signing_input.as_bytes())
                .expect("write");
            let sig = child.wait_with_output().expect("sign").stdout;
            let token = format!("{signing_input}.{}", b64.encode(sig));
            Response::status(200)
                .header("Content-Type", "application/json")
                .body(serde_json::json!({"token": token}).to_string())
        });
        let realm = tokens.url("/token");
        let cert_path = cert.clone();
        let registry = RegistryServer::start_with(move |_| {
            format!(
                "auth:\n  token:\n    realm: {realm}\n    service: oci-packer-registry\n    issuer: oci-packer-test\n    rootcertbundle: {}\n",
                cert_path.display()
            )
        });
        TokenRegistry {
            registry,
            tokens,
            granted,
            denied,
        }
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl; returns
/// (CA certificate, server certificate, server key).
pub fn test_certificates(dir: &TestDir) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    let openssl = |args: &[&str]| {
        let o = Command::new("openssl")
            .current_dir(&dir.path)
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=oci-packer test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
    ]);
    dir.write(
        "ext.cnf",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "tls.crt",
    ]);
    (p("ca.crt"), p("tls.crt"), p("tls.key"))
}

/// Writes an executable `docker-credential-NAME` that keeps credentials in files under
/// `DIR/credential-store/` (the helper protocol's `store`, `get`, `erase`, `list`, as
/// docker-credential-pass does it, without gpg); returns a `PATH` that finds it first, and
/// the store directory.
pub fn file_credential_helper(d: &TestDir, name: &str) -> (String, PathBuf) {
    let store = d.mkdir("credential-store");
    let script = format!(
        r#"#!/usr/bin/env python3
import json, os, sys, urllib.parse
store = {store:?}
action = sys.argv[1]
data = sys.stdin.read()
def path(server):
    return os.path.join(store, urllib.parse.quote(server.strip(), safe=""))
if action == "store":
    entry = json.loads(data)
    with open(path(entry["ServerURL"]), "w") as f:
        json.dump(entry, f)
elif action == "get":
    try:
        with open(path(data)) as f:
            print(f.read())
    except FileNotFoundError:
        print("credentials not found in native keychain")
        sys.exit(1)
elif action == "erase":
    try:
        os.remove(path(data))
    except FileNotFoundError:
        print("credentials not found in native keychain")
        sys.exit(1)
elif action == "list":
    print(json.dumps({{urllib.parse.unquote(n): "" for n in os.listdir(store)}}))
"#,
        store = store.display().to_string()
    );
    (install_helper(d, name, &script), store)
}

/// Writes an executable `docker-credential-NAME` that prints `user`/`secret` (after reading
/// the server from stdin, which must equal `$EXPECT_SERVER` when that is set); returns a
/// `PATH` that finds it first.
pub fn credential_helper(d: &TestDir, name: &str, user: &str, secret: &str) -> String {
    let script = format!(
        "#!/bin/sh\nread server\n[ -z \"$EXPECT_SERVER\" ] || [ \"$server\" = \"$EXPECT_SERVER\" ] || exit 1\n\
         echo '{{\"ServerURL\":\"x\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}'\n"
    );
    install_helper(d, name, &script)
}

/// Installs `script` as an executable `docker-credential-NAME` in `DIR/credential-helpers`;
/// returns a `PATH` that finds it first.
fn install_helper(d: &TestDir, name: &str, script: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = d.mkdir("credential-helpers");
    let helper = d.write(
        &format!("credential-helpers/docker-credential-{name}"),
        script,
    );
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Cuts `path` to `len` bytes in place (a source that shrinks under a reader).
pub fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .expect("truncate")
}

/// This program's temp files (names starting with `.oci-packer-`) below `dir`.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with(".oci-packer-") {
            out.push(p.clone());
        }
        if p.is_dir() && !p.is_symlink() {
            out.extend(temp_files(&p));
        }
    }
    out
}

/// Writes `a.txt`, `b.txt` and the pack files `a.yaml`, `b.yaml` of one file each.
pub fn write_two_packs(d: &TestDir) {
    d.write("a.txt", "a");
    d.write("b.txt", "b");
    d.write("a.yaml", "items:\n  - from: file://a.txt\n");
    d.write("b.yaml", "items:\n  - from: file://b.txt\n");
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub fn sha256(data: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data))
    )
}

pub fn desc(media_type: &str, data: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(data), "size": data.len()})
}

/// A manifest with the empty config and these layers.
pub fn manifest(layers: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.empty.v1+json", b"{}"),
        "layers": layers,
    }))
    .expect("json")
}

pub fn index(members: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": members}))
        .expect("json")
}

/// A layout written by hand, whatever its content claims.
pub struct RawLayout<'a>(&'a Path);

impl RawLayout<'_> {
    pub fn new(dir: &Path) -> RawLayout<'_> {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
        RawLayout(dir)
    }

    pub fn path(&self, digest: &str) -> std::path::PathBuf {
        self.0
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Stores `data` under its own digest.
    pub fn put(&self, data: &[u8]) -> String {
        let d = sha256(data);
        std::fs::write(self.path(&d), data).expect("write blob");
        d
    }

    /// Names `entry` as `v1`.
    pub fn tag(&self, mut entry: Value) {
        entry["annotations"] = json!({"org.opencontainers.image.ref.name": "v1"});
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]});
        std::fs::write(self.0.join("index.json"), index.to_string()).expect("index");
    }
}

/// Polls the condition `ready` while `child` runs (every 5 ms, at most 30 s): panics, naming
/// `what`, when the child ends first or the condition never holds.
pub fn wait_while_running(child: &mut std::process::Child, what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready() {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "{what}: the process ended first"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: never happened"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Ctrl-C (SIGINT) to `child`, then its output.
pub fn interrupt(child: std::process::Child) -> Output {
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .expect("SIGINT");
    child.wait_with_output().expect("wait")
}

/// Runs the CLI in `cwd` and checks that it succeeded; its output.
pub fn run_ok(cwd: &Path, args: &[&str]) -> Output {
    let o = run(cwd, args, &[]);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    o
}

/// Runs the CLI in `cwd` and checks that it exited with `code` and said `expect` on stderr;
/// its output.
pub fn run_fails(cwd: &Path, args: &[&str], code: i32, expect: &str) -> Output {
    let o = run(cwd, args, &[]);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
    assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
    o
}

/// A real S3 server (moto's standalone server, from PyPI, in the venv `.ci/run` makes) on
/// 127.0.0.1 that checks Signature V4: the first three requests (creating an IAM user, its
/// policy and its access key) are the only unauthenticated ones. Its request log (one line
/// per request: `"GET /bucket/key HTTP/1.1" 200`) is [`S3Server::log`]. Stopped when dropped;
/// a missing server fails the test.
pub struct S3Server {
    pub addr: String,
    pub key_id: String,
    pub secret: String,
    tls: bool,
    pub dir: TestDir,
    child: std::process::Child,
}

/// boto3 against the test server; argv: ENDPOINT KEY_ID SECRET then the operation.
const S3_CLIENT: &str = r#"
import json, sys, boto3
endpoint, key_id, secret, op = sys.argv[1:5]
args = sys.argv[5:]
kw = dict(endpoint_url=endpoint, region_name="us-east-1")
if op == "setup":
    iam = boto3.client("iam", aws_access_key_id="x", aws_secret_access_key="y", **kw)
    iam.create_user(UserName="packer")
    iam.put_user_policy(UserName="packer", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    k = iam.create_access_key(UserName="packer")["AccessKey"]
    print(k["AccessKeyId"], k["SecretAccessKey"])
    sys.exit(0)
s3 = boto3.client("s3", aws_access_key_id=key_id, aws_secret_access_key=secret, **kw)
if op == "bucket":
    s3.create_bucket(Bucket=args[0])
elif op == "put":
    # put BUCKET KEY FILE [KEY FILE ...]
    bucket = args[0]
    for key, path in zip(args[1::2], args[2::2]):
        s3.upload_file(path, bucket, key)
elif op == "put-bytes":
    s3.put_object(Bucket=args[0], Key=args[1], Body=args[2].encode())
elif op == "presign":
    print(s3.generate_presigned_url("get_object", Params={"Bucket": args[0], "Key": args[1]}, ExpiresIn=3600))
else:
    sys.exit("unknown operation " + op)
"#;

impl S3Server {
    pub fn start() -> S3Server {
        S3Server::start_with_tls(false)
    }

    /// HTTPS with a certificate of a test CA (`S3Server::ca`).
    pub fn with_tls() -> S3Server {
        S3Server::start_with_tls(true)
    }

    fn start_with_tls(tls: bool) -> S3Server {
        let dir = TestDir::new();
        let mut tls_args = Vec::new();
        if tls {
            let (_, cert, key) = test_certificates(&dir);
            tls_args = vec![
                "-c".to_string(),
                cert.display().to_string(),
                "-k".to_string(),
                key.display().to_string(),
            ];
        }
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("s3.log")).expect("log");
        let child = Command::new(peer("moto_server", "OCI_PACKER_MOTO"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .args(&tls_args)
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("moto_server must be installed (.ci/run installs it into .venv)");
        let mut server = S3Server {
            addr,
            key_id: String::new(),
            secret: String::new(),
            tls,
            dir,
            child,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while TcpStream::connect(&server.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the S3 server did not start: {}",
                server.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = server.client(&["setup"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (id, secret) = text.trim().split_once(' ').expect("key id and secret");
        server.key_id = id.to_string();
        server.secret = secret.to_string();
        server
    }

    /// Runs the boto3 client with `args`, which must succeed.
    fn client(&self, args: &[&str]) -> Output {
        let python = std::env::var_os("OCI_PACKER_TEST_PYTHON")
            .expect("OCI_PACKER_TEST_PYTHON (scripts/test sets it to the venv's python)");
        let mut c = Command::new(python);
        c.args([
            "-c",
            S3_CLIENT,
            &self.endpoint(),
            &self.key_id,
            &self.secret,
        ])
        .args(args);
        if self.tls {
            c.env("AWS_CA_BUNDLE", self.ca());
        }
        let out = c.output().expect("python");
        assert!(
            out.status.success(),
            "S3 client {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `http://127.0.0.1:PORT` (`https://…` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `s3+http://127.0.0.1:PORT/BUCKET/KEY` (`s3+https://…` with TLS).
    pub fn uri(&self, bucket_and_key: &str) -> String {
        format!("s3+{}/{bucket_and_key}", self.endpoint())
    }

    /// The test CA's certificate (with TLS).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn bucket(&self, name: &str) {
        self.client(&["bucket", name]);
    }

    /// Uploads files: `(key, path)` pairs.
    pub fn put_files(&self, bucket: &str, files: &[(String, PathBuf)]) {
        let mut args = vec!["put".to_string(), bucket.to_string()];
        for (k, p) in files {
            args.push(k.clone());
            args.push(p.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.client(&args);
    }

    pub fn put(&self, bucket: &str, key: &str, text: &str) {
        self.client(&["put-bytes", bucket, key, text]);
    }

    /// A pre-signed GET URL of the object (for curl).
    pub fn presign(&self, bucket: &str, key: &str) -> String {
        let out = self.client(&["presign", bucket, key]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The environment of a run with the server's credentials (and nothing of the
    /// machine's own AWS configuration).
    pub fn env(&self) -> Vec<(String, String)> {
        let none = self.dir.join("no-such-file").display().to_string();
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
            ("AWS_SHARED_CREDENTIALS_FILE".into(), none.clone()),
            ("AWS_CONFIG_FILE".into(), none),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }

    /// The request log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("s3.log")).unwrap_or_default()
    }

    /// Request lines of `method` for the path `/bucket/key` (as the log writes it).
    pub fn requests(&self, method: &str, path: &str) -> usize {
        log_requests(&self.log(), method, &format!("{path} HTTP/1.1\"")).len()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of an access log (a registry's or an S3 server's: `"METHOD PATH HTTP/1.1"`) of
/// `method` whose path starts with `prefix`.
pub fn log_requests(log: &str, method: &str, prefix: &str) -> Vec<String> {
    let needle = format!("\"{method} {prefix}");
    log.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// A port nothing listens on now, on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The titles of a manifest's layers, in order.
pub fn layer_titles(manifest: &Value) -> Vec<&str> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            l["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .expect("title")
        })
        .collect()
}
