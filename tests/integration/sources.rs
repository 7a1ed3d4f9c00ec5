//! SPEC §2.2–§2.4: what each source produces, archives, downloads, and their failures.

use std::io::Read;

use serde_json::{json, Value};

use crate::util::*;

/// Packs `yaml` in `d` into `d/out:v1` and returns the root manifest JSON.
fn pack_manifest(d: &TestDir, yaml: &str) -> Value {
    d.write("pack.yaml", yaml);
    let o = run(&d.path, &["pack", "-f", "pack.yaml", "oci://out:v1"], &[]);
    let digest = packed_digest(&o);
    skopeo_reads(&d.join("out"), "v1");
    blob_json(&d.join("out"), &digest)
}

/// Runs a pack that must fail; returns stderr and checks the existing layout is unchanged.
fn pack_fails(d: &TestDir, yaml: &str, code: i32) -> String {
    if !d.join("out/index.json").exists() {
        d.write("seed.txt", "seed");
        d.write("seed.yaml", "items:\n  - from: file://seed.txt\n");
        pack_ok(d, "seed.yaml", "oci://out:seed");
    }
    let before = snapshot(&d.join("out"));
    d.write("pack.yaml", yaml);
    let o = run(&d.path, &["pack", "-f", "pack.yaml", "oci://out:v1"], &[]);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(
        snapshot(&d.join("out")),
        before,
        "the layout changed after a failed pack"
    );
    stderr(&o)
}

fn layers(m: &Value) -> Vec<Value> {
    m["layers"].as_array().expect("layers").clone()
}

#[test]
fn file_source_title_type_and_inference() {
    let d = TestDir::new();
    d.write("bin/tool", "#!/bin/sh\n");
    d.write("schema.json", "{}\n");
    d.write("doc.txt", "doc");
    let m = pack_manifest(
        &d,
        "items:\n\
         \x20 - from: file://bin/tool\n\
         \x20 - from: file://schema.json\n\
         \x20   type: application/vnd.example.schema\n\
         \x20   annotations: {description: \"the schema\"}\n\
         \x20 - from: file://doc.txt\n\
         \x20   annotations: {org.opencontainers.image.title: renamed.txt}\n",
    );
    let l = layers(&m);
    assert_eq!(l[0]["mediaType"], "application/octet-stream");
    assert_eq!(
        l[0]["annotations"]["org.opencontainers.image.title"],
        "tool"
    );
    assert_eq!(l[1]["mediaType"], "application/vnd.example.schema");
    assert_eq!(l[1]["annotations"]["description"], "the schema");
    assert_eq!(
        l[1]["annotations"]["org.opencontainers.image.title"],
        "schema.json"
    );
    assert_eq!(l[2]["mediaType"], "text/plain");
    assert_eq!(
        l[2]["annotations"]["org.opencontainers.image.title"], "renamed.txt",
        "a user title wins"
    );
    assert_eq!(
        blob(&d.join("out"), l[0]["digest"].as_str().expect("d")),
        b"#!/bin/sh\n"
    );
    assert_eq!(l[0]["size"], 10);
}

