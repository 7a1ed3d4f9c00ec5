//! Hostile input is normal input: layouts and registries that lie about their content, never
//! stop sending, or nest without end get a clear error, in bounded memory, with nothing
//! written or tagged at the destination.

use std::path::Path;

use serde_json::{json, Value};

use crate::util::*;

const EMPTY: &[u8] = b"{}";

/// Peak RSS every hostile case must stay under (KiB).
const RSS_LIMIT_KIB: u64 = 64 << 10;

/// `oci-packer ARGS` must fail (exit 1) within bounded memory with a message naming
/// `expect`, and leave no `v1` at `dst`.
fn fails_cleanly(d: &TestDir, args: &[&str], expect: &[&str], dst: Option<&Path>) {
    let (o, kib) = run_measured(&d.path, args, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    for e in expect {
        assert!(err.contains(e), "{args:?}: wanted {e:?} in: {err}");
    }
    assert!(
        kib < RSS_LIMIT_KIB,
        "{args:?}: peak RSS {kib} KiB over the limit"
    );
    if let Some(dst) = dst {
        let tagged = std::fs::read(dst.join("index.json"))
            .map(|b| String::from_utf8_lossy(&b).contains("\"v1\""))
            .unwrap_or(false);
        assert!(!tagged, "{args:?}: the destination was tagged");
    }
}

#[test]
fn hostile_layouts_are_clear_errors_in_bounded_memory() {
    let d = TestDir::new();
    let layer = b"hello".to_vec();

    // A manifest whose bytes do not match its digest (same size).
    let dir_tampered = d.join("tampered");
    let lay = RawLayout::new(&dir_tampered);
    lay.put(&layer);
    lay.put(EMPTY);
    let good = manifest(&[desc("text/plain", &layer)]);
    let digest = sha256(&good);
    let mut bad = good.clone();
    let at = bad.len() - 3;
    bad[at] = b' ';
    std::fs::write(lay.path(&digest), &bad).expect("tamper");
    lay.tag(desc(OCI_MANIFEST, &good));

    // A manifest naming itself, and two manifests naming each other: only possible with
    // content that does not match its digest.
    let dir_self = d.join("self");
    let lay = RawLayout::new(&dir_self);
    let fake = sha256(b"self");
    let own = manifest(&[json!({"mediaType": OCI_MANIFEST, "digest": fake, "size": 300})]);
    std::fs::write(lay.path(&fake), &own).expect("write");
    lay.tag(json!({"mediaType": OCI_MANIFEST, "digest": fake, "size": own.len()}));
    let dir_pair = d.join("pair");
    let lay = RawLayout::new(&dir_pair);
    let (a, b) = (sha256(b"a"), sha256(b"b"));
    let ma = index(&[json!({"mediaType": OCI_INDEX, "digest": b, "size": 128})]);
    let mb = index(&[json!({"mediaType": OCI_INDEX, "digest": a, "size": ma.len()})]);
    std::fs::write(lay.path(&a), &ma).expect("write");
    std::fs::write(
        lay.path(&b),
        format!("{:<128}", String::from_utf8_lossy(&mb)),
    )
    .expect("w");
    lay.tag(json!({"mediaType": OCI_INDEX, "digest": a, "size": ma.len()}));

    // A manifest blob that is a symlink (to /dev/zero): blobs are never read through links.
    let dir_zero = d.join("zero");
    let lay = RawLayout::new(&dir_zero);
    let z = sha256(b"zero");
    std::os::unix::fs::symlink("/dev/zero", lay.path(&z)).expect("symlink");
    lay.tag(json!({"mediaType": OCI_MANIFEST, "digest": z, "size": 1000}));

    // A valid chain of 20,000 nested indexes.
    let dir_deep = d.join("deep");
    let lay = RawLayout::new(&dir_deep);
    lay.put(&layer);
    lay.put(EMPTY);
    let mut top = manifest(&[desc("text/plain", &layer)]);
    lay.put(&top);
    let mut top_type = OCI_MANIFEST;
    for _ in 0..20_000 {
        let next = index(&[desc(top_type, &top)]);
        lay.put(&next);
        top = next;
        top_type = OCI_INDEX;
    }
    lay.tag(desc(OCI_INDEX, &top));

    let cases: [(&str, &[&str]); 5] = [
        ("tampered", &["not what its descriptor says", &digest]),
        ("self", &["not what its descriptor says", &fake]),
        ("pair", &["not what its descriptor says"]),
        ("zero", &["is a symlink", &z]),
        ("deep", &["nested more than 32 levels"]),
    ];
    for (name, expect) in cases {
        let src = format!("oci://{name}:v1");
        let dst_name = format!("out-{name}");
        let dst = format!("oci://{dst_name}:v1");
        fails_cleanly(&d, &["copy", &src, &dst], expect, Some(&d.join(&dst_name)));
        fails_cleanly(&d, &["list", &src], expect, None);
        // The same content as an image item of a pack.
        let pack = format!("pack-{name}.yaml");
        d.write(&pack, format!("items:\n  - from: oci://./{name}:v1\n"));
        let dst = format!("oci://packed-{name}:v1");
        fails_cleanly(
            &d,
            &["pack", "-f", &pack, &dst],
            expect,
            Some(&d.join(&format!("packed-{name}"))),
        );
    }
}

#[test]
fn an_index_naming_one_manifest_ten_thousand_times_is_copied_once() {
    let d = TestDir::new();
    let fan = d.join("fan");
    let lay = RawLayout::new(&fan);
    let layer = b"fan-out".to_vec();
    lay.put(&layer);
    lay.put(EMPTY);
    let m = manifest(&[desc("text/plain", &layer)]);
    lay.put(&m);
    let members: Vec<Value> = (0..10_000).map(|_| desc(OCI_MANIFEST, &m)).collect();
    let top = index(&members);
    lay.put(&top);
    lay.tag(desc(OCI_INDEX, &top));
    let (o, kib) = run_measured(
        &d.path,
        &["--format", "json", "copy", "oci://fan:v1", "oci://out:v1"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(kib < RSS_LIMIT_KIB, "peak RSS {kib} KiB");
    let result: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        result["stats"]["stored"], 4,
        "index, manifest, config, layer — each once: {result}"
    );
    let (o, kib) = run_measured(&d.path, &["list", "oci://fan:v1"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(kib < RSS_LIMIT_KIB, "peak RSS {kib} KiB");
}

/// What a hostile registry does, per case.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Misdeed {
    /// The manifest, unannounced on HEAD, arrives chunked: 100 MB of it.
    HugeManifest,
    /// 3 GiB for a 29-byte layer.
    LongBlob,
    /// A 2 GiB error body.
    HugeError,
    /// A 2 GiB token answer.
    HugeToken,
    /// Tag pages that never end.
    EndlessTags,
    /// The manifest trickles, one byte a second.
    Trickle,
    /// The manifest's bytes do not match the digest the registry announces for it.
    Tampered,
}

/// A registry that serves one good artifact (`r:v1`: one 29-byte layer) except for `misdeed`.
fn hostile_registry(misdeed: Misdeed) -> HttpServer {
    let layer = vec![b'x'; 29];
    let m = manifest(&[desc("application/octet-stream", &layer)]);
    let m_digest = sha256(&m);
    let counter = std::sync::atomic::AtomicUsize::new(0);
    HttpServer::with_handler(move |req| {
        let path = req.path.split('?').next().unwrap_or("");
        if misdeed == Misdeed::HugeToken {
            if path == "/token" {
                return Response {
                    stream: Some(Stream::Flood {
                        byte: b' ',
                        total: 2 << 30,
                        announced: None,
                    }),
                    ..Response::status(200)
                };
            }
            if !req.headers.contains_key("authorization") {
                let host = req.headers.get("host").cloned().unwrap_or_default();
                return Response::status(401).header(
                    "WWW-Authenticate",
                    &format!("Bearer realm=\"http://{host}/token\",service=\"r\""),
                );
            }
        }
        let manifest_path = path.ends_with("/manifests/v1") || path.ends_with(&m_digest);
        match (req.method.as_str(), path) {
            (_, "/v2/") => Response::status(200),
            ("GET", "/v2/r/tags/list") if misdeed == Misdeed::EndlessTags => {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Response::status(200)
                    .header(
                        "Link",
                        &format!("</v2/r/tags/list?n=1000&last=t{n}>; rel=\"next\""),
                    )
                    .body(format!("{{\"tags\":[\"t{n}\"]}}"))
            }
            ("HEAD", _) if manifest_path && misdeed == Misdeed::HugeManifest => {
                Response::status(200).header("Content-Type", OCI_MANIFEST)
            }
            ("HEAD", _) if manifest_path => Response::status(200)
                .header("Content-Type", OCI_MANIFEST)
                .header("Docker-Content-Digest", &m_digest)
                .body(m.clone()),
            ("GET", _) if manifest_path => match misdeed {
                Misdeed::HugeManifest => Response {
                    stream: Some(Stream::Flood {
                        byte: b' ',
                        total: 100 << 20,
                        announced: None,
                    }),
                    ..Response::status(200).header("Content-Type", OCI_MANIFEST)
                },
                Misdeed::HugeError => Response {
                    stream: Some(Stream::Flood {
                        byte: b'e',
                        total: 2 << 30,
                        announced: None,
                    }),
                    ..Response::status(400)
                },
                Misdeed::Trickle => Response {
                    stream: Some(Stream::Trickle(m.clone())),
                    ..Response::status(200).header("Content-Type", OCI_MANIFEST)
                },
                Misdeed::Tampered => {
                    let mut bad = m.clone();
                    let at = bad.len() - 3;
                    bad[at] = b' ';
                    Response::status(200)
                        .header("Content-Type", OCI_MANIFEST)
                        .body(bad)
                }
                _ => Response::status(200)
                    .header("Content-Type", OCI_MANIFEST)
                    .body(m.clone()),
            },
            ("HEAD" | "GET", p) if p.ends_with(&sha256(EMPTY)) => Response::status(200).body(EMPTY),
            ("GET", p) if p.ends_with(&sha256(&layer)) && misdeed == Misdeed::LongBlob => {
                Response {
                    stream: Some(Stream::Flood {
                        byte: b'x',
                        total: 3 << 30,
                        announced: None,
                    }),
                    ..Response::status(200)
                }
            }
            ("HEAD" | "GET", p) if p.ends_with(&sha256(&layer)) => {
                Response::status(200).body(layer.clone())
            }
            _ => Response::status(404),
        }
    })
}

/// Bytes of every file under `dir`.
fn disk_use(dir: &Path) -> u64 {
    snapshot(dir).values().map(|v| v.len() as u64).sum()
}

#[test]
fn hostile_registries_are_clear_errors_within_the_deadline_in_bounded_memory() {
    let d = TestDir::new();
    let cases: [(Misdeed, &[&str]); 7] = [
        (Misdeed::HugeManifest, &["over the 4 MiB limit"]),
        (Misdeed::LongBlob, &["more than 29 bytes arrived"]),
        (Misdeed::HugeError, &["400 Bad Request", "manifest"]),
        (Misdeed::HugeToken, &["token from", "longer than"]),
        (Misdeed::EndlessTags, &["more than 1000 pages"]),
        (Misdeed::Trickle, &["timed out"]),
        (Misdeed::Tampered, &["not what its descriptor says"]),
    ];
    for (misdeed, expect) in cases {
        let srv = hostile_registry(misdeed);
        let dst_name = format!("out-{misdeed:?}");
        let dst = format!("oci://{dst_name}:v1");
        let src = if misdeed == Misdeed::EndlessTags {
            format!("{}/r", srv.addr)
        } else {
            format!("{}/r:v1", srv.addr)
        };
        let args: Vec<&str> = if misdeed == Misdeed::EndlessTags {
            vec!["--plain-http", "--timeout", "1", "list", &src]
        } else {
            vec!["--plain-http", "--timeout", "1", "copy", &src, &dst]
        };
        fails_cleanly(&d, &args, expect, Some(&d.join(&dst_name)));
        assert!(
            disk_use(&d.join(&dst_name)) < 29 + 4096,
            "{misdeed:?}: the destination holds no more than the artifact's size"
        );
    }
}

#[test]
fn credentials_never_go_to_a_plain_http_token_service_of_another_host() {
    let token_server = HttpServer::with_handler_on("127.0.0.2", |_| {
        Response::status(200).body(r#"{"token":"t"}"#)
    });
    let realm = format!("http://{}/token", token_server.addr);
    let registry = HttpServer::with_handler(move |_| {
        Response::status(401).header("WWW-Authenticate", &format!("Bearer realm=\"{realm}\""))
    });
    let d = TestDir::new();
    let src = format!("{}/r:v1", registry.addr);
    fails_cleanly(
        &d,
        &[
            "--plain-http",
            "-u",
            "me",
            "-p",
            "secret",
            "copy",
            &src,
            "oci://out:v1",
        ],
        &["over plain HTTP; refusing"],
        Some(&d.join("out")),
    );
    let seen = token_server.seen.lock().expect("lock");
    assert!(
        seen.iter()
            .all(|s| !s.headers.contains_key("authorization")),
        "no credential reached the plain-HTTP token service: {seen:?}"
    );
}

/// Download-cache entries someone else planted are never used: not through a symlink, not in
/// a directory of another user. The same URL twice in one pack works.
#[test]
fn planted_download_cache_entries_are_never_used() {
    let srv = HttpServer::start();
    srv.route(
        "/tool.bin",
        Reply::Body {
            body: b"the real tool".to_vec(),
            etag: "\"v1\"".into(),
        },
    );
    let url = srv.url("/tool.bin");
    let entry_name = &sha256(url.as_bytes())["sha256:".len()..][..32];
    let planted = b"planted bytes".to_vec();
    let planted_hex = &sha256(&planted)["sha256:".len()..];
    let meta = json!({"url": url, "etag": "\"v1\"", "last_modified": null,
        "size": planted.len(), "sha256": planted_hex});
    for how in ["symlink", "other-owner"] {
        let d = TestDir::new();
        let http = d.join("xdg-cache/oci-packer/http");
        let entry = http.join(entry_name);
        std::fs::create_dir_all(&entry).expect("mkdir");
        std::fs::write(entry.join("meta.json"), meta.to_string()).expect("meta");
        let data = entry.join(format!("data-{planted_hex}"));
        match how {
            "symlink" => {
                d.write("victim.txt", &planted);
                std::os::unix::fs::symlink(d.join("victim.txt"), &data).expect("symlink");
            }
            _ => {
                std::fs::write(&data, &planted).expect("data");
                for p in [&data, &entry.join("meta.json"), &entry, &http] {
                    std::os::unix::fs::chown(p, Some(65534), Some(65534)).expect("chown");
                }
            }
        }
        d.write(
            "pack.yaml",
            format!("items:\n  - from: {url}\n  - from: {url}\n    type: application/x-again\n"),
        );
        let before = srv.seen.lock().expect("lock").len();
        let digest = pack_ok(&d, "pack.yaml", "oci://out:v1");
        let m = blob_json(&d.join("out"), &digest);
        for l in m["layers"].as_array().expect("layers") {
            assert_eq!(
                blob(&d.join("out"), l["digest"].as_str().expect("digest")),
                b"the real tool",
                "{how}: the planted bytes were not packed"
            );
        }
        let seen = srv.seen.lock().expect("lock");
        assert!(
            seen[before..]
                .iter()
                .all(|s| !s.headers.contains_key("if-none-match")),
            "{how}: the planted entry was not offered to the server"
        );
    }
}

/// A collector holding the layout's lock exclusively, racing 20 packs: no tag ever names
/// missing content, and every pack succeeds.
#[test]
fn packs_racing_a_collector_never_tag_missing_content() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = TestDir::new();
    let layout = d.join("lay");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let collector = {
        let (layout, stop) = (layout.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if layout.join("oci-layout").exists() {
                    collect(&layout);
                    runs += 1;
                }
                std::thread::yield_now();
            }
            runs
        })
    };
    for round in 0..20 {
        d.write(&format!("r{round}/a.txt"), format!("round {round} a"));
        d.write(&format!("r{round}/b.txt"), format!("round {round} b"));
        d.write(
            &format!("r{round}.yaml"),
            format!("items:\n  - from: dir://r{round}\n"),
        );
        pack_ok(
            &d,
            &format!("r{round}.yaml"),
            &format!("oci://lay:r{round}"),
        );
        for (name, digest) in tags(&layout) {
            let missing = missing_blobs(&layout, &digest);
            assert!(
                missing.is_empty(),
                "round {round}: tag {name} names missing {missing:?}"
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    assert!(
        collector.join().expect("collector") > 0,
        "the collector ran"
    );
}

fn tags(layout: &Path) -> Vec<(String, String)> {
    let index = read_json(&layout.join("index.json"));
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|e| {
            (
                e["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                e["digest"].as_str().expect("digest").to_string(),
            )
        })
        .collect()
}

/// Digests reachable from `root`, and those of them that are missing.
fn reachable(
    layout: &Path,
    root: &str,
    out: &mut std::collections::HashSet<String>,
) -> Vec<String> {
    let mut missing = Vec::new();
    let mut todo = vec![root.to_string()];
    while let Some(d) = todo.pop() {
        if !out.insert(d.clone()) {
            continue;
        }
        let p = layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        let Ok(data) = std::fs::read(&p) else {
            missing.push(d);
            continue;
        };
        if let Ok(v) = serde_json::from_slice::<Value>(&data) {
            for key in ["layers", "manifests"] {
                for c in v[key].as_array().into_iter().flatten() {
                    todo.extend(c["digest"].as_str().map(str::to_string));
                }
            }
            todo.extend(v["config"]["digest"].as_str().map(str::to_string));
        }
    }
    missing
}

fn missing_blobs(layout: &Path, root: &str) -> Vec<String> {
    reachable(layout, root, &mut Default::default())
}

/// A garbage collector as the layout protocol has it: under the exclusive lock, every blob
/// no tag reaches is removed (temp files are left to their writers).
fn collect(layout: &Path) {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(layout.join(".oci-packer.lock"))
        .expect("lock file");
    fs4::fs_std::FileExt::lock_exclusive(&lock).expect("lock");
    let mut live = std::collections::HashSet::new();
    if layout.join("index.json").exists() {
        for (_, digest) in tags(layout) {
            reachable(layout, &digest, &mut live);
        }
    }
    for e in std::fs::read_dir(layout.join("blobs/sha256"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !live.contains(&format!("sha256:{name}")) {
            std::fs::remove_file(e.path()).expect("collect");
        }
    }
    fs4::fs_std::FileExt::unlock(&lock).expect("unlock");
}

/// A layout file or blob that is a FIFO (or a symlink to one) is refused at once, never
/// waited on.
#[test]
fn fifos_in_layouts_are_refused_not_waited_on() {
    for victim in ["index.json", "oci-layout", "blob"] {
        let d = TestDir::new();
        d.write("a.txt", "a");
        d.write("a.yaml", "items:\n  - from: file://a.txt\n");
        let digest = pack_ok(&d, "a.yaml", "oci://out:v1");
        let path = if victim == "blob" {
            let layer = blob_json(&d.join("out"), &digest)["layers"][0]["digest"]
                .as_str()
                .expect("layer")
                .to_string();
            d.join("out/blobs/sha256")
                .join(layer.trim_start_matches("sha256:"))
        } else {
            d.join("out").join(victim)
        };
        std::fs::remove_file(&path).expect("rm");
        let ok = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo");
        assert!(ok.success());
        let (o, _) = run_measured(&d.path, &["copy", "oci://out:v1", "oci://copy:v1"], &[]);
        assert!(!o.status.success(), "{victim}");
        assert!(
            stderr(&o).contains("not a regular file"),
            "{victim}: {}",
            stderr(&o)
        );
    }
}

/// `-u`/`-p` go only to the registry the user named (the target): an image item's registry,
/// named by a pack file that may come from anyone, never receives them.
#[test]
fn flag_credentials_never_go_to_a_host_a_pack_file_names() {
    let evil = HttpServer::with_handler(|_req| {
        Response::status(401).header("WWW-Authenticate", "Basic realm=\"evil\"")
    });
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write(
        "p.yaml",
        format!(
            "items:\n  - from: file://a.txt\n  - from: docker://{}/evil/img:v1\n  - from: oci://{}/evil/img:v2\n",
            evil.addr, evil.addr
        ),
    );
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "-u",
            "alice",
            "-p",
            "s3cret",
            "pack",
            "-f",
            "p.yaml",
            "oci://out:v1",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let seen = evil.seen.lock().expect("lock");
    assert!(!seen.is_empty(), "the image item's registry was not asked");
    assert!(
        seen.iter()
            .all(|s| !s.headers.contains_key("authorization")),
        "credentials sent to a host only the pack file named"
    );
}

/// A FIFO planted at a lock file's path is refused at once, never waited on.
#[test]
fn fifos_at_lock_paths_are_refused() {
    for lock in ["index.lock", ".oci-packer.lock"] {
        let d = TestDir::new();
        d.write("a.txt", "a");
        d.write("a.yaml", "items:\n  - from: file://a.txt\n");
        pack_ok(&d, "a.yaml", "oci://out:v1");
        let path = d.join("out").join(lock);
        let _ = std::fs::remove_file(&path);
        let ok = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo");
        assert!(ok.success());
        let (o, _) = run_measured(&d.path, &["pack", "-f", "a.yaml", "oci://out:v2"], &[]);
        assert_eq!(o.status.code(), Some(2), "{lock}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("is not a regular file"),
            "{lock}: {}",
            stderr(&o)
        );
    }
}

/// A pack file read from a pipe (`-f /dev/stdin`) resolves relative sources against the
/// working directory, not against `/dev`.
#[test]
fn a_pack_file_on_stdin_resolves_against_the_working_directory() {
    let d = TestDir::new();
    d.write("a.txt", "from the working directory");
    let o = run_with_stdin(
        &d.path,
        &["pack", "-f", "/dev/stdin", "oci://out:v1"],
        b"items:\n  - from: file://a.txt\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// One unreadable entry does not hide the others: a layout whose index also names a sha512
/// manifest and a missing one, and a registry whose tag list holds a name that is not a tag
/// (with an escape sequence in it) besides a good one. Each listing shows every entry, the
/// bad ones with their problem (escaped, on stderr and in the JSON), and exits 1.
#[test]
fn one_bad_entry_does_not_stop_a_listing() {
    let d = TestDir::new();
    let lay_dir = d.join("lay");
    let lay = RawLayout::new(&lay_dir);
    lay.put(b"layer");
    let m = manifest(&[desc("application/octet-stream", b"layer")]);
    lay.put(b"{}");
    lay.put(&m);
    let named = |name: &str, mut e: Value| {
        e["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        e
    };
    let sha512 = json!({"mediaType": OCI_MANIFEST, "size": 3,
        "digest": format!("sha512:{}", "ab".repeat(64))});
    let missing = desc(OCI_MANIFEST, b"not stored");
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        named("good", desc(OCI_MANIFEST, &m)), named("long", sha512), named("gone", missing)]});
    std::fs::write(d.join("lay/index.json"), index.to_string()).expect("index");
    let o = run(&d.path, &["list", "oci://lay"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name}: {out}"))
            .to_string()
    };
    assert!(
        row("good").contains(&sha256(&m)) && !row("good").contains('?'),
        "{out}"
    );
    assert!(
        row("long").contains("sha512:") && row("long").ends_with('?'),
        "{out}"
    );
    assert!(row("gone").ends_with('?'), "{out}");
    assert!(
        err.contains("error: long:") && err.contains("error: gone:"),
        "{err}"
    );
    let o = run(&d.path, &["--format", "json", "list", "oci://lay"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    let entries = v["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 3, "{v}");
    for e in entries {
        let bad = e["reference"] != "good";
        assert_eq!(e.get("problem").is_some(), bad, "{e}");
    }

    // A registry's tag list with a name that is not a tag.
    let m2 = m.clone();
    let m_digest = sha256(&m);
    let srv = HttpServer::with_handler(move |req| {
        let path = req.path.split('?').next().unwrap_or("");
        match path {
            "/v2/" => Response::status(200),
            "/v2/r/tags/list" => Response::status(200)
                .header("Content-Type", "application/json")
                .body(r#"{"name":"r","tags":["v1","bad\u001b[2J tag"]}"#),
            p if p.starts_with("/v2/r/manifests/") => Response::status(200)
                .header("Content-Type", OCI_MANIFEST)
                .header("Docker-Content-Digest", &m_digest)
                .body(m2.clone()),
            _ => Response::status(404),
        }
    });
    let o = run(
        &d.path,
        &["--plain-http", "list", &format!("{}/r", srv.addr)],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.lines().any(|l| l.starts_with("v1 ")), "{out}");
    assert!(out.contains("bad\\x1b[2J tag"), "{out}");
    assert!(
        !out.contains('\u{1b}') && !err.contains('\u{1b}'),
        "{out:?} {err:?}"
    );
    assert!(err.contains("not a valid tag name"), "{err}");
}

/// A layout's own files are never read through symlinks: `index.json`, `oci-layout` or a
/// blob that is a link (here to another layout's file, which is valid) is refused with an
/// error naming it, for listing and copying alike, and a copy writes nothing.
#[test]
fn layout_files_that_are_symlinks_are_refused() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("p.yaml", "items:\n  - from: file://a.txt\n");
    pack_ok(&d, "p.yaml", "oci://real:v1");
    for file in ["index.json", "oci-layout", "blob"] {
        let dir = format!("linked-{file}");
        let copy = std::process::Command::new("cp")
            .args(["-a", "real", &dir])
            .current_dir(&d.path)
            .status()
            .expect("cp");
        assert!(copy.success());
        let name = match file {
            "blob" => {
                let index = read_json(&d.join(&format!("{dir}/index.json")));
                let digest = index["manifests"][0]["digest"].as_str().expect("digest");
                format!("blobs/sha256/{}", &digest["sha256:".len()..])
            }
            f => f.to_string(),
        };
        let at = d.join(&format!("{dir}/{name}"));
        std::fs::remove_file(&at).expect("rm");
        std::os::unix::fs::symlink(d.join(&format!("real/{name}")), &at).expect("ln");
        for args in [
            vec!["list".to_string(), format!("oci://{dir}:v1")],
            vec![
                "copy".to_string(),
                format!("oci://{dir}:v1"),
                format!("oci://out-{file}:v1"),
            ],
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = run(&d.path, &args, &[]);
            assert!(!o.status.success(), "{args:?}");
            assert!(
                stderr(&o).contains("is a symlink"),
                "{args:?}: {}",
                stderr(&o)
            );
            assert!(!d.join(&format!("out-{file}")).exists(), "{args:?}");
        }
    }
}

/// `verify` against registries: a real one holding what was pushed passes; a misbehaving one
/// that serves another layer's bytes (same size) under a digest, and a config it does not
/// have, gets one line each and exit 1.
#[test]
fn verify_reads_registries_and_names_a_corrupted_blob() {
    let reg = RegistryServer::start();
    let d = TestDir::new();
    d.write("a.txt", "alpha");
    d.write("p.yaml", "items:\n  - from: file://a.txt\n");
    let target = reg.reference("v/ok:v1");
    let o = run(
        &d.path,
        &["--plain-http", "pack", "-f", "p.yaml", &target],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&d.path, &["--plain-http", "verify", &target], &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    let layer = b"alpha".to_vec();
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", &config),
        "layers": [desc("application/octet-stream", &layer)],
    }))
    .expect("json");
    let (m_digest, layer_digest) = (sha256(&m), sha256(&layer));
    let srv = HttpServer::with_handler(move |req| {
        let path = req.path.split('?').next().unwrap_or("");
        match path {
            "/v2/" => Response::status(200),
            p if p == "/v2/r/manifests/v1" || p == format!("/v2/r/manifests/{m_digest}") => {
                Response::status(200)
                    .header("Content-Type", OCI_MANIFEST)
                    .header("Docker-Content-Digest", &m_digest)
                    .body(m.clone())
            }
            p if p == format!("/v2/r/blobs/{layer_digest}") => Response::status(200).body("ALPHA"),
            _ => Response::status(404),
        }
    });
    let reference = format!("{}/r:v1", srv.addr);
    let o = run(&d.path, &["--plain-http", "verify", &reference], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("digest mismatch") && l.contains(&sha256(b"alpha"))),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("missing") && l.contains(&sha256(&config))),
        "{out}"
    );
}

/// A directory with more files than one manifest can name fails right after the walk —
/// before any file is read — in bounded memory, and creates no layout. (Hashed first, 50,000
/// small files took 197 MB before the same error.)
#[test]
fn a_directory_too_large_for_one_manifest_fails_before_reading() {
    let d = TestDir::new();
    let src = d.join("many");
    for i in 0..25_000 {
        let sub = src.join(format!("d{:02}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&sub).expect("mkdir");
        }
        std::fs::write(sub.join(format!("f{i:05}")), b"x").expect("write");
    }
    d.write("pack.yaml", "items:\n  - from: dir://many\n");
    let (o, kib) = run_measured(&d.path, &["pack", "-f", "pack.yaml", "oci://out:v1"], &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("25000 files would make a manifest larger than 4 MiB")
            && err.contains("archive:"),
        "{err}"
    );
    assert!(kib < RSS_LIMIT_KIB, "peak RSS {kib} KiB");
    assert!(!d.join("out").exists(), "a layout was created");
}

/// A file whose size reads 0 yet has content (`/proc`) is refused naming it, into a layout
/// and into a registry alike: never packed as an empty layer.
#[test]
fn a_file_that_says_it_is_empty_but_is_not_is_refused() {
    let registry = RegistryServer::start();
    let d = TestDir::new();
    d.write("pack.yaml", "items:\n  - from: file:///proc/self/status\n");
    let to_registry = registry.reference("proc/status:v1");
    for target in ["oci://out:v1", to_registry.as_str()] {
        let o = run(
            &d.path,
            &["--plain-http", "pack", "-f", "pack.yaml", target],
            &[],
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{target}: {err}");
        assert!(
            err.contains("/proc/self/status: its size reads 0 bytes, yet it has content"),
            "{target}: {err}"
        );
    }
    assert!(!d.join("out/index.json").exists());
    let log = registry.log();
    assert!(log_requests(&log, "PUT", "/v2/proc/").is_empty(), "{log}");
}
