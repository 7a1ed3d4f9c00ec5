//! A registry that misbehaves on purpose: 500s, 429 with Retry-After, connections
//! dropped mid-blob, content that does not match its digest. A real HTTP server on
//! 127.0.0.1 that speaks enough of the Distribution API to push to and pull from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::util::*;

#[derive(Default)]
struct State {
    blobs: HashMap<String, Vec<u8>>,
    manifests: HashMap<String, (Vec<u8>, String)>,
    uploads: usize,
    /// Upload PUTs to answer 500 before accepting.
    put_500: usize,
    /// Upload POSTs to answer 500 before opening sessions.
    post_500: usize,
    /// Upload PATCHes to answer 500 before accepting.
    patch_500: usize,
    /// Upload PUTs to answer 429 (Retry-After: 1) before accepting.
    put_429: usize,
    /// Blob GETs to cut off halfway.
    get_drop: usize,
    /// Serve blobs with one byte changed.
    wrong_digest: bool,
    /// Refuse a PUT that carries the blob (405), like registries that need PATCH.
    no_monolithic: bool,
    /// Refuse PATCHes larger than this (413).
    max_patch: Option<usize>,
    /// Announce this OCI-Chunk-Min-Length.
    min_chunk: Option<usize>,
    /// Bytes received per upload session.
    sessions: HashMap<String, Vec<u8>>,
    /// Sizes of the PATCHes accepted.
    patches: Vec<usize>,
    /// Refuse (500) every upload of this digest.
    fail_digest: Option<String>,
    /// Want this `Authorization` header on every /v2/ request (401 + Basic challenge).
    require_auth: Option<String>,
    /// Bearer tokens from `/token` (Basic `alice:pw` required), each good for this many
    /// requests before the registry answers 401 as if it had expired.
    token_life: Option<usize>,
    /// Tokens issued, and the requests each has served.
    tokens: Vec<usize>,
    /// Answer blob GETs with a redirect to this base URL (object storage on another host).
    redirect_blobs: Option<String>,
}

fn sha256(data: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data))
    )
}