#[test]
fn dir_source_one_layer_per_file_in_byte_order() {
    let d = TestDir::new();
    d.write("data/b", "b");
    d.write("data/a.txt", "a");
    d.write("data/a/z.json", "{}");
    d.write("data/A", "A");
    d.write("data/.hidden", "h");
    d.mkdir("data/empty/deeper");
    let m = pack_manifest(
        &d,
        "items:\n  - from: dir://./data/\n    type: application/vnd.example.data\n    annotations: {k: v}\n",
    );
    let l = layers(&m);
    let titles: Vec<&str> = l
        .iter()
        .map(|x| {
            x["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .expect("t")
        })
        .collect();
    assert_eq!(titles, [".hidden", "A", "a.txt", "a/z.json", "b"]);
    for x in &l {
        assert_eq!(x["annotations"]["io.arenadata.oci-packer.dir"], "data");
        assert_eq!(x["annotations"]["k"], "v");
        assert_eq!(x["mediaType"], "application/vnd.example.data");
    }
    let m = pack_manifest(&d, "items:\n  - from: dir://data\n");
    let l = layers(&m);
    let types: Vec<&str> = l
        .iter()
        .map(|x| x["mediaType"].as_str().expect("mt"))
        .collect();
    assert_eq!(types[2], "text/plain");
    assert_eq!(types[3], "application/json");
}

#[test]
fn dir_symlinks_inside_are_followed_outside_are_errors() {
    let d = TestDir::new();
    d.write("data/real.txt", "real");
    std::os::unix::fs::symlink("real.txt", d.join("data/link.txt")).expect("symlink");
    let m = pack_manifest(&d, "items:\n  - from: dir://data/\n");
    let l = layers(&m);
    assert_eq!(l.len(), 2);
    assert_eq!(
        l[0]["annotations"]["org.opencontainers.image.title"],
        "link.txt"
    );
    assert_eq!(
        l[0]["digest"], l[1]["digest"],
        "a link inside is packed with its target's bytes"
    );

    d.write("secret.txt", "secret");
    std::os::unix::fs::symlink("../secret.txt", d.join("data/escape")).expect("symlink");
    let err = pack_fails(&d, "items:\n  - from: dir://data/\n", 1);
    assert!(
        err.contains("escape") && err.contains("resolves outside the directory"),
        "{err}"
    );
}

#[test]
fn special_files_are_errors() {
    let d = TestDir::new();
    d.write("data/a.txt", "a");
    let fifo = d.join("data/pipe");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(ok.success());
    let err = pack_fails(&d, "items:\n  - from: dir://data/\n", 1);
    assert!(
        err.contains("pipe") && err.contains("socket, FIFO or device"),
        "{err}"
    );
}

#[test]
fn source_kind_mismatches_and_missing_files() {
    let d = TestDir::new();
    d.write("adir/x", "x");
    d.write("afile", "f");
    let err = pack_fails(&d, "items:\n  - from: file://adir\n", 1);
    assert!(
        err.contains("items[0] (file://adir)") && err.contains("is a directory (use dir://"),
        "{err}"
    );
    let err = pack_fails(&d, "items:\n  - from: dir://afile\n", 1);
    assert!(err.contains("is not a directory (use file://"), "{err}");
    let err = pack_fails(&d, "items:\n  - from: file://nope.bin\n", 1);
    assert!(
        err.contains("file://nope.bin: cannot read") && err.contains("nope.bin"),
        "{err}"
    );
    // Invalid pack files are exit 2 and touch nothing either.
    let err = pack_fails(
        &d,
        "items:\n  - from: file://afile\n    platform: linux-amd64\n",
        2,
    );
    assert!(
        err.contains("pack.yaml:3:15: items[0].platform: \"linux-amd64\": expected os/arch"),
        "{err}"
    );
    let err = pack_fails(&d, "items:\n  - frm: file://afile\n", 2);
    assert!(err.contains("unknown key \"frm\""), "{err}");
    let err = pack_fails(&d, "items:\n  - from: gopher://x\n", 2);
    assert!(err.contains("unknown scheme \"gopher://\""), "{err}");
    let err = pack_fails(&d, "items:\n  - from: file://${OCI_PACKER_NOT_SET}\n", 2);
    assert!(err.contains("OCI_PACKER_NOT_SET is not set"), "{err}");
    let err = pack_fails(&d, "items: [\n", 2);
    assert!(err.contains("pack.yaml:2:1: YAML syntax error"), "{err}");
    let err = pack_fails(&d, "items:\n  - type: text/plain\n", 2);
    assert!(err.contains("missing required key \"from\""), "{err}");
}

fn tar_entries(data: &[u8]) -> Vec<(String, u32, u64, u64, u64, Option<String>)> {
    let mut ar = tar::Archive::new(data);
    ar.entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            let h = e.header();
            (
                e.path().expect("path").to_string_lossy().into_owned(),
                h.mode().expect("mode"),
                h.mtime().expect("mtime"),
                h.uid().expect("uid"),
                h.gid().expect("gid"),
                e.link_name()
                    .expect("link")
                    .map(|l| l.to_string_lossy().into_owned()),
            )
        })
        .collect()
}

