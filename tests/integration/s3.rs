//! S3 sources against a real S3 server (moto's standalone server, checking signatures) on
//! 127.0.0.1: objects, prefixes, archives and configs pack like the same bytes from disk;
//! credentials from the environment and from profiles; the digest cache; pins; bounded
//! memory; and listings no real server sends (a misbehaving server on 127.0.0.1).

use std::path::Path;

use crate::util::*;

fn env_of(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Files of the prefix: 50 objects, nested, one key with spaces, one with UTF-8.
fn tree(d: &TestDir) -> Vec<(String, std::path::PathBuf)> {
    let mut files = Vec::new();
    for i in 0..47 {
        let rel = format!("level{}/sub{}/file-{i:02}.txt", i % 3, i % 5);
        files.push(rel);
    }
    files.push("with space.txt".into());
    files.push("ünï/κλειδί.json".into());
    files.push("top.bin".into());
    files
        .into_iter()
        .enumerate()
        .map(|(i, rel)| {
            let p = d.write(
                &format!("tree/{rel}"),
                format!("content of {rel}, number {i}\n").repeat(i + 1),
            );
            (format!("tree/{rel}"), p)
        })
        .collect()
}

/// `pack` of one item `from: URI` into a layout fails with exit status 1, says `says`, and
/// writes no index.
fn pack_fails(d: &TestDir, uri: &str, env: &[(&str, &str)], says: &str) {
    d.write("pack.yaml", format!("items:\n  - from: {uri}\n"));
    let o = run(&d.path, &["pack", "-f", "pack.yaml", "oci://out:v1"], env);
    assert_eq!(o.status.code(), Some(1), "{says}: {}", stderr(&o));
    assert!(stderr(&o).contains(says), "{says}: {}", stderr(&o));
    assert!(!d.join("out/index.json").exists());
}

/// Bucket `bkt` with one object `key`, and a pack.yaml of it in `d`.
fn one_object(s3: &S3Server, d: &TestDir, key: &str, text: &str) {
    s3.bucket("bkt");
    s3.put("bkt", key, text);
    d.write(
        "pack.yaml",
        format!("items:\n  - from: {}\n", s3.uri(&format!("bkt/{key}"))),
    );
}

/// The JSON error of `pack -f pack.yaml` (`--format json`), which must fail.
fn json_error(d: &TestDir, env: &[(&str, &str)]) -> serde_json::Value {
    let o = run(
        &d.path,
        &[
            "--format",
            "json",
            "pack",
            "-f",
            "pack.yaml",
            "oci://out:v1",
        ],
        env,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e: serde_json::Value = serde_json::from_str(stderr(&o).trim()).expect("a JSON error");
    e["error"].clone()
}

fn manifest_of(dir: &Path, tag: &str) -> serde_json::Value {
    let e = entry(dir, tag);
    blob_json(dir, e["digest"].as_str().expect("digest"))
}

#[test]
fn objects_prefixes_archives_and_configs_pack_like_the_same_files_from_disk() {
    let s3 = S3Server::start();
    let registry = RegistryServer::start();
    let d = TestDir::new();
    s3.bucket("bkt");
    let mut files = tree(&d);
    assert_eq!(files.len(), 50);
    files.push((
        "one/tool.bin".into(),
        d.write("one/tool.bin", vec![7u8; 3 << 20]),
    ));
    files.push((
        "cfg/config.json".into(),
        d.write("cfg/config.json", "{\"a\":1}"),
    ));
    s3.put_files("bkt", &files);
    let from_s3 = format!(
        "config:\n  from: {}\nitems:\n  - from: {}\n  - from: {}\n  - from: {}\n    archive: tar+zstd\n",
        s3.uri("bkt/cfg/config.json"),
        s3.uri("bkt/one/tool.bin"),
        s3.uri("bkt/tree/"),
        s3.uri("bkt/tree/"),
    );
    d.write("s3.yaml", from_s3);
    d.write(
        "disk.yaml",
        "config:\n  from: file://cfg/config.json\nitems:\n  - from: file://one/tool.bin\n  - from: dir://tree/\n  - from: dir://tree/\n    archive: tar+zstd\n",
    );
    let env = s3.env();
    let env = env_of(&env);
    let disk = packed_digest(&run(
        &d.path,
        &["pack", "-f", "disk.yaml", "oci://disk:v1"],
        &[],
    ));
    let layout = packed_digest(&run(
        &d.path,
        &["pack", "-f", "s3.yaml", "oci://s3:v1"],
        &env,
    ));
    // Same bytes, same titles, same annotations: the very same manifest.
    assert_eq!(layout, disk);
    let m = manifest_of(&d.join("s3"), "v1");
    let layers = m["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1 + 50 + 1);
    let titles = layer_titles(&m);
    assert_eq!(titles[0], "tool.bin");
    assert!(titles.contains(&"with space.txt"));
    assert!(titles.contains(&"ünï/κλειδί.json"));
    assert_eq!(titles[51], "tree");
    let mut sorted = titles[1..51].to_vec();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(titles[1..51], sorted[..], "byte order of the relative keys");
    assert_eq!(
        layers[1]["annotations"]["io.arenadata.oci-packer.dir"],
        "tree"
    );
    assert_eq!(
        layers[51]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    // Every blob is in the layout and is what its digest says.
    let o = run(&d.path, &["verify", "oci://s3:v1"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Into a real registry: the same digest, readable by a peer.
    let target = format!("oci://{}", registry.reference("s3/tree:v1"));
    let pushed = packed_digest(&run(
        &d.path,
        &["--plain-http", "pack", "-f", "s3.yaml", &target],
        &env,
    ));
    assert_eq!(pushed, disk);
    let o = run(&d.path, &["--plain-http", "verify", &target], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn credentials_come_from_the_environment_or_a_profile_and_a_wrong_secret_is_told_without_it() {
    let s3 = S3Server::start();
    let d = TestDir::new();
    one_object(&s3, &d, "notes/readme.txt", "read me\n");
    let good = s3.env();
    let o = run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://env:v1"],
        &env_of(&good),
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // A profile of the shared credentials file, chosen with AWS_PROFILE.
    let creds = d.write(
        "aws/credentials",
        format!(
            "[default]\naws_access_key_id = AKIAWRONGWRONGWRONG0\naws_secret_access_key = nope\n\n[ci]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            s3.key_id, s3.secret
        ),
    );
    let config = d.write("aws/config", "[profile ci]\nregion = us-east-1\n");
    let profile = [
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().expect("utf8")),
        ("AWS_CONFIG_FILE", config.to_str().expect("utf8")),
        ("AWS_PROFILE", "ci"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let o = run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://profile:v1"],
        &profile,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // The default profile holds an unknown key: named as such.
    let default = [&profile[..4], &[("AWS_EC2_METADATA_DISABLED", "true")]].concat();
    let o = run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://default:v1"],
        &default,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not know the access key id"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("profile \"default\""), "{}", stderr(&o));
    // A profile that is in neither file.
    let o = run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://none:v1"],
        &[&profile[..4], &[("AWS_PROFILE", "nosuch")]].concat(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("\"nosuch\""), "{}", stderr(&o));

    // A wrong secret: an authentication error, and the secret nowhere, even at -vvv.
    let secret = "wrong-secret-value-1234567890";
    let mut bad = s3.env();
    bad[1].1 = secret.to_string();
    for verbosity in [None, Some("-vvv")] {
        let mut args = vec!["pack", "-f", "pack.yaml", "oci://bad:v1"];
        args.extend(verbosity);
        let o = run(&d.path, &args, &env_of(&bad));
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let text = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            text.contains("the secret access key does not match"),
            "{text}"
        );
        assert!(!text.contains(secret), "the secret leaked: {text}");
        assert_eq!(json_error(&d, &env_of(&bad))["kind"], "authentication");
        assert!(!text.contains(&s3.secret), "the secret leaked: {text}");
    }
    assert!(
        !d.join("bad").join("index.json").exists(),
        "nothing written"
    );
}

#[test]
fn an_unchanged_object_is_not_read_again_and_a_changed_one_is() {
    let s3 = S3Server::start();
    let d = TestDir::new();
    s3.bucket("bkt");
    let big = d.write("big.bin", vec![1u8; 2 << 20]);
    s3.put_files("bkt", &[("data/big.bin".into(), big)]);
    s3.put("bkt", "data/small.txt", "small one\n");
    s3.put("bkt", "arch/a.txt", "in the archive\n");
    s3.put("bkt", "arch/sub/b.txt", "in the archive too\n");
    d.write(
        "pack.yaml",
        format!(
            "items:\n  - from: {}\n  - from: {}\n  - from: {}\n    archive: tar+gzip\n",
            s3.uri("bkt/data/big.bin"),
            s3.uri("bkt/data/small.txt"),
            s3.uri("bkt/arch/"),
        ),
    );
    let env = s3.env();
    let env = env_of(&env);
    let first = packed_digest(&run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://l:v1"],
        &env,
    ));
    assert_eq!(s3.requests("GET", "/bkt/data/big.bin"), 1);
    assert_eq!(s3.requests("GET", "/bkt/data/small.txt"), 1);
    let again = packed_digest(&run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://l:v2"],
        &env,
    ));
    assert_eq!(again, first);
    assert_eq!(s3.requests("GET", "/bkt/data/big.bin"), 1, "{}", s3.log());
    assert_eq!(s3.requests("GET", "/bkt/data/small.txt"), 1, "{}", s3.log());
    assert_eq!(s3.requests("HEAD", "/bkt/data/big.bin"), 2);
    assert_eq!(s3.requests("GET", "/bkt/arch/a.txt"), 1, "{}", s3.log());
    // A target without the archive: the prefix is read again, the archive is the same.
    let elsewhere = packed_digest(&run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://other:v1"],
        &env,
    ));
    assert_eq!(elsewhere, first);
    assert_eq!(s3.requests("GET", "/bkt/arch/a.txt"), 2, "{}", s3.log());
    assert_eq!(s3.requests("GET", "/bkt/arch/sub/b.txt"), 2, "{}", s3.log());
    // (That target lacked the other blobs too: each object was read once more.)
    assert_eq!(s3.requests("GET", "/bkt/data/big.bin"), 2);
    // The object changes: read again, and the digest changes.
    s3.put("bkt", "data/small.txt", "small two\n");
    let changed = packed_digest(&run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://l:v3"],
        &env,
    ));
    assert_ne!(changed, first);
    assert_eq!(s3.requests("GET", "/bkt/data/small.txt"), 3);
    assert_eq!(s3.requests("GET", "/bkt/data/big.bin"), 2);
    assert_eq!(s3.requests("GET", "/bkt/arch/a.txt"), 2);
    let m = manifest_of(&d.join("l"), "v3");
    assert_eq!(m["layers"][1]["digest"], sha256(b"small two\n"));
}

#[test]
fn a_pin_that_does_not_match_fails_and_writes_nothing() {
    let s3 = S3Server::start();
    let registry = RegistryServer::start();
    let d = TestDir::new();
    s3.bucket("bkt");
    let big = d.write("big.bin", vec![3u8; 2 << 20]);
    s3.put_files("bkt", &[("big.bin".into(), big)]);
    s3.put("bkt", "small.txt", "pinned?\n");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let env = s3.env();
    let env = env_of(&env);
    for key in ["big.bin", "small.txt"] {
        d.write(
            "pack.yaml",
            format!(
                "items:\n  - from: {}\n    digest: {wrong}\n",
                s3.uri(&format!("bkt/{key}"))
            ),
        );
        let o = run(
            &d.path,
            &["pack", "-f", "pack.yaml", "oci://pinned:v1"],
            &env,
        );
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(&wrong), "{}", stderr(&o));
        assert!(!d.join("pinned/index.json").exists() || entry_count(&d.join("pinned")) == 0);
        assert!(
            blob_files(&d.join("pinned")).is_empty(),
            "no blob written: {:?}",
            blob_files(&d.join("pinned"))
        );
        let target = format!("oci://{}", registry.reference("pinned/x:v1"));
        let o = run(
            &d.path,
            &["--plain-http", "pack", "-f", "pack.yaml", &target],
            &env,
        );
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(&wrong), "{}", stderr(&o));
    }
    // Nothing reached the registry: no tag, no blob of either object.
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "list",
            &format!("oci://{}", registry.reference("pinned/x")),
        ],
        &[],
    );
    assert!(!stdout(&o).contains("v1"), "{}", stdout(&o));
    assert_eq!(
        registry_blobs(&registry),
        Vec::<String>::new(),
        "no blob uploaded"
    );
    // The right pin packs.
    d.write(
        "pack.yaml",
        format!(
            "items:\n  - from: {}\n    digest: {}\n",
            s3.uri("bkt/small.txt"),
            sha256(b"pinned?\n")
        ),
    );
    let o = run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://pinned:v1"],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