fn handle(state: &Mutex<State>, req: &Request) -> Response {
    let mut s = state.lock().expect("lock");
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    if let Some(want) = &s.require_auth {
        if req.headers.get("authorization") != Some(want) {
            return Response::status(401).header("WWW-Authenticate", "Basic realm=\"fake\"");
        }
    }
    if let Some(life) = s.token_life {
        if path == "/token" {
            if req.headers.get("authorization").map(String::as_str) != Some("Basic YWxpY2U6cHc=") {
                return Response::status(401);
            }
            s.tokens.push(0);
            return Response::status(200)
                .body(format!("{{\"token\":\"t{}\"}}", s.tokens.len() - 1));
        }
        let presented = req
            .headers
            .get("authorization")
            .and_then(|h| h.strip_prefix("Bearer t"))
            .and_then(|n| n.parse::<usize>().ok());
        match presented {
            Some(n) if s.tokens.get(n).is_some_and(|used| *used < life) => s.tokens[n] += 1,
            _ => {
                let host = req.headers.get("host").cloned().unwrap_or_default();
                return Response::status(401).header(
                    "WWW-Authenticate",
                    &format!("Bearer realm=\"http://{host}/token\",service=\"fake\""),
                );
            }
        }
    }
    if path == "/v2/" {
        return Response::status(200).body("{}");
    }
    let rest = path.trim_start_matches("/v2/");
    let (repo, kind, reference) = if let Some(i) = rest.find("/blobs/uploads/") {
        (&rest[..i], "uploads", &rest[i + "/blobs/uploads/".len()..])
    } else if let Some(i) = rest.find("/blobs/") {
        (&rest[..i], "blobs", &rest[i + "/blobs/".len()..])
    } else if let Some(i) = rest.find("/manifests/") {
        (&rest[..i], "manifests", &rest[i + "/manifests/".len()..])
    } else {
        return Response::status(404);
    };
    match (req.method.as_str(), kind) {
        ("GET", "blobs") if s.redirect_blobs.is_some() && s.blobs.contains_key(reference) => {
            let to = format!(
                "{}/storage/{reference}",
                s.redirect_blobs.as_deref().unwrap_or("")
            );
            Response::status(307).header("Location", &to)
        }
        ("HEAD" | "GET", "blobs") => match s.blobs.get(reference).cloned() {
            None => Response::status(404),
            Some(mut data) => {
                if req.method == "GET" && s.wrong_digest {
                    data[0] ^= 0xff;
                }
                let mut r = Response::status(200)
                    .header("Docker-Content-Digest", reference)
                    .body(data);
                if req.method == "GET" && s.get_drop > 0 {
                    s.get_drop -= 1;
                    r.cut = Some(r.body.len() / 2);
                }
                r
            }
        },
        ("POST", "uploads") => {
            if s.post_500 > 0 {
                s.post_500 -= 1;
                return Response::status(500);
            }
            s.uploads += 1;
            let id = format!("u{}", s.uploads);
            s.sessions.insert(id.clone(), Vec::new());
            let mut r =
                Response::status(202).header("Location", &format!("/v2/{repo}/blobs/uploads/{id}"));
            if let Some(m) = s.min_chunk {
                r = r.header("OCI-Chunk-Min-Length", &m.to_string());
            }
            r
        }
        ("PATCH", "uploads") => {
            if s.patch_500 > 0 {
                s.patch_500 -= 1;
                return Response::status(500);
            }
            if s.max_patch.is_some_and(|m| req.body.len() > m) {
                return Response::status(413);
            }
            let have = s.sessions.get(reference).map_or(0, Vec::len);
            if let Some(range) = req.headers.get("content-range") {
                let start: usize = range
                    .split('-')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(usize::MAX);
                if start != have {
                    return Response::status(416);
                }
            }
            s.patches.push(req.body.len());
            s.sessions
                .entry(reference.to_string())
                .or_default()
                .extend_from_slice(&req.body);
            Response::status(202)
                .header("Location", &format!("/v2/{repo}/blobs/uploads/{reference}"))
        }
        ("PUT", "uploads") => {
            if s.put_500 > 0 {
                s.put_500 -= 1;
                return Response::status(500);
            }
            if s.put_429 > 0 {
                s.put_429 -= 1;
                return Response::status(429).header("Retry-After", "1");
            }
            if s.no_monolithic && !req.body.is_empty() {
                return Response::status(405)
                    .body(r#"{"errors":[{"code":"UNSUPPORTED","message":"use PATCH"}]}"#);
            }
            let digest = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("digest="))
                .unwrap_or("")
                .replace("%3A", ":");
            if s.fail_digest.as_deref() == Some(digest.as_str()) {
                return Response::status(500);
            }
            let mut data = s.sessions.get(reference).cloned().unwrap_or_default();
            data.extend_from_slice(&req.body);
            if sha256(&data) != digest {
                // Like Distribution, the session stays until it is cancelled or expires.
                return Response::status(400).body(
                    r#"{"errors":[{"code":"DIGEST_INVALID","message":"digest did not match"}]}"#,
                );
            }
            s.sessions.remove(reference);
            s.blobs.insert(digest.clone(), data);
            Response::status(201).header("Docker-Content-Digest", &digest)
        }
        ("DELETE", "uploads") => {
            s.sessions.remove(reference);
            Response::status(204)
        }
        ("HEAD" | "GET", "manifests") => match s.manifests.get(reference).cloned() {
            None => Response::status(404)
                .body(r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#),
            Some((data, mt)) => Response::status(200)
                .header("Content-Type", &mt)
                .header("Docker-Content-Digest", &sha256(&data))
                .body(data),
        },
        ("PUT", "manifests") => {
            let mt = req.headers.get("content-type").cloned().unwrap_or_default();
            let digest = sha256(&req.body);
            s.manifests
                .insert(reference.to_string(), (req.body.clone(), mt.clone()));
            s.manifests.insert(digest.clone(), (req.body.clone(), mt));
            Response::status(201).header("Docker-Content-Digest", &digest)
        }
        _ => Response::status(405),
    }
}

fn fake_registry() -> (HttpServer, Arc<Mutex<State>>) {
    let state: Arc<Mutex<State>> = Arc::default();
    let s = state.clone();
    (HttpServer::with_handler(move |req| handle(&s, req)), state)
}

fn setup(d: &TestDir) {
    d.write(
        "big.bin",
        (0..300_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    d.write("small.txt", "small");
    d.write(
        "pack.yaml",
        "items:\n  - from: file://big.bin\n  - from: file://small.txt\n",
    );
}

#[test]
fn pushes_retry_500_and_429_with_retry_after() {
    let (srv, state) = fake_registry();
    let d = TestDir::new();
    setup(&d);
    state.lock().expect("lock").put_500 = 2;
    state.lock().expect("lock").put_429 = 1;
    let target = format!("{}/flaky/a:v1", srv.addr);
    let digest = packed_digest(&run(
        &d.path,
        &[
            "--plain-http",
            "-j",
            "1",
            "pack",
            "-f",
            "pack.yaml",
            &target,
        ],
        &[],
    ));
    let statuses: Vec<u16> = srv
        .seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|s| s.path.contains("/blobs/uploads/u"))
        .map(|s| s.status)
        .collect();
    // An upload PUT is never re-sent into its session: the failed session is cancelled
    // (DELETE → 204) and the upload starts over in a new one.
    assert_eq!(
        &statuses[..7],
        [500, 204, 500, 204, 429, 204, 201],
        "{statuses:?}"
    );
    let s = state.lock().expect("lock");
    assert!(
        s.sessions.is_empty(),
        "no upload session left open: {:?}",
        s.sessions.keys()
    );
    assert_eq!(
        sha256(&s.manifests["v1"].0),
        digest,
        "tagged after the retries"
    );
}

#[test]
fn persistent_failures_fail_and_leave_no_tag() {
    let (srv, state) = fake_registry();
    let d = TestDir::new();
    setup(&d);
    state.lock().expect("lock").put_500 = 1000;
    let target = format!("{}/broken/a:v1", srv.addr);
    let o = run(
        &d.path,
        &["--plain-http", "pack", "-f", "pack.yaml", &target],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("500") && err.contains("PUT") && err.contains("/v2/broken/a/blobs/uploads/"),
        "{err}"
    );
    assert!(
        !state.lock().expect("lock").manifests.contains_key("v1"),
        "no tag after a failure"
    );
    // The failed session was cancelled.
    assert!(
        srv.seen
            .lock()
            .expect("lock")
            .iter()
            .any(|s| s.status == 204),
        "DELETE of the upload session"
    );
}

#[test]
fn downloads_cut_midway_are_retried_and_wrong_digests_are_refused() {
    let (srv, state) = fake_registry();
    let d = TestDir::new();
    setup(&d);
    let source = format!("{}/src/a:v1", srv.addr);
    let digest = packed_digest(&run(
        &d.path,
        &["--plain-http", "pack", "-f", "pack.yaml", &source],
        &[],
    ));
    // A connection dropped halfway through a blob: fetched again, the copy succeeds.
    state.lock().expect("lock").get_drop = 1;
    let o = run(
        &d.path,
        &["--plain-http", "copy", &source, "oci://out:v1"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(entry(&d.join("out"), "v1")["digest"], digest.as_str());
    assert_eq!(
        state.lock().expect("lock").get_drop,
        0,
        "the cut really happened"
    );
    skopeo_reads(&d.join("out"), "v1");
    // Content that does not match its digest: refused, and the layout is left as it was.
    d.write("other.txt", "other");
    d.write("other.yaml", "items:\n  - from: file://other.txt\n  - from: file://big.bin\n    type: application/x-other\n");
    let other = format!("{}/src/other:v1", srv.addr);
    let _ = packed_digest(&run(
        &d.path,
        &["--plain-http", "pack", "-f", "other.yaml", &other],
        &[],
    ));
    state.lock().expect("lock").wrong_digest = true;
    let before = snapshot(&d.join("out"));
    let o = run(
        &d.path,
        &["--plain-http", "copy", &other, "oci://out:v2"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("sha256:") && err.contains("not what its descriptor says"),
        "{err}"
    );
    let index: Value = read_json(&d.join("out/index.json"));
    assert_eq!(
        index["manifests"].as_array().expect("m").len(),
        1,
        "no v2 entry"
    );
    assert_eq!(
        snapshot(&d.join("out")),
        before,
        "the layout is byte for byte unchanged"
    );
}

/// A registry that refuses monolithic uploads gets one streamed PATCH; one that also caps
/// PATCH sizes gets chunks of its OCI-Chunk-Min-Length (or 4 MiB), in order.
#[test]
fn uploads_fall_back_to_patch_and_to_chunks() {
    let cases = [
        (None, None, None),
        (Some(5 << 20), None, Some(4 << 20)),
        (Some(5 << 20), Some(4_500_000), Some(4_500_000)),
    ];
    for (max_patch, min_chunk, expect_chunk) in cases {
        let (srv, state) = fake_registry();
        {
            let mut s = state.lock().expect("lock");
            s.no_monolithic = true;
            s.max_patch = max_patch;
            s.min_chunk = min_chunk;
        }
        let d = TestDir::new();
        let big: Vec<u8> = (0..10_000_000u32).map(|i| (i % 253) as u8).collect();
        d.write("big.bin", &big);
        d.write("pack.yaml", "items:\n  - from: file://big.bin\n");
        let target = format!("{}/chunky/a:v1", srv.addr);
        packed_digest(&run(
            &d.path,
            &["--plain-http", "pack", "-f", "pack.yaml", &target],
            &[],
        ));
        let s = state.lock().expect("lock");
        assert_eq!(
            s.blobs.get(&sha256(&big)),
            Some(&big),
            "the blob arrived whole"
        );
        let patches: Vec<usize> = s.patches.iter().copied().filter(|n| *n > 1000).collect();
        match expect_chunk {
            None => assert_eq!(patches, [big.len()], "one streamed PATCH"),
            Some(c) => {
                assert!(patches.len() >= 2, "{patches:?}");
                assert!(
                    patches[..patches.len() - 1].iter().all(|p| *p == c),
                    "{patches:?}"
                );
                assert_eq!(patches.iter().sum::<usize>(), big.len());
            }
        }
    }
}

/// A copy that fails halfway leaves the destination untagged; run again, it skips what
/// arrived and finishes.
#[test]
fn a_failed_copy_resumes() {
    let (srv, state) = fake_registry();
    let d = TestDir::new();
    setup(&d);
    let digest = pack_ok(&d, "pack.yaml", "oci://src:v1");
    let big = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            std::fs::read(d.join("big.bin")).expect("big")
        ))
    );
    state.lock().expect("lock").fail_digest = Some(big);
    let target = format!("{}/resume/a:v1", srv.addr);
    let o = run(
        &d.path,
        &["--plain-http", "-j", "1", "copy", "oci://src:v1", &target],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        !state.lock().expect("lock").manifests.contains_key("v1"),
        "no tag after the failure"
    );
    let arrived = state.lock().expect("lock").blobs.len();
    assert!(arrived >= 1, "something arrived before the failure");
    state.lock().expect("lock").fail_digest = None;
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--format",
            "json",
            "copy",
            "oci://src:v1",
            &target,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(
        v["stats"]["skipped"].as_u64(),
        Some(arrived as u64),
        "what arrived is skipped: {v}"
    );
    assert_eq!(
        sha256(&state.lock().expect("lock").manifests["v1"].0),
        digest
    );
}

/// A blob GET redirected to object storage on another host: the redirect is followed and
/// the registry's credentials are not sent there.
#[test]
fn redirects_to_storage_do_not_carry_credentials() {
    use base64::Engine as _;
    let (srv, state) = fake_registry();
    let storage_state = state.clone();
    let storage = HttpServer::with_handler_on("127.0.0.2", move |req| {
        let digest = req.path.trim_start_matches("/storage/");
        match storage_state
            .lock()
            .expect("lock")
            .blobs
            .get(digest)
            .cloned()
        {
            Some(data) => Response::status(200).body(data),
            None => Response::status(404),
        }
    });
    let d = TestDir::new();
    setup(&d);
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("u:p")
    );
    state.lock().expect("lock").require_auth = Some(auth);
    let source = format!("{}/src/a:v1", srv.addr);
    let creds = ["--plain-http", "-u", "u", "-p", "p"];
    let digest = packed_digest(&run(
        &d.path,
        &[&creds[..], &["pack", "-f", "pack.yaml", &source]].concat(),
        &[],
    ));
    state.lock().expect("lock").redirect_blobs = Some(format!("http://{}", storage.addr));
    let o = run(
        &d.path,
        &[&creds[..], &["copy", &source, "oci://out:v1"]].concat(),
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(entry(&d.join("out"), "v1")["digest"], digest.as_str());
    let seen = storage.seen.lock().expect("lock").clone();
    assert!(!seen.is_empty(), "blobs came from storage");
    assert!(
        seen.iter()
            .all(|s| !s.headers.contains_key("authorization")),
        "credentials leaked to storage"
    );
}

/// A registry that fails the first POST, PATCH or PUT of an upload: the push succeeds in a
/// new session each time, no session is left open, and every blob has its digest.
#[test]
fn failed_upload_steps_restart_in_a_new_session() {
    for (post, patch, put, no_monolithic) in [(1, 0, 0, false), (0, 0, 1, false), (0, 1, 0, true)] {
        let (srv, state) = fake_registry();
        let d = TestDir::new();
        setup(&d);
        {
            let mut s = state.lock().expect("lock");
            s.post_500 = post;
            s.patch_500 = patch;
            s.put_500 = put;
            s.no_monolithic = no_monolithic;
        }
        let target = format!("{}/flaky/b:v1", srv.addr);
        let digest = packed_digest(&run(
            &d.path,
            &["--plain-http", "pack", "-f", "pack.yaml", &target],
            &[],
        ));
        let s = state.lock().expect("lock");
        let case = (post, patch, put);
        assert!(
            s.sessions.is_empty(),
            "{case:?}: sessions left open: {:?}",
            s.sessions.keys()
        );
        assert_eq!(
            (s.post_500, s.patch_500, s.put_500),
            (0, 0, 0),
            "{case:?}: the fault happened"
        );
        for (d, data) in &s.blobs {
            assert_eq!(&sha256(data), d, "{case:?}: blob {d} is intact");
        }
        assert_eq!(sha256(&s.manifests["v1"].0), digest, "{case:?}");
    }
}

/// Bearer tokens that expire in the middle of a push (here: after a few requests each) are
/// renewed on the 401, and the push completes.
#[test]
fn expiring_tokens_are_renewed_in_the_middle_of_a_push() {
    let (srv, state) = fake_registry();
    state.lock().expect("lock").token_life = Some(3);
    let d = TestDir::new();
    setup(&d);
    let target = format!("{}/expiring/a:v1", srv.addr);
    let digest = packed_digest(&run(
        &d.path,
        &[
            "--plain-http",
            "-j",
            "1",
            "-u",
            "alice",
            "-p",
            "pw",
            "pack",
            "-f",
            "pack.yaml",
            &target,
        ],
        &[],
    ));
    let s = state.lock().expect("lock");
    assert!(
        s.tokens.len() >= 3,
        "tokens were renewed along the way: {:?}",
        s.tokens
    );
    assert_eq!(sha256(&s.manifests["v1"].0), digest, "tagged");
    for (d, data) in &s.blobs {
        assert_eq!(&sha256(data), d, "blob {d} is intact");
    }
}

/// An upload that fails midway — the file changed after it was hashed (the registry refuses
/// the digest), or while it streamed — cancels its upload session: the registry keeps no
/// partial upload, and nothing is tagged.
#[test]
fn failed_uploads_cancel_their_sessions() {
    use oci_packer::{Options, PackInput, Progress, ProgressEvent};
    type Change = fn(&std::path::Path);
    let rewrite: Change = |p| {
        let mut data = std::fs::read(p).expect("read");
        data[0] ^= 0xff;
        std::fs::write(p, data).expect("write");
    };
    let shrink: Change = |p| truncate(p, 1000);
    // A small file is hashed first and read again to upload (changed when its upload
    // starts); a large one uploads while it is hashed (changed after its first megabyte).
    for (name, size, change) in [
        ("small", 300_000usize, rewrite),
        ("large", 24 << 20, shrink),
    ] {
        let (_srv, state) = fake_registry();
        let srv = _srv;
        let d = TestDir::new();
        d.write("f.bin", vec![5u8; size]);
        let file = d.join("f.bin");
        let done = Arc::new(Mutex::new(false));
        let flag = done.clone();
        let opts = Options {
            progress: Progress::new(move |e| {
                let now = match e {
                    ProgressEvent::Started { .. } => name == "small",
                    ProgressEvent::StageAdvanced { .. } => name == "large",
                    _ => false,
                };
                let mut d = flag.lock().expect("lock");
                if now && !*d {
                    *d = true;
                    change(&file);
                }
            }),
            registry: oci_packer::RegistryOptions {
                plain_http: true,
                ..Default::default()
            },
            ..Options::default()
        };
        let e = oci_packer::pack(
            PackInput::Yaml {
                text: "items:\n  - from: file://f.bin\n".into(),
                base_dir: d.path.clone(),
            },
            &format!("{}/changing/a:v1", srv.addr),
            &opts,
        )
        .expect_err(name);
        assert!(
            *done.lock().expect("lock"),
            "{name}: the file was not changed"
        );
        // Either way caught by the client, naming the file: the small file's bytes are
        // checked against the digest staging computed before its upload can complete.
        assert!(
            e.to_string().contains("changed while packing") && e.to_string().contains("f.bin"),
            "{name}: {e}"
        );
        let s = state.lock().expect("lock");
        assert!(s.uploads > 0, "{name}: no upload started ({e})");
        assert!(
            s.sessions.is_empty(),
            "{name}: upload sessions left open: {:?} ({e})",
            s.sessions.keys()
        );
        assert!(!s.manifests.contains_key("v1"), "{name}: tagged");
    }
}
