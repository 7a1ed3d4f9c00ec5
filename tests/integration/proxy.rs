//! `proxy` (SPEC §8) with curl as the client: a layout and a real Distribution registry
//! with token auth as upstreams, titles, platforms, ranges, conditional requests, caching
//! of tags, verification while streaming, errors that leak nothing, graceful stop.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::util::*;

/// A running `oci-packer proxy`, stopped (killed) when dropped; its stderr (the access
/// log) goes to a file.
struct Proxy {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Proxy {
    fn start(d: &TestDir, args: &[&str]) -> Proxy {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = d.join(&format!("proxy-{n}.log"));
        let mut child = bin()
            .args(["proxy", "--addr", "127.0.0.1:0"])
            .args(args)
            .current_dir(&d.path)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("proxy");
        let base = format!("http://{}", served_address(&mut child, &log));
        Proxy { child, base, log }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The `IP:PORT` a starting proxy prints on its first line (`log`: for the message when
/// it prints none).
fn served_address(child: &mut Child, log: &std::path::Path) -> String {
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read");
    first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_else(|| {
            panic!(
                "no address in {first:?}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .to_string()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What curl got: its exit code, the status, the headers (names lower-cased), the body.
struct Got {
    code: i32,
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.text()))
    }
}

/// `curl -sS` with `args` (method, headers…) at `url`.
fn curl(url: &str, args: &[&str]) -> Got {
    let dir = TestDir::new();
    let (head, body) = (dir.join("head"), dir.join("body"));
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "120", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Got {
        code: o.status.code().unwrap_or(-1),
        status,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// The files the tests serve: a manifest of three (one titled with a `/`) and an index
/// whose linux/amd64 and linux/arm64 members both hold `tool` and whose member without a
/// platform holds `README`.
fn write_artifacts(d: &TestDir) {
    let big: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.join("big.bin"), &big).expect("big");
    d.write("a.txt", "alpha\n");
    d.write("docs/guide.md", "# guide\n");
    d.write(
        "files.yaml",
        "items:\n- from: file://a.txt\n- from: file://big.bin\n- from: file://docs/guide.md\n  annotations: {org.opencontainers.image.title: docs/guide.md}\n",
    );
    d.write("tool-amd64", "amd64 tool\n");
    d.write("tool-arm64", "arm64 tool\n");
    d.write("README", "read me\n");
    d.write(
        "multi.yaml",
        "items:\n- from: file://tool-amd64\n  annotations: {org.opencontainers.image.title: tool}\n  platform: linux/amd64\n- from: file://tool-arm64\n  annotations: {org.opencontainers.image.title: tool}\n  platform: linux/arm64\n- from: file://README\n",
    );
}

/// The assertions every upstream must pass; `files` and `multi` are the references of
/// the two artifacts (paths after the host), `root` the digest of `files`.
fn serves_the_contract(p: &Proxy, files: &str, multi: &str, root: &str) {
    // By ?title=, with every header the contract names.
    let g = curl(&p.url(&format!("{files}?title=a.txt")), &[]);
    assert_eq!((g.code, g.status), (0, 200), "{}", g.text());
    assert_eq!(g.text(), "alpha\n");
    let digest = sha256(b"alpha\n");
    assert_eq!(g.header("etag"), format!("\"{digest}\""));
    assert_eq!(g.header("docker-content-digest"), digest);
    assert_eq!(g.header("content-type"), "text/plain");
    assert_eq!(g.header("content-length"), "6");
    assert_eq!(g.header("accept-ranges"), "bytes");
    assert_eq!(
        g.header("content-disposition"),
        "attachment; filename=\"a.txt\""
    );
    assert_eq!(g.header("cache-control"), "public, max-age=30");
    // By /files/TITLE with a `/` in the title; HEAD gives the headers only.
    let g = curl(&p.url(&format!("{files}/files/docs/guide.md")), &[]);
    assert_eq!((g.status, g.text().as_str()), (200, "# guide\n"));
    assert_eq!(
        g.header("content-disposition"),
        "attachment; filename=\"guide.md\""
    );
    let g = curl(&p.url(&format!("{files}/files/docs/guide.md")), &["-I"]);
    assert_eq!((g.status, g.header("content-length")), (200, "8"));
    // (curl -I writes the headers where the body would go: the body is not there.)
    assert!(!g.text().contains("# guide"), "{}", g.text());
    // By digest: cacheable for good.
    let by_digest = files.rsplit_once('/').expect("repo").0.to_string() + "/" + root;
    let g = curl(&p.url(&format!("{by_digest}/files/a.txt")), &[]);
    assert_eq!((g.status, g.text().as_str()), (200, "alpha\n"));
    assert_eq!(
        g.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    // Range: exactly those bytes.
    let big: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let g = curl(
        &p.url(&format!("{files}?title=big.bin")),
        &["-r", "100-199"],
    );
    assert_eq!(g.status, 206, "{}", g.text());
    assert_eq!(g.body, big[100..200]);
    assert_eq!(g.header("content-range"), "bytes 100-199/1000");
    let g = curl(&p.url(&format!("{files}?title=big.bin")), &["-r", "5000-"]);
    assert_eq!(g.status, 416);
    assert_eq!(g.header("content-range"), "bytes */1000");
    // A suffix longer than the file is all of it; an invalid range, or `If-Range` with
    // another validator, gets the whole file.
    for (args, status, len) in [
        (vec!["-H", "Range: bytes=-99999"], 206, 1000),
        (vec!["-H", "Range: bytes=5-4"], 200, 1000),
        (vec!["-H", "Range: BYTES=0-1"], 206, 2),
        (
            vec!["-H", "Range: bytes=0-1", "-H", "If-Range: \"sha256:0000\""],
            200,
            1000,
        ),
    ] {
        let g = curl(&p.url(&format!("{files}?title=big.bin")), &args);
        assert_eq!((g.status, g.body.len()), (status, len), "{args:?}");
    }
    let if_range = format!("If-Range: \"sha256:{}\"", &sha256(&big)[7..]);
    let g = curl(
        &p.url(&format!("{files}?title=big.bin")),
        &["-r", "0-1", "-H", &if_range],
    );
    assert_eq!((g.status, g.body.len()), (206, 2));
    // If-None-Match with the digest: 304.
    let etag = format!("If-None-Match: \"{digest}\"");
    let g = curl(&p.url(&format!("{files}?title=a.txt")), &["-H", &etag]);
    assert_eq!(g.status, 304);
    // The listing.
    let g = curl(&p.url(&format!("{files}/files/")), &[]);
    assert_eq!(g.status, 200);
    let titles: Vec<String> = g
        .json()
        .as_array()
        .expect("list")
        .iter()
        .map(|f| f["title"].as_str().expect("title").to_string())
        .collect();
    assert_eq!(titles, ["a.txt", "big.bin", "docs/guide.md"]);
    assert_eq!(g.json()[1]["size"], 1000);
    // An index: the platform chooses; arm64/v8 finds the linux/arm64 member; members
    // without a platform always count; a title in two chosen members is a conflict.
    let g = curl(
        &p.url(&format!("{multi}?title=tool&platform=linux/arm64/v8")),
        &[],
    );
    assert_eq!((g.status, g.text().as_str()), (200, "arm64 tool\n"));
    let g = curl(
        &p.url(&format!("{multi}?title=tool&platform=linux/amd64")),
        &[],
    );
    assert_eq!((g.status, g.text().as_str()), (200, "amd64 tool\n"));
    let g = curl(
        &p.url(&format!("{multi}?title=README&platform=linux/amd64")),
        &[],
    );
    assert_eq!((g.status, g.text().as_str()), (200, "read me\n"));
    let g = curl(&p.url(&format!("{multi}?title=tool")), &[]);
    assert_eq!(g.status, 409, "{}", g.text());
    assert!(g.json()["error"]
        .as_str()
        .expect("error")
        .contains("platform"));
    let g = curl(&p.url(&format!("{multi}/files/?platform=linux/arm64")), &[]);
    let list = g.json();
    assert_eq!(list.as_array().expect("list").len(), 2, "{list}");
    // Errors: JSON, with the right status.
    for (url, status) in [
        (format!("{files}?title=nope"), 404),
        (format!("{files}x?title=a.txt"), 404),
        (multi.to_string(), 400),
        (format!("{multi}?title=tool&platform=not-a-platform!"), 400),
    ] {
        let g = curl(&p.url(&url), &[]);
        assert_eq!(g.status, status, "{url}: {}", g.text());
        assert!(g.json()["error"].is_string(), "{url}");
    }
    let g = curl(&p.url(&format!("{files}?title=a.txt")), &["-X", "POST"]);
    assert_eq!(g.status, 405);
    assert_eq!(g.header("allow"), "GET, HEAD");
    let g = curl(&p.url("/healthz"), &[]);
    assert_eq!(g.status, 200);
    // One access-log line per request: method, path, status, bytes, ms.
    let log = p.log();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("GET {files}?title=a.txt 200 6 "))),
        "{log}"
    );
}

#[test]
fn a_layout_upstream_serves_files_by_title() {
    let d = TestDir::new();
    write_artifacts(&d);
    let root = packed_digest(&run_ok(
        &d.path,
        &["pack", "-f", "files.yaml", "oci://./lay:example/files:v1"],
    ));
    run_ok(
        &d.path,
        &["pack", "-f", "multi.yaml", "oci://./lay:example/multi:v1"],
    );
    let p = Proxy::start(&d, &["oci://lay"]);
    serves_the_contract(&p, "/example/files/v1", "/example/multi/v1", &root);
    // `/REF` alone names the entry REF.
    run_ok(&d.path, &["pack", "-f", "files.yaml", "oci://./lay:plain"]);
    let g = curl(&p.url("/plain?title=a.txt"), &[]);
    assert_eq!((g.status, g.text().as_str()), (200, "alpha\n"));
}

#[test]
fn a_registry_upstream_with_token_auth_serves_files_and_leaks_nothing() {
    let t = TokenRegistry::start("bob", "hunter2-secret");
    let d = TestDir::new();
    write_artifacts(&d);
    let creds = ["--plain-http", "-u", "bob", "-p", "hunter2-secret"];
    let push = |file: &str, reference: &str| {
        let target = t.registry.reference(reference);
        let mut args = creds.to_vec();
        args.extend(["pack", "-f", file, &target]);
        packed_digest(&run_ok(&d.path, &args))
    };
    let root = push("files.yaml", "example/files:v1");
    push("multi.yaml", "example/multi:v1");
    let mut args = creds.to_vec();
    args.extend(["-vvv", &t.registry.addr]);
    let p = Proxy::start(&d, &args);
    serves_the_contract(&p, "/example/files/v1", "/example/multi/v1", &root);
    // Unknown repository and tag: 404, with our words only.
    for path in ["/nope/repo/v1?title=a.txt", "/example/files/v9?title=a.txt"] {
        let g = curl(&p.url(path), &[]);
        assert_eq!(g.status, 404, "{path}: {}", g.text());
        assert!(
            !g.text().contains("MANIFEST_UNKNOWN") && !g.text().contains("unknown"),
            "{}",
            g.text()
        );
    }
    // The upstream refusing a wrong password: 502, and nothing of the secret anywhere.
    let p2 = Proxy::start(
        &d,
        &[
            "--plain-http",
            "-u",
            "bob",
            "-p",
            "wrong-secret-42",
            "-vvv",
            &t.registry.addr,
        ],
    );
    let g = curl(&p2.url("/example/files/v1?title=a.txt"), &[]);
    assert_eq!(g.status, 502, "{}", g.text());
    for (what, text) in [("body", g.text()), ("log", p.log()), ("log", p2.log())] {
        for secret in [
            "hunter2-secret",
            "wrong-secret-42",
            "Ym9i",
            "bad credentials",
        ] {
            assert!(!text.contains(secret), "{what} holds {secret}: {text}");
        }
    }
}

#[test]
fn an_upstream_that_is_down_is_a_502_and_methods_are_read_only() {
    let d = TestDir::new();
    // Nothing listens on port 9 of 127.0.0.1 here (discard, not served).
    let p = Proxy::start(&d, &["--plain-http", "127.0.0.1:9"]);
    let g = curl(&p.url("/repo/v1?title=a.txt"), &[]);
    assert_eq!(g.status, 502, "{}", g.text());
    assert!(g.json()["error"]
        .as_str()
        .expect("error")
        .contains("could not be reached"));
    for method in ["PUT", "DELETE", "PATCH"] {
        let g = curl(&p.url("/repo/v1?title=a.txt"), &["-X", method]);
        assert_eq!(g.status, 405, "{method}");
    }
}

/// A re-tagged artifact is served after the tag TTL, never before; a digest reference
/// keeps being served (its manifest from the cache, even after it left the upstream).
#[test]
fn tags_are_asked_again_after_their_ttl_digests_never() {
    let d = TestDir::new();
    write_artifacts(&d);
    let first = packed_digest(&run_ok(
        &d.path,
        &["pack", "-f", "files.yaml", "oci://./lay:app:v1"],
    ));
    let keeps = Proxy::start(&d, &["--tag-ttl", "3600", "oci://lay"]);
    let follows = Proxy::start(&d, &["--tag-ttl", "1", "oci://lay"]);
    for p in [&keeps, &follows] {
        assert_eq!(curl(&p.url("/app/v1?title=a.txt"), &[]).text(), "alpha\n");
        let g = curl(&p.url(&format!("/app/{first}?title=a.txt")), &[]);
        assert_eq!(g.text(), "alpha\n");
    }
    d.write("a.txt", "changed\n");
    run_ok(&d.path, &["pack", "-f", "files.yaml", "oci://./lay:app:v1"]);
    // The old manifest leaves the layout; its layers stay (the other files are the same).
    let old = d.join("lay/blobs/sha256").join(&first[7..]);
    std::fs::remove_file(&old).expect("remove the old manifest");
    assert_eq!(
        curl(&keeps.url("/app/v1?title=a.txt"), &[]).text(),
        "alpha\n"
    );
    let g = curl(&keeps.url(&format!("/app/{first}?title=big.bin")), &[]);
    assert_eq!((g.status, g.body.len()), (200, 1000));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while curl(&follows.url("/app/v1?title=a.txt"), &[]).text() != "changed\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "the new tag never showed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A blob whose bytes are not its digest's: curl sees the connection cut (a transfer
/// error), never a complete 200 body — from a layout and from a misbehaving registry.
#[test]
fn corrupted_blobs_are_cut_before_their_last_byte() {
    let d = TestDir::new();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(d.join("data.bin"), &data).expect("data");
    d.write("p.yaml", "items:\n- from: file://data.bin\n");
    let root = packed_digest(&run_ok(
        &d.path,
        &["pack", "-f", "p.yaml", "oci://./lay:v1"],
    ));
    let layer = sha256(&data);
    let path = d.join("lay/blobs/sha256").join(&layer[7..]);
    let mut bad = data.clone();
    bad[299_999] ^= 1;
    std::fs::write(&path, &bad).expect("corrupt");
    d.write("small.txt", "small-original");
    d.write("s.yaml", "items:\n- from: file://small.txt\n");
    run_ok(&d.path, &["pack", "-f", "s.yaml", "oci://./lay:small"]);
    let small = d
        .join("lay/blobs/sha256")
        .join(&sha256(b"small-original")[7..]);
    std::fs::write(&small, "small-CORRUPTd").expect("corrupt");
    let p = Proxy::start(&d, &["oci://lay"]);
    let g = curl(&p.url("/v1?title=data.bin"), &[]);
    assert_ne!(g.code, 0, "curl completed a wrong body");
    assert!(g.body.len() < data.len(), "{} bytes arrived", g.body.len());
    // Found by a hostile round: a range delivered the corrupted bytes. The whole file as a
    // range is cut like a GET; a part is served only after the whole blob checked out; a
    // small file's range comes from its verified bytes.
    let g = curl(&p.url("/v1?title=data.bin"), &["-r", "0-"]);
    assert_ne!(g.code, 0, "a complete 206 of a wrong blob");
    assert!(g.body.len() < data.len());
    for range in ["299990-299999", "-10", "0-99"] {
        let g = curl(&p.url("/v1?title=data.bin"), &["-r", range]);
        assert_eq!(g.status, 502, "{range}: {}", g.text());
    }
    let g = curl(&p.url("/small?title=small.txt"), &["-r", "0-"]);
    assert_eq!(g.status, 502, "{}", g.text());
    let g = curl(&p.url("/small?title=small.txt"), &["-I"]);
    assert_eq!(g.status, 502, "HEAD answers as GET would");
    // A registry that serves the manifest right and the blob wrong.
    let manifest = std::fs::read(d.join("lay/blobs/sha256").join(&root[7..])).expect("manifest");
    let (m, l) = (manifest.clone(), bad.clone());
    let (root2, layer2) = (root.clone(), layer.clone());
    let server = HttpServer::with_handler(move |req| {
        let path = req.path.as_str();
        if path == "/v2/" {
            Response::status(200)
        } else if path == "/v2/repo/manifests/v1" || path == format!("/v2/repo/manifests/{root2}") {
            // HEAD without a digest: the client reads the manifest and hashes it.
            let r = Response::status(200)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json");
            if req.method == "HEAD" {
                r
            } else {
                r.body(m.clone())
            }
        } else if path == format!("/v2/repo/blobs/{layer2}") {
            Response::status(200).body(l.clone())
        } else {
            Response::status(404)
        }
    });
    let p = Proxy::start(&d, &["--plain-http", &server.addr]);
    let g = curl(&p.url("/repo/v1?title=data.bin"), &[]);
    assert_ne!(g.code, 0, "curl completed a wrong body: {}", g.status);
    assert!(g.body.len() < data.len(), "{} bytes arrived", g.body.len());
    let g = curl(&p.url("/repo/v1?title=data.bin"), &["-r", "0-"]);
    assert_ne!(g.code, 0, "a complete 206 of a wrong blob");
    let g = curl(&p.url("/repo/v1?title=data.bin"), &["-r", "100-199"]);
    assert_eq!(g.status, 502, "{}", g.text());
}

/// SIGTERM during a 1 GiB download: the download completes, new connections are refused,
/// and the proxy exits 0 once it is done.
#[test]
fn sigterm_lets_a_download_finish_and_refuses_new_ones() {
    let d = TestDir::new();
    let big = std::fs::File::create(d.join("big.bin")).expect("big");
    big.set_len(1 << 30).expect("sparse 1 GiB");
    d.write("p.yaml", "items:\n- from: file://big.bin\n");
    run_ok(&d.path, &["-q", "pack", "-f", "p.yaml", "oci://./lay:v1"]);
    let mut p = Proxy::start(&d, &["oci://lay"]);
    let mut download = Command::new("curl")
        .args([
            "-sS",
            "--limit-rate",
            "200M",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
        ])
        .arg(p.url("/v1?title=big.bin"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    // Once bytes flow, SIGTERM.
    let log = p.log.clone();
    let started = || {
        let o = Command::new("ss")
            .args(["-tn", "state", "established"])
            .output()
            .expect("ss");
        let port = p.base.rsplit(':').next().unwrap_or_default().to_string();
        String::from_utf8_lossy(&o.stdout).contains(&format!(":{port} "))
    };
    wait_while_running(&mut download, "the download starting", started);
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&p.child),
        rustix::process::Signal::TERM,
    )
    .expect("SIGTERM");
    // New connections are refused while the download goes on.
    let refused = || curl(&p.url("/healthz"), &[]).code == 7;
    wait_while_running(&mut download, "new connections refused", refused);
    let out = download.wait_with_output().expect("curl");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("200 {}", 1u64 << 30)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = p.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

/// Found by a hostile round: clients that read nothing made the proxy buffer for them
/// without bound. Each connection buffers a bounded amount, and one whose client takes
/// nothing for a minute is closed; the proxy's peak memory (GNU time) stays bounded.
#[test]
fn stalled_clients_are_dropped_and_memory_stays_bounded() {
    use std::io::Write as _;
    let d = TestDir::new();
    let big = std::fs::File::create(d.join("big.bin")).expect("big");
    big.set_len(64 << 20).expect("sparse 64 MiB");
    d.write("p.yaml", "items:\n- from: file://big.bin\n");
    run_ok(&d.path, &["-q", "pack", "-f", "p.yaml", "oci://./lay:v1"]);
    let log = d.join("time.log");
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_oci-packer"))
        .args(["-q", "proxy", "--addr", "127.0.0.1:0", "oci://lay"])
        .current_dir(&d.path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("proxy");
    let addr = served_address(&mut child, &log);
    // 64 clients ask for 64 MiB each and read nothing.
    let clients: Vec<std::net::TcpStream> = (0..64)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&addr).expect("connect");
            c.write_all(b"GET /v1?title=big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("request");
            c
        })
        .collect();
    let port = addr.rsplit(':').next().expect("port").to_string();
    let established = || {
        let o = Command::new("ss")
            .args(["-tnH", "state", "established", "sport", "="])
            .arg(format!(":{port}"))
            .output()
            .expect("ss");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).lines().count()
    };
    wait_while_running(&mut child, "the clients connected", || established() == 64);
    // The proxy closes every stalled connection (after a minute without progress).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while established() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} connections still open",
            established()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(clients.len(), 64);
    drop(clients);
    // The proxy is the child of GNU time, which reports its peak when it exits.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
        .expect("children");
    let proxy: i32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("pid");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(proxy).expect("pid"),
        rustix::process::Signal::TERM,
    )
    .expect("SIGTERM");
    assert!(child.wait().expect("wait").success());
    let peak_kib: u64 = std::fs::read_to_string(&log)
        .expect("time")
        .trim()
        .lines()
        .last()
        .and_then(|l| l.parse().ok())
        .expect("peak");
    assert!(peak_kib < 128 << 10, "peak RSS {} MiB", peak_kib >> 10);
}

/// Found by a hostile round: an upstream that never answers held a request for minutes
/// (a timeout per retry) and then said 502; it is 504 within the network timeout.
#[test]
fn a_hanging_upstream_is_a_504_within_the_timeout() {
    let d = TestDir::new();
    let server = HttpServer::with_handler(|req| {
        if req.path == "/v2/" {
            return Response::status(200);
        }
        std::thread::sleep(std::time::Duration::from_secs(120));
        Response::status(404)
    });
    let p = Proxy::start(&d, &["--plain-http", "--timeout", "2", &server.addr]);
    let g = curl(&p.url("/repo/v1?title=a.txt"), &[]);
    assert_eq!(g.status, 504, "{}", g.text());
    assert!(g.json()["error"]
        .as_str()
        .expect("error")
        .contains("did not answer"));
}