fn entry_count(layout: &Path) -> usize {
    read_json(&layout.join("index.json"))["manifests"]
        .as_array()
        .map_or(0, Vec::len)
}

fn blob_files(layout: &Path) -> Vec<String> {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The blobs a Distribution registry stores (its data directory).
fn registry_blobs(registry: &RegistryServer) -> Vec<String> {
    let root = registry.dir.join("data/docker/registry/v2/blobs/sha256");
    let mut out = Vec::new();
    for shard in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for b in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(b.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn missing_objects_buckets_and_servers_are_clear_errors() {
    let s3 = S3Server::start();
    let d = TestDir::new();
    s3.bucket("bkt");
    s3.put("bkt", "there.txt", "x");
    let env = s3.env();
    let env = env_of(&env);
    for (uri, says) in [
        (s3.uri("bkt/not-there.txt"), "no such object"),
        (s3.uri("nobucket/x.txt"), "has no bucket \"nobucket\""),
        (s3.uri("bkt/empty/"), "no objects below this prefix"),
        (s3.uri("nobucket/prefix/"), "has no bucket \"nobucket\""),
    ] {
        pack_fails(&d, &uri, &env, says);
        let e = json_error(&d, &env);
        assert_eq!(e["kind"], "source_not_found", "{e}");
        assert!(
            e["message"].as_str().expect("message").contains(&uri),
            "{e}"
        );
    }
    // A server that is not there: a network error, after the transport's retries.
    let port = free_port();
    d.write(
        "pack.yaml",
        format!("items:\n  - from: s3+http://127.0.0.1:{port}/bkt/x.txt\n"),
    );
    let o = run(&d.path, &["pack", "-f", "pack.yaml", "oci://out:v1"], &env);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("retrying"), "{}", stderr(&o));
    assert!(
        stderr(&o).to_lowercase().contains("connect"),
        "{}",
        stderr(&o)
    );
    assert!(!d.join("out/index.json").exists());
}

#[test]
fn a_large_object_streams_into_a_layout_and_a_registry_in_bounded_memory() {
    let s3 = S3Server::start();
    let registry = RegistryServer::start();
    let d = TestDir::new();
    s3.bucket("bkt");
    let big = d.join("big.bin");
    let f = std::fs::File::create(&big).expect("create");
    f.set_len(1 << 30).expect("1 GiB");
    drop(f);
    s3.put_files("bkt", &[("large/big.bin".into(), big.clone())]);
    std::fs::remove_file(&big).expect("rm");
    d.write(
        "pack.yaml",
        format!("items:\n  - from: {}\n", s3.uri("bkt/large/big.bin")),
    );
    let env = s3.env();
    let env = env_of(&env);
    let expected = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            h.update(&zeros);
        }
        format!("sha256:{}", hex_of(&h.finalize()))
    };
    let (o, kib) = run_measured(&d.path, &["pack", "-f", "pack.yaml", "oci://big:v1"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(kib <= 64 * 1024, "peak RSS {kib} KiB into a layout");
    let m = manifest_of(&d.join("big"), "v1");
    assert_eq!(m["layers"][0]["digest"], expected.as_str());
    assert_eq!(m["layers"][0]["size"], 1u64 << 30);
    // A fresh cache: the registry push reads the object again, while hashing it.
    std::fs::remove_dir_all(d.join("xdg-cache")).expect("rm cache");
    let target = format!("oci://{}", registry.reference("big/one:v1"));
    let (o, kib) = run_measured(
        &d.path,
        &["--plain-http", "pack", "-f", "pack.yaml", &target],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(kib <= 64 * 1024, "peak RSS {kib} KiB into a registry");
    assert!(registry_blobs(&registry).contains(&expected["sha256:".len()..].to_string()));
    assert_eq!(s3.requests("GET", "/bkt/large/big.bin"), 2);
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A listing page of the misbehaving server.
fn page(keys: &[&str], token: Option<&str>) -> String {
    let contents: String = keys
        .iter()
        .map(|k| format!("<Contents><Key>{k}</Key><Size>1</Size><ETag>\"e\"</ETag></Contents>"))
        .collect();
    let more = match token {
        Some(t) => format!(
            "<IsTruncated>true</IsTruncated><NextContinuationToken>{t}</NextContinuationToken>"
        ),
        None => "<IsTruncated>false</IsTruncated>".into(),
    };
    format!("<?xml version=\"1.0\"?><ListBucketResult>{more}{contents}</ListBucketResult>")
}

#[test]
fn hostile_listings_are_refused_with_the_fault_named() {
    let d = TestDir::new();
    let none = d.join("none").display().to_string();
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIATEST"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret"),
        ("AWS_SHARED_CREDENTIALS_FILE", none.as_str()),
        ("AWS_CONFIG_FILE", none.as_str()),
    ];
    let huge = "x".repeat(17 << 20);
    for (body, says) in [
        (
            page(&["p/a"], Some("again")),
            "repeats a continuation token",
        ),
        (page(&["other/a"], None), "outside the prefix"),
        (page(&["p/b", "p/a"], None), "out of order"),
        (page(&["p/a/../../x"], None), "empty, . or .. segment"),
        (page(&["p/a", "p/a/b"], None), "a file and a directory"),
        (page(&["p/a"], Some("")), "gives no continuation token"),
        (
            format!("<ListBucketResult><Contents><Key>{huge}</Key></Contents></ListBucketResult>"),
            "longer than",
        ),
        ("not xml at all <".to_string(), "not S3 XML"),
    ] {
        // Every listing request gets the same page (a token that repeats, for instance).
        let server = HttpServer::with_handler(move |req| {
            if req.path.starts_with("/bkt?list-type=2") {
                Response::status(200).body(body.clone())
            } else {
                Response::status(404)
            }
        });
        pack_fails(&d, &format!("s3+{}", server.url("/bkt/p/")), &env, says);
    }
}

#[test]
fn https_servers_need_their_ca_and_s3_uris_follow_the_endpoint_variable() {
    let s3 = S3Server::with_tls();
    let d = TestDir::new();
    one_object(&s3, &d, "x/y.txt", "over tls\n");
    let env = s3.env();
    let env = env_of(&env);
    let o = run(&d.path, &["pack", "-f", "pack.yaml", "oci://tls:v1"], &env);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--ca-file"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("retrying"),
        "a certificate error is not retried: {}",
        stderr(&o)
    );
    let ca = s3.ca();
    let ca = ca.to_str().expect("utf8");
    let with_ca = packed_digest(&run(
        &d.path,
        &["--ca-file", ca, "pack", "-f", "pack.yaml", "oci://tls:v1"],
        &env,
    ));
    let insecure = packed_digest(&run(
        &d.path,
        &["--insecure", "pack", "-f", "pack.yaml", "oci://tls:v2"],
        &env,
    ));
    assert_eq!(with_ca, insecure);
    // `s3://` goes to AWS unless AWS_ENDPOINT_URL_S3 names another server.
    d.write("aws.yaml", "items:\n  - from: s3://bkt/x/y.txt\n");
    let endpoint = s3.endpoint();
    let aws = [&env[..], &[("AWS_ENDPOINT_URL_S3", endpoint.as_str())]].concat();
    let o = run(
        &d.path,
        &["--ca-file", ca, "pack", "-f", "aws.yaml", "oci://tls:v3"],
        &aws,
    );
    assert_eq!(packed_digest(&o), with_ca);
}

#[test]
fn objects_that_change_or_lie_about_their_size_are_refused() {
    let d = TestDir::new();
    let none = d.join("none").display().to_string();
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIATEST"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret"),
        ("AWS_SHARED_CREDENTIALS_FILE", none.as_str()),
        ("AWS_CONFIG_FILE", none.as_str()),
    ];
    for (get, says) in [
        // The object changed between the HEAD and the GET (If-Match fails).
        (Response::status(412), "changed while it was being packed"),
        // The GET sends another size than the HEAD said.
        (
            Response::status(200).body(vec![1u8; 50]),
            "sends 50 bytes of an object of 100",
        ),
    ] {
        let server = HttpServer::with_handler(move |req| {
            if req.method == "HEAD" {
                // (The server says the length of the body it would send.)
                Response::status(200)
                    .header("ETag", "\"v1\"")
                    .body(vec![0u8; 100])
            } else if req.headers.get("if-match").map(String::as_str) != Some("\"v1\"") {
                Response::status(400)
            } else {
                get.clone()
            }
        });
        pack_fails(
            &d,
            &format!("s3+{}", server.url("/bkt/obj.bin")),
            &env,
            says,
        );
    }
}