fn make_tree(d: &TestDir, root: &str, mode_file: u32) {
    use std::os::unix::fs::PermissionsExt;
    d.write(&format!("{root}/site/index.html"), "<h1>hi</h1>");
    d.write(&format!("{root}/site/bin/run.sh"), "#!/bin/sh\necho run\n");
    d.write(&format!("{root}/site/css/a.css"), "a{}");
    d.mkdir(&format!("{root}/site/empty"));
    std::os::unix::fs::symlink("index.html", d.join(&format!("{root}/site/home.html")))
        .expect("symlink");
    let set = |p: &str, m: u32| {
        std::fs::set_permissions(d.join(p), std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    set(&format!("{root}/site/bin/run.sh"), 0o750);
    set(&format!("{root}/site/index.html"), mode_file);
    set(&format!("{root}/site/css/a.css"), mode_file);
}

#[test]
fn archives_are_deterministic_across_mtimes_owners_and_paths() {
    let d = TestDir::new();
    make_tree(&d, "one", 0o644);
    make_tree(&d, "other/checkout", 0o600);
    // Different mtimes and, when we may, different owners in the second checkout.
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    for f in ["site/index.html", "site/css/a.css", "site/bin/run.sh"] {
        let file = std::fs::File::options()
            .write(true)
            .open(d.join(&format!("other/checkout/{f}")))
            .expect("open");
        file.set_modified(old).expect("mtime");
        if is_root() {
            std::os::unix::fs::chown(
                d.join(&format!("other/checkout/{f}")),
                Some(1234),
                Some(4321),
            )
            .expect("chown");
        }
    }
    for (archive, mt) in [
        ("tar", "application/vnd.oci.image.layer.v1.tar"),
        ("tar+gzip", "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("tar+zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ] {
        let m1 = pack_manifest(
            &d,
            &format!("items:\n  - from: dir://one/site\n    archive: {archive}\n"),
        );
        let m2 = pack_manifest(
            &d,
            &format!("items:\n  - from: dir://other/checkout/site/\n    archive: {archive}\n"),
        );
        let (l1, l2) = (&layers(&m1)[0], &layers(&m2)[0]);
        assert_eq!(
            l1["digest"], l2["digest"],
            "{archive}: digest differs between checkouts"
        );
        assert_eq!(l1["mediaType"], mt);
        assert_eq!(l1["annotations"]["org.opencontainers.image.title"], "site");
        // `oras pull` gunzips what is marked for unpacking: only gzip layers are.
        let unpack = if archive == "tar+gzip" {
            json!("true")
        } else {
            Value::Null
        };
        assert_eq!(l1["annotations"]["io.deis.oras.content.unpack"], unpack);
        let data = blob(&d.join("out"), l1["digest"].as_str().expect("d"));
        let mut tar_bytes = Vec::new();
        match archive {
            "tar" => tar_bytes = data.clone(),
            "tar+gzip" => {
                assert_eq!(&data[4..8], &[0, 0, 0, 0], "gzip header carries no mtime");
                assert_eq!(data[3] & 0x08, 0, "gzip header carries no file name");
                flate2::read::GzDecoder::new(&data[..])
                    .read_to_end(&mut tar_bytes)
                    .expect("gunzip");
            }
            _ => tar_bytes = zstd::decode_all(&data[..]).expect("unzstd"),
        }
        let tar_digest = format!("sha256:{}", sha256_hex(&tar_bytes));
        assert_eq!(l1["annotations"]["io.deis.oras.content.digest"], tar_digest);
        let entries = tar_entries(&tar_bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "site/",
                "site/bin/",
                "site/bin/run.sh",
                "site/css/",
                "site/css/a.css",
                "site/empty/",
                "site/home.html",
                "site/index.html"
            ]
        );
        for (name, mode, mtime, uid, gid, link) in &entries {
            assert_eq!((*mtime, *uid, *gid), (0, 0, 0), "{name}");
            let want = match name.as_str() {
                n if n.ends_with('/') || n.ends_with(".sh") => 0o755,
                "site/home.html" => 0o777,
                _ => 0o644,
            };
            assert_eq!(*mode, want, "{name}");
            assert_eq!(
                link.as_deref(),
                (name == "site/home.html").then_some("index.html")
            );
        }
    }
    // SOURCE_DATE_EPOCH sets the entries' mtime (and so changes the digest, deterministically).
    d.write(
        "pack.yaml",
        "items:\n  - from: dir://one/site\n    archive: tar\n",
    );
    let run_with_epoch = || {
        let o = run(
            &d.path,
            &["pack", "-f", "pack.yaml", "oci://out:epoch"],
            &[("SOURCE_DATE_EPOCH", "1700000000")],
        );
        let root = blob_json(&d.join("out"), &packed_digest(&o));
        let digest = root["layers"][0]["digest"].as_str().expect("d").to_string();
        (digest.clone(), tar_entries(&blob(&d.join("out"), &digest)))
    };
    let (a, entries) = run_with_epoch();
    assert_eq!(run_with_epoch().0, a);
    assert!(entries.iter().all(|e| e.2 == 1_700_000_000));
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[test]
fn http_source_download_title_conditional_reuse() {
    let srv = HttpServer::start();
    srv.route(
        "/files/tool.tar.gz?x=1",
        Reply::Body {
            body: b"tarball".to_vec(),
            etag: "\"v1\"".into(),
        },
    );
    srv.route(
        "/files/tool.tar.gz",
        Reply::Body {
            body: b"tarball".to_vec(),
            etag: "\"v1\"".into(),
        },
    );
    let d = TestDir::new();
    let yaml = format!("items:\n  - from: {}\n", srv.url("/files/tool.tar.gz"));
    let tmp = d.mkdir("dl");
    d.write("pack.yaml", &yaml);
    let args = ["--tmp-dir", "dl", "pack", "-f", "pack.yaml", "oci://out:v1"];
    let digest = packed_digest(&run(&d.path, &args, &[]));
    let m = blob_json(&d.join("out"), &digest);
    let l = &layers(&m)[0];
    assert_eq!(
        l["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        l["annotations"]["org.opencontainers.image.title"],
        "tool.tar.gz"
    );
    assert_eq!(
        blob(&d.join("out"), l["digest"].as_str().expect("d")),
        b"tarball"
    );
    assert!(
        d.join("xdg-cache/oci-packer/http").is_dir(),
        "downloads go to the user's private cache"
    );
    assert_eq!(
        std::fs::read_dir(&tmp).expect("tmp").count(),
        0,
        "nothing is left in --tmp-dir"
    );
    // Second run: the server answers 304 to If-None-Match and the download is re-used.
    assert_eq!(packed_digest(&run(&d.path, &args, &[])), digest);
    assert_eq!(srv.statuses("/files/tool.tar.gz"), [200, 304]);
    let seen = srv.seen.lock().expect("lock");
    assert_eq!(
        seen[1].headers.get("if-none-match").map(String::as_str),
        Some("\"v1\"")
    );
}

#[test]
fn http_retries_on_5xx_and_cut_connections_and_follows_redirects() {
    let srv = HttpServer::start();
    srv.route(
        "/flaky.bin",
        Reply::FailFirst {
            n: 2,
            body: b"flaky".to_vec(),
        },
    );
    srv.route(
        "/cut.bin",
        Reply::CutOnce {
            body: vec![7u8; 100_000],
            cut: 1000,
        },
    );
    srv.route(
        "/old/location.json",
        Reply::Redirect("/new/location.json".into()),
    );
    srv.route(
        "/new/location.json",
        Reply::Body {
            body: b"{}".to_vec(),
            etag: "\"e\"".into(),
        },
    );
    let d = TestDir::new();
    let m = pack_manifest(
        &d,
        &format!(
            "items:\n  - from: {}\n  - from: {}\n  - from: {}\n",
            srv.url("/flaky.bin"),
            srv.url("/cut.bin"),
            srv.url("/old/location.json")
        ),
    );
    let l = layers(&m);
    assert_eq!(srv.statuses("/flaky.bin"), [500, 500, 200]);
    assert_eq!(
        srv.statuses("/cut.bin"),
        [200, 200],
        "a cut body is downloaded again"
    );
    assert_eq!(l[1]["size"], 100_000);
    assert_eq!(
        l[2]["annotations"]["org.opencontainers.image.title"],
        "location.json"
    );
    assert_eq!(l[2]["mediaType"], "application/json");
}

#[test]
fn http_404_and_digest_pins() {
    let srv = HttpServer::start();
    srv.route(
        "/data.bin",
        Reply::Body {
            body: b"data".to_vec(),
            etag: "\"d\"".into(),
        },
    );
    let d = TestDir::new();
    let err = pack_fails(
        &d,
        &format!("items:\n  - from: {}\n", srv.url("/missing.bin")),
        1,
    );
    assert!(
        err.contains(&format!("GET {}: HTTP 404", srv.url("/missing.bin"))),
        "{err}"
    );
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = pack_fails(
        &d,
        &format!(
            "items:\n  - from: {}\n    digest: {wrong}\n",
            srv.url("/data.bin")
        ),
        1,
    );
    assert!(
        err.contains(&format!("items[0].digest pins {wrong}"))
            && err.matches("items[0]").count() == 2,
        "{err}"
    );
    let right = format!("sha256:{}", sha256_hex(b"data"));
    let m = pack_manifest(
        &d,
        &format!(
            "items:\n  - from: {}\n    digest: {right}\n",
            srv.url("/data.bin")
        ),
    );
    assert_eq!(layers(&m)[0]["digest"], right.as_str());
}

/// Large files are copied into the layout while they are hashed (one pass) and adopted by
/// rename; nothing of that copy survives a pack that fails later.
#[test]
fn large_files_are_spooled_and_cleaned_up_on_failure() {
    let d = TestDir::new();
    let big: Vec<u8> = (0..9u32 << 20).map(|i| (i % 253) as u8).collect();
    d.write("big.bin", &big);
    d.write("tree/a.txt", "a");
    let err = pack_fails(
        &d,
        "items:\n  - from: file://big.bin\n  - from: file://missing.txt\n",
        1,
    );
    assert!(err.contains("missing.txt"), "{err}");
    let m = pack_manifest(
        &d,
        "items:\n  - from: file://big.bin\n  - from: dir://tree\n    archive: tar\n",
    );
    assert_eq!(
        blob(
            &d.join("out"),
            m["layers"][0]["digest"].as_str().expect("d")
        ),
        big
    );
    let leftovers: Vec<String> = std::fs::read_dir(d.join("out/blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
}

/// An HTTPS server on 127.0.0.1 (Python's http.server with a certificate from our test CA):
/// `/file.txt` answers "secure", `/down` redirects to `redirect`.
struct HttpsServer {
    port: u16,
    child: std::process::Child,
}

impl HttpsServer {
    fn start(cert: &std::path::Path, key: &std::path::Path, redirect: &str) -> HttpsServer {
        use std::io::BufRead;
        let script = r#"
import http.server, ssl, sys
cert, key, redirect = sys.argv[1:4]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/down":
            self.send_response(302)
            self.send_header("Location", redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"secure"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_port, flush=True)
srv.serve_forever()
"#;
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(cert)
            .arg(key)
            .arg(redirect)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port");
        HttpsServer {
            port: line.trim().parse().expect("port number"),
            child,
        }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_downloads_verify_certificates_and_never_redirect_to_http() {
    let certs = TestDir::new();
    let (ca, cert, key) = test_certificates(&certs);
    let plain = HttpServer::start();
    plain.route(
        "/x.bin",
        Reply::Body {
            body: b"plain".to_vec(),
            etag: "\"p\"".into(),
        },
    );
    let https = HttpsServer::start(&cert, &key, &plain.url("/x.bin"));
    let d = TestDir::new();
    let ca = ca.to_str().expect("utf8");
    d.write(
        "ok.yaml",
        format!(
            "items:\n  - from: https://127.0.0.1:{}/file.txt\n",
            https.port
        ),
    );
    d.write(
        "down.yaml",
        format!("items:\n  - from: https://127.0.0.1:{}/down\n", https.port),
    );
    let digest = packed_digest(&run(
        &d.path,
        &["--ca-file", ca, "pack", "-f", "ok.yaml", "oci://out:v1"],
        &[],
    ));
    let m = blob_json(&d.join("out"), &digest);
    assert_eq!(
        blob(
            &d.join("out"),
            m["layers"][0]["digest"].as_str().expect("d")
        ),
        b"secure"
    );
    let o = run(&d.path, &["pack", "-f", "ok.yaml", "oci://out:v2"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("certificate"),
        "unknown CA refused: {}",
        stderr(&o)
    );
    let o = run(
        &d.path,
        &["--ca-file", ca, "pack", "-f", "down.yaml", "oci://out:v3"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("refusing a redirect from https to http"),
        "{}",
        stderr(&o)
    );
    assert!(
        plain.statuses("/x.bin").is_empty(),
        "the http URL was never fetched"
    );
}

/// A tree where each level holds two symlinks to the next level's directory would make a
/// walk visit 2^depth directories: each directory is entered once per walk, and a second
/// way into it is an error naming both paths — in bounded memory, at once. Loops to an
/// ancestor and a second link to a sibling are the same fault.
#[test]
fn directories_reached_twice_through_symlinks_are_refused() {
    let d = TestDir::new();
    // data/l0/{a,b} -> l1, data/l0/l1/{a,b} -> l2, … twenty levels deep.
    let mut dir = d.join("data/l0");
    for level in 0..20 {
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("f.txt"), format!("{level}")).expect("write");
        let next = format!("l{}", level + 1);
        if level < 19 {
            for link in ["a", "b"] {
                std::os::unix::fs::symlink(&next, dir.join(link)).expect("symlink");
            }
        }
        dir = dir.join(next);
    }
    d.write("pack.yaml", "items:\n  - from: dir://data/l0\n");
    let (o, rss) = run_measured(&d.path, &["pack", "-f", "pack.yaml", "oci://out:v1"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("/b: leads to the directory already packed as") && err.contains("data/l0/a"),
        "{err}"
    );
    assert!(rss < 256 << 10, "peak RSS {rss} KiB");

    // A link to an ancestor, and a second way into a sibling (`current -> v1`).
    for (name, link, target, expect) in [
        (
            "loop",
            "v1/up",
            "..",
            "data/loop/v1/up: leads to the directory already packed as",
        ),
        (
            "sibling",
            "current",
            "v1",
            "data/sibling/v1: leads to the directory already packed as",
        ),
    ] {
        let dir = d.join(&format!("data/{name}"));
        std::fs::create_dir_all(dir.join("v1")).expect("mkdir");
        std::fs::write(dir.join("v1/x"), "x").expect("write");
        std::os::unix::fs::symlink(target, dir.join(link)).expect("symlink");
        let err = pack_fails(&d, &format!("items:\n  - from: dir://data/{name}\n"), 1);
        assert!(err.contains(expect), "{name}: {err}");
    }
    // With archive:, links stay links and nothing is entered twice.
    d.write(
        "pack.yaml",
        "items:\n  - from: dir://data/sibling\n    archive: tar\n",
    );
    packed_digest(&run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://out:arch"],
        &[],
    ));
}

/// `io.arenadata.oci-packer.dir` never holds `..` or an absolute path: the cleaned path
/// relative to the pack file when the directory is inside it, else its base name.
#[test]
fn the_dir_annotation_never_leaves_the_pack_files_directory() {
    let d = TestDir::new();
    d.write("outside/tools/t.txt", "t");
    d.write("proj/inside/sub/s.txt", "s");
    let inside_abs = d.join("proj/inside/sub");
    d.write(
        "proj/pack.yaml",
        format!(
            "items:\n  - from: dir://../outside/tools\n  - from: dir://{}\n  - from: dir://./inside/../inside/sub/\n",
            inside_abs.display()
        ),
    );
    let o = run(
        &d.join("proj"),
        &["pack", "-f", "pack.yaml", "oci://out:v1"],
        &[],
    );
    let digest = packed_digest(&o);
    let m = blob_json(&d.join("proj/out"), &digest);
    let dirs: Vec<String> = layers(&m)
        .iter()
        .map(|l| {
            l["annotations"]["io.arenadata.oci-packer.dir"]
                .as_str()
                .expect("dir")
                .to_string()
        })
        .collect();
    assert_eq!(dirs, ["tools", "inside/sub", "inside/sub"]);
}

/// A directory tree deeper than the walk goes is an error, not a stack overflow.
#[test]
fn very_deep_directory_trees_are_refused() {
    let d = TestDir::new();
    let deep: std::path::PathBuf = std::iter::once("deep".to_string())
        .chain((0..420).map(|_| "d".to_string()))
        .collect();
    d.write(&format!("{}/f", deep.display()), "x");
    for item in [
        "  - from: dir://deep\n",
        "  - from: dir://deep\n    archive: tar\n",
    ] {
        d.write("pack.yaml", format!("items:\n{item}"));
        let (o, _) = run_measured(&d.path, &["pack", "-f", "pack.yaml", "oci://new:v1"], &[]);
        assert_eq!(o.status.code(), Some(1), "{item}: {}", stderr(&o));
        assert!(stderr(&o).contains("directories deep"), "{}", stderr(&o));
        assert!(
            !d.join("new").exists(),
            "a failed pack left the new layout's directory"
        );
    }
}