#[test]
fn s3_items_are_validated_with_the_other_fields() {
    let d = TestDir::new();
    d.write(
        "pack.yaml",
        "config:\n  from: s3://bkt/cfg/\nitems:\n  - from: s3://bkt\n  - from: s3://bkt/a.bin\n    archive: tar\n  - from: s3://bkt/dir/\n    digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\n",
    );
    let o = run(&d.path, &["validate", "-f", "pack.yaml"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let text = format!("{}{}", stdout(&o), stderr(&o));
    for says in [
        "config.from",
        "a config must be a single blob",
        "items[0].from",
        "add the key after the bucket",
        "items[1].archive",
        "archive applies only to dir:// sources and S3 prefixes",
        "items[2].digest",
        "digest pins one blob",
    ] {
        assert!(text.contains(says), "{says}: {text}");
    }
}

/// The credentials of the misbehaving servers' tests.
fn fake_env(d: &TestDir) -> Vec<(String, String)> {
    let none = d.join("none").display().to_string();
    vec![
        ("AWS_ACCESS_KEY_ID".into(), "AKIATEST".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test-secret".into()),
        ("AWS_SESSION_TOKEN".into(), "SESSION-TOKEN-SECRET".into()),
        ("AWS_SHARED_CREDENTIALS_FILE".into(), none.clone()),
        ("AWS_CONFIG_FILE".into(), none),
    ]
}

#[test]
fn redirects_etags_and_endless_listings_of_a_hostile_server_are_refused() {
    let d = TestDir::new();
    let env = fake_env(&d);
    let env = env_of(&env);
    // A redirect to another server: not followed (the security token would go along).
    let elsewhere = HttpServer::with_handler(|_| Response::status(200).body(vec![1u8; 10]));
    let to = elsewhere.url("/bkt/k");
    let redirecting =
        HttpServer::with_handler(move |_| Response::status(307).header("Location", &to));
    pack_fails(
        &d,
        &format!("s3+{}", redirecting.url("/bkt/k")),
        &env,
        "answered HTTP 307",
    );
    assert!(elsewhere.seen.lock().expect("lock").is_empty(), "followed");
    // A GET whose ETag is not the HEAD's: another version of the object.
    let versions = HttpServer::with_handler(|req| {
        let etag = if req.method == "HEAD" {
            "\"A\""
        } else {
            "\"1\""
        };
        Response::status(200)
            .header("ETag", etag)
            .body(vec![2u8; 100])
    });
    pack_fails(
        &d,
        &format!("s3+{}", versions.url("/bkt/k")),
        &env,
        "changed while it was being packed",
    );
    // Pages that list nothing yet always say there is more (a new token each time).
    let pages = std::sync::atomic::AtomicUsize::new(0);
    let endless = HttpServer::with_handler(move |_| {
        let n = pages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Response::status(200).body(page(&[], Some(&format!("t{n}"))))
    });
    pack_fails(
        &d,
        &format!("s3+{}", endless.url("/bkt/p/")),
        &env,
        "empty pages in a row",
    );
    assert!(endless.seen.lock().expect("lock").len() <= 102);
    // A key longer than S3 allows; a token longer than any server sends.
    let long_key = format!("p/{}", "k".repeat(2000));
    let token = "t".repeat(5000);
    for (body, says) in [
        (page(&[long_key.as_str()], None), "longer than 1024 bytes"),
        (page(&["p/a"], Some(&token)), "longer than 4096 bytes"),
    ] {
        let server = HttpServer::with_handler(move |_| Response::status(200).body(body.clone()));
        pack_fails(&d, &format!("s3+{}", server.url("/bkt/p/")), &env, says);
    }
    // Too many objects for one manifest: refused after the listing, before any object GET.
    let keys: Vec<String> = (0..25_000).map(|i| format!("p/k{i:05}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let listing = page(&keys, None);
    let many = HttpServer::with_handler(move |req| {
        if req.path.starts_with("/bkt?") {
            Response::status(200).body(listing.clone())
        } else {
            Response::status(200).body(vec![0u8; 1])
        }
    });
    d.write(
        "pack.yaml",
        format!("items:\n  - from: s3+{}\n", many.url("/bkt/p/")),
    );
    let o = run(&d.path, &["pack", "-f", "pack.yaml", "oci://out:v1"], &env);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("would make a manifest larger than 4 MiB"),
        "{}",
        stderr(&o)
    );
    assert_eq!(many.seen.lock().expect("lock").len(), 1, "only the listing");
}

#[test]
fn endpoint_variables_and_credential_files_are_checked() {
    let d = TestDir::new();
    d.write("pack.yaml", "items:\n  - from: s3://bkt/k\n");
    let none = d.join("none").display().to_string();
    let base = [
        ("AWS_ACCESS_KEY_ID", "AKIATEST"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret"),
        ("AWS_SHARED_CREDENTIALS_FILE", none.as_str()),
        ("AWS_CONFIG_FILE", none.as_str()),
    ];
    let with = |extra: &[(&'static str, &'static str)]| [&base[..], extra].concat();
    let o = run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://out:v1"],
        &with(&[("AWS_ENDPOINT_URL_S3", "http://user:PASSWORD@127.0.0.1:1")]),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("holds credentials"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("PASSWORD"), "{}", stderr(&o));
    let o = run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://out:v1"],
        &with(&[("AWS_ENDPOINT_URL", "127.0.0.1:9000")]),
    );
    assert!(
        stderr(&o).contains("AWS_ENDPOINT_URL=\"127.0.0.1:9000\" is not a server URL"),
        "{}",
        stderr(&o)
    );
    // A FIFO in place of the credentials file: refused, never waited on.
    let fifo = d.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let o = run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://out:v1"],
        &[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_SHARED_CREDENTIALS_FILE", fifo.to_str().expect("utf8")),
            ("AWS_CONFIG_FILE", none.as_str()),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not an AWS config or credentials file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn many_objects_of_a_prefix_stay_within_memory_and_descriptors() {
    let s3 = S3Server::start();
    let d = TestDir::new();
    s3.bucket("bkt");
    // 80 objects of 1 MiB and 80 of 1.1 MiB: more than the memory budget, more than the
    // descriptors allowed below.
    let mut files = Vec::new();
    for i in 0..80u8 {
        files.push((
            format!("mem/o{i:02}"),
            d.write(&format!("src/mem/o{i:02}"), vec![i; 1 << 20]),
        ));
        files.push((
            format!("fds/o{i:02}"),
            d.write(
                &format!("src/fds/o{i:02}"),
                vec![i; (1 << 20) + (100 << 10)],
            ),
        ));
    }
    s3.put_files("bkt", &files);
    d.write(
        "pack.yaml",
        format!(
            "items:\n  - from: {}\n  - from: {}\n",
            s3.uri("bkt/mem/"),
            s3.uri("bkt/fds/")
        ),
    );
    d.write(
        "disk.yaml",
        "items:\n  - from: dir://src/mem/\n  - from: dir://src/fds/\n",
    );
    let env = s3.env();
    let env = env_of(&env);
    let (o, kib) = run_measured(&d.path, &["pack", "-f", "pack.yaml", "oci://l:v1"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        kib <= 64 * 1024,
        "peak RSS {kib} KiB for 80 MiB of small objects"
    );
    packed_digest(&run(
        &d.path,
        &["pack", "-f", "disk.yaml", "oci://disk:v1"],
        &[],
    ));
    // The same layers as the files from disk (the dir annotation aside: mem, src/mem).
    let layers = |layout: &str| -> Vec<String> {
        manifest_of(&d.join(layout), "v1")["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| {
                format!(
                    "{} {}",
                    l["digest"], l["annotations"]["org.opencontainers.image.title"]
                )
            })
            .collect()
    };
    assert!(layers("l") == layers("disk"), "the layers differ");
    // With few file descriptors allowed: the spooled objects do not hold one each.
    std::fs::remove_dir_all(d.join("xdg-cache")).expect("rm cache");
    let script = format!(
        "ulimit -n 64 && exec {} pack -f pack.yaml oci://fds:v1",
        env!("CARGO_BIN_EXE_oci-packer")
    );
    let mut c = std::process::Command::new("sh");
    c.current_dir(&d.path)
        .args(["-c", &script])
        .env("XDG_CACHE_HOME", d.join("xdg-cache"));
    for (k, v) in &env {
        c.env(k, v);
    }
    let o = c.output().expect("sh");
    assert!(o.status.success(), "{}", stderr(&o));
}
