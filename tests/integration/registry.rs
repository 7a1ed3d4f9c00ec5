//! Registries (issue 3): push, copy in all directions, mounts, credentials — against real
//! Distribution registries started by the tests, read back by skopeo.

use std::process::Command;

use serde_json::{json, Value};

use crate::util::*;

fn skopeo_raw(reference: &str) -> Vec<u8> {
    skopeo_raw_with_creds(reference, None)
}

fn sha256(data: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data))
    )
}

fn multi_pack(d: &TestDir) {
    d.write("a.txt", "amd64 payload");
    d.write("b.txt", "arm64 payload");
    d.write("c.txt", "arm v7 payload");
    d.write("shared.bin", vec![9u8; 100_000]);
    d.write(
        "multi.yaml",
        "type: application/vnd.example.multi\n\
         items:\n\
         \x20 - from: file://a.txt\n    platform: linux/amd64\n\
         \x20 - from: file://b.txt\n    platform: linux/arm64/v8\n\
         \x20 - from: file://c.txt\n    platform: linux/arm/v7\n\
         \x20 - from: file://shared.bin\n    platform: linux/amd64\n\
         \x20 - from: file://shared.bin\n    platform: linux/arm64/v8\n",
    );
}

#[test]
fn pack_to_a_registry_and_read_it_back_with_skopeo() {
    let reg = RegistryServer::start();
    let d = TestDir::new();
    multi_pack(&d);
    let target = reg.reference("team/multi:v1");
    let o = run(
        &d.path,
        &["--plain-http", "pack", "-f", "multi.yaml", &target],
        &[],
    );
    let digest = packed_digest(&o);
    let raw = skopeo_raw(&target);
    assert_eq!(
        sha256(&raw),
        digest,
        "skopeo reads the index we pushed, byte for byte"
    );
    let index: Value = serde_json::from_slice(&raw).expect("json");
    for m in index["manifests"].as_array().expect("members") {
        let member = skopeo_raw(&format!(
            "{}@{}",
            reg.reference("team/multi"),
            m["digest"].as_str().expect("d")
        ));
        assert_eq!(sha256(&member), m["digest"].as_str().expect("d"));
    }
    // The same pack into a layout gives the same digest.
    assert_eq!(pack_ok(&d, "multi.yaml", "oci://layout:v1"), digest);
    // Packing again moves nothing: the root is there, the tag points at it (HEADs only).
    let log_before = reg.log().len();
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--format",
            "json",
            "pack",
            "-f",
            "multi.yaml",
            &target,
        ],
        &[],
    );
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(
        (
            v["stats"]["stored"].as_u64(),
            v["stats"]["skipped"].as_u64()
        ),
        (Some(0), Some(1)),
        "{v}"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let requests: Vec<String> = reg.log()[log_before..]
        .lines()
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .filter(|r| r.contains("/v2/"))
        .collect();
    assert!(
        !requests.is_empty() && requests.iter().all(|r| r.starts_with("HEAD ")),
        "{requests:?}"
    );
}

#[test]
fn copy_in_all_four_directions_with_platform_selection() {
    let reg = RegistryServer::start();
    let d = TestDir::new();
    multi_pack(&d);
    let digest = pack_ok(&d, "multi.yaml", "oci://src:v1");
    let plain = |args: &[&str]| {
        let mut all = vec!["--plain-http"];
        all.extend_from_slice(args);
        let o = run(&d.path, &all, &[]);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    // layout → registry → registry → layout → layout
    plain(&["copy", "oci://src:v1", &reg.reference("a/multi:v1")]);
    plain(&[
        "copy",
        &reg.reference("a/multi:v1"),
        &reg.reference("b/multi:v1"),
    ]);
    plain(&["copy", &reg.reference("b/multi:v1"), "oci://back:v1"]);
    plain(&["copy", "oci://back:v1", "oci://again:v1"]);
    assert_eq!(sha256(&skopeo_raw(&reg.reference("b/multi:v1"))), digest);
    assert_eq!(entry(&d.join("back"), "v1")["digest"], digest.as_str());
    assert_eq!(
        snapshot(&d.join("back").join("blobs")),
        snapshot(&d.join("src").join("blobs")),
        "every blob, byte for byte"
    );
    skopeo_reads(&d.join("again"), "v1");
    // --platform picks one member, with variant rules.
    let index: Value = blob_json(&d.join("src"), &digest);
    let member = |p: &str| -> String {
        index["manifests"]
            .as_array()
            .expect("m")
            .iter()
            .find(|m| {
                let pl = &m["platform"];
                let v = pl["variant"]
                    .as_str()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default();
                format!(
                    "{}/{}{v}",
                    pl["os"].as_str().unwrap_or(""),
                    pl["architecture"].as_str().unwrap_or("")
                ) == p
            })
            .and_then(|m| m["digest"].as_str())
            .expect("member")
            .to_string()
    };
    let out = plain(&[
        "copy",
        "--platform",
        "linux/arm64",
        &reg.reference("a/multi:v1"),
        "oci://arm64:v1",
    ]);
    assert!(out.contains(&member("linux/arm64")), "{out}");
    assert_eq!(
        entry(&d.join("arm64"), "v1")["digest"],
        member("linux/arm64").as_str()
    );
    let out = plain(&[
        "copy",
        "--platform",
        "linux/arm/v7",
        "oci://src:v1",
        &reg.reference("c/arm:v7"),
    ]);
    assert!(out.contains(&member("linux/arm/v7")), "{out}");
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "copy",
            "--platform",
            "linux/s390x",
            "oci://src:v1",
            "oci://none:v1",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(
            "matches platform linux/s390x (available: linux/amd64, linux/arm64, linux/arm/v7)"
        ),
        "{}",
        stderr(&o)
    );
    assert!(
        !d.join("none").exists(),
        "nothing written for a failed copy"
    );
}

#[test]
fn copies_within_one_registry_mount_instead_of_moving_bytes() {
    let reg = RegistryServer::start();
    let d = TestDir::new();
    multi_pack(&d);
    let src = reg.reference("one/multi:v1");
    run(
        &d.path,
        &["--plain-http", "pack", "-f", "multi.yaml", &src],
        &[],
    );
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--format",
            "json",
            "copy",
            &src,
            &reg.reference("two/multi:v1"),
        ],
        &[],
    );
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(
        v["stats"]["mounted"], 5,
        "four layers and the empty config: {v}"
    );
    assert_eq!(
        v["stats"]["stored"], 4,
        "only the three member manifests and the index: {v}"
    );
    let log = reg.log();
    let mounts = log
        .lines()
        .filter(|l| l.contains("POST /v2/two/multi/blobs/uploads/?") && l.contains("mount="))
        .count();
    assert_eq!(mounts, 5, "the registry saw five mount requests");
    assert!(
        !log.lines()
            .any(|l| l.contains("PATCH /v2/two/multi/blobs/uploads")
                || l.contains("PUT /v2/two/multi/blobs/uploads")),
        "no blob bytes uploaded to the second repository"
    );
}

#[test]
fn basic_auth_flags_login_logout_and_a_credential_helper() {
    let reg = RegistryServer::with_basic_auth("alice", "s3cret");
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("pack.yaml", "items:\n  - from: file://a.txt\n");
    let target = reg.reference("private/a:v1");
    let config = d.join("docker/config.json");
    let cfg = config.to_str().expect("utf8");
    // Refused without credentials: a clear error, nothing tagged.
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            cfg,
            "pack",
            "-f",
            "pack.yaml",
            &target,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("401") && err.contains(&format!("oci-packer login {}", reg.addr)),
        "{err}"
    );
    // Flags.
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            cfg,
            "-u",
            "alice",
            "-p",
            "s3cret",
            "pack",
            "-f",
            "pack.yaml",
            &target,
        ],
        &[],
    );
    let digest = packed_digest(&o);
    assert!(!stdout(&o).contains("s3cret") && !stderr(&o).contains("s3cret"));
    // Wrong password: refused.
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            cfg,
            "-u",
            "alice",
            "-p",
            "nope",
            "pack",
            "-f",
            "pack.yaml",
            &target,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("check the user name and password"),
        "{}",
        stderr(&o)
    );
    // login (password on stdin) writes the Docker config; then no flags are needed.
    let o = run_with_stdin(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            cfg,
            "-u",
            "alice",
            "--password-stdin",
            "login",
            &reg.addr,
        ],
        b"s3cret\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let stored = read_json(&config);
    assert!(
        stored["auths"][reg.addr.as_str()]["auth"].is_string(),
        "{stored}"
    );
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            cfg,
            "copy",
            &target,
            "oci://pulled:v1",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(entry(&d.join("pulled"), "v1")["digest"], digest.as_str());
    // A wrong login is refused and stores nothing new.
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            cfg,
            "-u",
            "alice",
            "-p",
            "bad",
            "login",
            &reg.addr,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    // logout removes the entry; access is refused again.
    let o = run(
        &d.path,
        &["--registry-config", cfg, "logout", &reg.addr],
        &[],
    );
    assert!(stdout(&o).contains("Removed credentials"), "{}", stdout(&o));
    assert!(read_json(&config)["auths"].get(reg.addr.as_str()).is_none());
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            cfg,
            "copy",
            &target,
            "oci://pulled:v2",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    // A credential helper named by credHelpers, found on PATH.
    let path = credential_helper(&d, "testhelper", "alice", "s3cret");
    let helper_config = d.write(
        "helper/config.json",
        format!("{{\"credHelpers\": {{\"{}\": \"testhelper\"}}}}", reg.addr),
    );
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            helper_config.to_str().expect("utf8"),
            "copy",
            &target,
            "oci://helped:v1",
        ],
        &[("PATH", &path), ("EXPECT_SERVER", &reg.addr)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Image items (SPEC §2.5): a registry image with platform selection, a whole index from a
/// layout, and an image pushed by skopeo, each its own member with the item's type,
/// annotations and platform; blobs of the target's registry are mounted, not copied.
#[test]
fn image_items_from_registries_and_layouts() {
    let reg = RegistryServer::start();
    let d = TestDir::new();
    multi_pack(&d);
    let multi = reg.reference("base/multi:v1");
    let multi_digest = packed_digest(&run(
        &d.path,
        &["--plain-http", "pack", "-f", "multi.yaml", &multi],
        &[],
    ));
    pack_ok(&d, "multi.yaml", "oci://layouts/base:v1");
    // An artifact pushed by skopeo from a layout of ours.
    d.write("single.txt", "single");
    d.write(
        "single.yaml",
        "type: application/vnd.example.single\nitems:\n  - from: file://single.txt\n",
    );
    let single_digest = pack_ok(&d, "single.yaml", "oci://skopeo-src:s");
    let pushed = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:s", d.join("skopeo-src").display()))
        .arg(format!("docker://{}", reg.reference("by-skopeo/single:v1")))
        .output()
        .expect("skopeo");
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    d.write(
        "bundle.yaml",
        format!(
            "type: application/vnd.example.bundle\n\
             items:\n\
             \x20 - from: file://a.txt\n    platform: linux/amd64\n\
             \x20 - from: oci://{multi}\n    platform: linux/arm64\n    type: application/vnd.example.arm\n    annotations: {{picked: \"yes\"}}\n\
             \x20 - from: oci://./layouts/base:v1\n\
             \x20 - from: docker://{}\n",
            reg.reference("by-skopeo/single:v1")
        ),
    );
    let target = reg.reference("bundle/all:v1");
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--format",
            "json",
            "pack",
            "-f",
            "bundle.yaml",
            &target,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert!(
        v["stats"]["mounted"].as_u64().unwrap_or(0) >= 3,
        "blobs of base/multi and by-skopeo are mounted: {v}"
    );
    let index: Value = serde_json::from_slice(&skopeo_raw(&target)).expect("json");
    let m = index["manifests"].as_array().expect("members");
    assert_eq!(m.len(), 4);
    assert_eq!(m[0]["platform"]["architecture"], "amd64");
    let source: Value = blob_json(&d.join("layouts/base"), &multi_digest);
    let arm = source["manifests"]
        .as_array()
        .expect("m")
        .iter()
        .find(|x| x["platform"]["architecture"] == "arm64")
        .expect("arm");
    assert_eq!(
        m[1]["digest"], arm["digest"],
        "the best platform match of the source index"
    );
    assert_eq!(m[1]["artifactType"], "application/vnd.example.arm");
    assert_eq!(m[1]["annotations"]["picked"], "yes");
    assert_eq!(
        m[1]["platform"],
        serde_json::json!({"os": "linux", "architecture": "arm64"})
    );
    assert_eq!(
        m[2]["digest"],
        multi_digest.as_str(),
        "no platform: the whole source index"
    );
    assert_eq!(m[2]["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(m[2]["artifactType"], "application/vnd.example.multi");
    assert!(
        m[2].get("annotations").is_none(),
        "a layout's ref.name does not leak into the entry"
    );
    assert_eq!(m[3]["digest"], single_digest.as_str());
    // The whole graph arrived: copy it back out and check every node of the tree, byte for
    // byte (skopeo cannot copy an index nested in an index, so it cannot be the judge here).
    let o = run(
        &d.path,
        &["--plain-http", "copy", &target, "oci://out:bundle"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        &d.path,
        &["--format", "json", "list", "oci://out:bundle"],
        &[],
    );
    let tree: Value = serde_json::from_str(&stdout(&o)).expect("json");
    fn check(dir: &std::path::Path, node: &Value, count: &mut usize) {
        let digest = node["descriptor"]["digest"].as_str().expect("digest");
        assert_eq!(sha256(&blob(dir, digest)), digest);
        *count += 1;
        for c in node["children"].as_array().into_iter().flatten() {
            check(dir, c, count);
        }
    }
    let mut nodes = 0;
    check(&d.join("out"), &tree["tree"], &mut nodes);
    assert!(nodes >= 20, "{nodes} nodes");
    // An image item with a config is invalid; a missing image is a clear error, nothing tagged.
    d.write(
        "bad.yaml",
        format!("items:\n  - from: oci://{multi}\n    config: {{from: file://a.txt}}\n"),
    );
    let o = run(
        &d.path,
        &["--plain-http", "validate", "-f", "bad.yaml"],
        &[],
    );
    assert!(
        stdout(&o).contains("items[0].config: an image item is the member itself"),
        "{}",
        stdout(&o)
    );
    d.write(
        "missing.yaml",
        format!(
            "items:\n  - from: oci://{}\n",
            reg.reference("nope/none:v1")
        ),
    );
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "pack",
            "-f",
            "missing.yaml",
            &reg.reference("bundle/all:v2"),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("404") && stderr(&o).contains("nope/none"),
        "{}",
        stderr(&o)
    );
    let tags = Command::new("skopeo")
        .args([
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}", reg.reference("bundle/all")),
        ])
        .output()
        .expect("skopeo");
    assert!(
        !String::from_utf8_lossy(&tags.stdout).contains("v2"),
        "no tag after a failure"
    );
}

/// The Rust `oci-client` crate (a peer, dev-dependency) reads back what we push, byte for byte.
#[test]
fn oci_client_reads_what_we_push() {
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth;
    let reg = RegistryServer::start();
    let d = TestDir::new();
    multi_pack(&d);
    let target = reg.reference("peer/multi:v1");
    let digest = packed_digest(&run(
        &d.path,
        &["--plain-http", "pack", "-f", "multi.yaml", &target],
        &[],
    ));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let reference: oci_client::Reference = target.parse().expect("reference");
        let accept = [
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
        ];
        let (raw, got) = client
            .pull_manifest_raw(&reference, &RegistryAuth::Anonymous, &accept)
            .await
            .expect("index");
        assert_eq!(got, digest);
        assert_eq!(sha256(&raw), digest);
        let index: Value = serde_json::from_slice(&raw).expect("json");
        let mut layers = 0;
        for m in index["manifests"].as_array().expect("members") {
            let member_ref: oci_client::Reference = format!(
                "{}@{}",
                reg.reference("peer/multi"),
                m["digest"].as_str().expect("d")
            )
            .parse()
            .expect("ref");
            let (raw, got) = client
                .pull_manifest_raw(&member_ref, &RegistryAuth::Anonymous, &accept)
                .await
                .expect("member");
            assert_eq!(got, m["digest"].as_str().expect("d"));
            let manifest: Value = serde_json::from_slice(&raw).expect("json");
            for l in manifest["layers"].as_array().expect("layers") {
                let mut data = Vec::new();
                client
                    .pull_blob(&member_ref, l["digest"].as_str().expect("d"), &mut data)
                    .await
                    .expect("blob");
                assert_eq!(sha256(&data), l["digest"].as_str().expect("d"));
                let title = l["annotations"]["org.opencontainers.image.title"]
                    .as_str()
                    .expect("title");
                assert_eq!(data, std::fs::read(d.join(title)).expect("source file"));
                layers += 1;
            }
        }
        assert_eq!(layers, 5);
    });
}

/// The ORAS CLI reads what we push (manifests byte for byte; `oras pull` unpacks our archive
/// layers), and what ORAS pushes is an image item and a `copy` source for us.
#[test]
fn oras_interop_both_ways() {
    let reg = RegistryServer::start();
    let d = TestDir::new();
    d.write("site/index.html", "<h1>hi</h1>");
    d.write("site/css/a.css", "a{}");
    d.write("notes.txt", "notes");
    d.write(
        "pack.yaml",
        "type: application/vnd.example.site\nitems:\n  - from: dir://site\n    archive: tar+gzip\n  - from: file://notes.txt\n",
    );
    let target = reg.reference("ours/site:v1");
    let digest = packed_digest(&run(
        &d.path,
        &["--plain-http", "pack", "-f", "pack.yaml", &target],
        &[],
    ));
    let fetched = oras(&["manifest", "fetch", "--plain-http", &target], &d.path);
    assert_eq!(
        sha256(&fetched.stdout),
        digest,
        "oras fetches our manifest byte for byte"
    );
    let pulled = d.mkdir("pulled");
    oras(
        &[
            "pull",
            "--plain-http",
            &target,
            "-o",
            pulled.to_str().expect("utf8"),
        ],
        &d.path,
    );
    assert_eq!(
        std::fs::read_to_string(pulled.join("site/index.html")).expect("unpacked"),
        "<h1>hi</h1>"
    );
    assert_eq!(
        std::fs::read_to_string(pulled.join("site/css/a.css")).expect("unpacked"),
        "a{}"
    );
    assert_eq!(
        std::fs::read_to_string(pulled.join("notes.txt")).expect("file"),
        "notes"
    );

    // ORAS pushes an artifact; we pack it as an image item and copy it to a layout.
    d.write("oras/readme.md", "pushed by oras");
    let theirs = reg.reference("theirs/readme:v1");
    oras(
        &[
            "push",
            "--plain-http",
            "--artifact-type",
            "application/vnd.example.oras",
            &theirs,
            "readme.md:text/markdown",
        ],
        &d.join("oras"),
    );
    let their_digest =
        String::from_utf8(oras(&["resolve", "--plain-http", &theirs], &d.path).stdout)
            .expect("utf8");
    let their_digest = their_digest.trim();
    d.write("bundle.yaml", format!("items:\n  - from: docker://{theirs}\n  - from: file://notes.txt\n    platform: linux/amd64\n"));
    let bundle = reg.reference("ours/bundle:v1");
    let o = run(
        &d.path,
        &["--plain-http", "pack", "-f", "bundle.yaml", &bundle],
        &[],
    );
    let bundle_digest = packed_digest(&o);
    let index: Value = serde_json::from_slice(
        &oras(&["manifest", "fetch", "--plain-http", &bundle], &d.path).stdout,
    )
    .expect("json");
    assert_eq!(index["manifests"][0]["digest"], their_digest);
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.example.oras"
    );
    let o = run(
        &d.path,
        &["--plain-http", "copy", &theirs, "oci://layout:readme"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    skopeo_reads(&d.join("layout"), "readme");
    // And ORAS copies our index too (it understands what we wrote).
    oras(
        &[
            "cp",
            "--from-plain-http",
            "--to-plain-http",
            &bundle,
            &reg.reference("oras-copied/bundle:v1"),
        ],
        &d.path,
    );
    let copied = oras(
        &[
            "manifest",
            "fetch",
            "--plain-http",
            &reg.reference("oras-copied/bundle:v1"),
        ],
        &d.path,
    );
    assert_eq!(sha256(&copied.stdout), bundle_digest);
}

/// oras-py (from PyPI, in the venv `scripts/test` makes) reads what we push.
#[test]
fn oras_py_reads_what_we_push() {
    let python = std::env::var_os("OCI_PACKER_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
        });
    assert!(
        python.is_file(),
        "{} missing: run scripts/test (it makes the venv with oras-py)",
        python.display()
    );
    let reg = RegistryServer::start();
    let d = TestDir::new();
    d.write("files/a.json", r#"{"a": 1}"#);
    d.write("files/sub/b.txt", "b");
    d.write(
        "pack.yaml",
        "type: application/vnd.example.py\nitems:\n  - from: dir://files\n",
    );
    let target = reg.reference("py/art:v1");
    let digest = packed_digest(&run(
        &d.path,
        &["--plain-http", "pack", "-f", "pack.yaml", &target],
        &[],
    ));
    let script = r#"
import json, sys, oras.client
host, target, out = sys.argv[1:4]
c = oras.client.OrasClient(hostname=host, insecure=True)
print(json.dumps({"manifest": c.get_manifest(target), "files": sorted(c.pull(target=target, outdir=out))}))
"#;
    let out = d.mkdir("pulled");
    let o = Command::new(&python)
        .args([
            "-c",
            script,
            &reg.addr,
            &target,
            out.to_str().expect("utf8"),
        ])
        .output()
        .expect("python");
    assert!(
        o.status.success(),
        "oras-py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    let layout_manifest = {
        pack_ok(&d, "pack.yaml", "oci://layout:v1");
        blob_json(&d.join("layout"), &digest)
    };
    assert_eq!(
        v["manifest"], layout_manifest,
        "oras-py reads the manifest we pushed"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("a.json")).expect("a"),
        r#"{"a": 1}"#
    );
    assert_eq!(
        std::fs::read_to_string(out.join("sub/b.txt")).expect("b"),
        "b"
    );
}

/// Distribution's `auth: token`: Bearer tokens fetched from the realm with service and
/// scope (pull and push on the target, pull on a mount source), refused without credentials.
#[test]
fn token_auth_registry() {
    let t = TokenRegistry::start("bob", "hunter2");
    let d = TestDir::new();
    multi_pack(&d);
    let target = t.registry.reference("tok/multi:v1");
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            "none.json",
            "pack",
            "-f",
            "multi.yaml",
            &target,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("refused access") && stderr(&o).contains("oci-packer login"),
        "{}",
        stderr(&o)
    );
    let creds = ["--plain-http", "-u", "bob", "-p", "hunter2"];
    let mut args = creds.to_vec();
    args.extend(["pack", "-f", "multi.yaml", &target]);
    let digest = packed_digest(&run(&d.path, &args, &[]));
    assert_eq!(
        sha256(&skopeo_raw_with_creds(&target, Some("bob:hunter2"))),
        digest
    );
    let mut args = creds.to_vec();
    let other = t.registry.reference("tok2/multi:v1");
    args.extend(["--format", "json", "copy", &target, &other]);
    let o = run(&d.path, &args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(
        v["stats"]["mounted"], 5,
        "mounts work with a token that may pull from the source: {v}"
    );
    let granted = t.granted.lock().expect("lock").clone();
    assert!(
        granted
            .iter()
            .any(|s| s == "repository:tok/multi:pull,push"),
        "{granted:?}"
    );
    assert!(
        granted.iter().any(|s| s == "repository:tok/multi:pull"),
        "mount scope: {granted:?}"
    );
}

/// `skopeo inspect --raw` of a registry reference, with `user:password` when given.
fn skopeo_raw_with_creds(reference: &str, creds: Option<&str>) -> Vec<u8> {
    let mut args = vec![
        "inspect".to_string(),
        "--tls-verify=false".into(),
        "--raw".into(),
    ];
    if let Some(c) = creds {
        args.extend(["--creds".to_string(), c.to_string()]);
    }
    args.push(format!("docker://{reference}"));
    let o = Command::new("skopeo").args(&args).output().expect("skopeo");
    assert!(
        o.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// HTTPS registries: certificates are verified; `--ca-file` trusts a private CA,
/// `--insecure` skips verification, and the errors say which to use.
#[test]
fn tls_verification_ca_file_and_insecure() {
    let (reg, cert) = RegistryServer::with_tls();
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("pack.yaml", "items:\n  - from: file://a.txt\n");
    let target = reg.reference("tls/a:v1");
    let o = run(&d.path, &["pack", "-f", "pack.yaml", &target], &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("https://{}/v2/", reg.addr)) && err.contains("--ca-file"),
        "{err}"
    );
    let ca = cert.to_str().expect("utf8");
    let digest = packed_digest(&run(
        &d.path,
        &["--ca-file", ca, "pack", "-f", "pack.yaml", &target],
        &[],
    ));
    let o = run(
        &d.path,
        &["--insecure", "copy", &target, "oci://out:v1"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(entry(&d.join("out"), "v1")["digest"], digest.as_str());
    let o = run(
        &d.path,
        &["--plain-http", "copy", &target, "oci://out:v2"],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "plain HTTP to an HTTPS registry fails"
    );
    let o = run(
        &d.path,
        &["--ca-file", "missing.pem", "copy", &target, "oci://out:v3"],
        &[],
    );
    assert!(
        stderr(&o).contains("--ca-file") && stderr(&o).contains("missing.pem"),
        "{}",
        stderr(&o)
    );
}

/// `list host/repo` shows the repository's tags; `list host/repo:tag` one tree.
#[test]
fn list_a_repository_and_an_artifact() {
    let reg = RegistryServer::start();
    let d = TestDir::new();
    multi_pack(&d);
    d.write(
        "one.yaml",
        "type: application/vnd.example.one\nitems:\n  - from: file://a.txt\n",
    );
    let multi = packed_digest(&run(
        &d.path,
        &[
            "--plain-http",
            "pack",
            "-f",
            "multi.yaml",
            &reg.reference("lst/art:multi"),
        ],
        &[],
    ));
    let one = packed_digest(&run(
        &d.path,
        &[
            "--plain-http",
            "pack",
            "-f",
            "one.yaml",
            &reg.reference("lst/art:one"),
        ],
        &[],
    ));
    let o = run(
        &d.path,
        &["--plain-http", "list", &reg.reference("lst/art")],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<Vec<String>> = stdout(&o)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{}", stdout(&o));
    assert_eq!(
        rows[0][..4],
        [
            "multi",
            "index",
            multi.as_str(),
            "linux/amd64,linux/arm64,linux/arm/v7"
        ]
    );
    assert_eq!(
        rows[1][..5],
        [
            "one",
            "manifest",
            one.as_str(),
            "-",
            "application/vnd.example.one"
        ]
    );
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--format",
            "json",
            "list",
            &reg.reference("lst/art:multi"),
        ],
        &[],
    );
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(
        v["tree"]["descriptor"]["artifactType"],
        "application/vnd.example.multi"
    );
    assert_eq!(v["tree"]["children"].as_array().expect("members").len(), 3);
}

/// The rest of SPEC §4's credential order: the containers auth file, `credsStore`, and flags
/// winning over a config that holds wrong credentials.
#[test]
fn containers_auth_file_creds_store_and_flag_precedence() {
    use base64::Engine as _;
    let reg = RegistryServer::with_basic_auth("carol", "pw");
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("pack.yaml", "items:\n  - from: file://a.txt\n");
    let target = reg.reference("creds/a:v1");
    let good = base64::engine::general_purpose::STANDARD.encode("carol:pw");
    let bad = base64::engine::general_purpose::STANDARD.encode("carol:wrong");
    // Containers auth file ($REGISTRY_AUTH_FILE), no Docker config.
    let auth_file = d.write(
        "auth.json",
        format!(r#"{{"auths": {{"{}": {{"auth": "{good}"}}}}}}"#, reg.addr),
    );
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            "absent.json",
            "pack",
            "-f",
            "pack.yaml",
            &target,
        ],
        &[("REGISTRY_AUTH_FILE", auth_file.to_str().expect("utf8"))],
    );
    packed_digest(&o);
    // credsStore names a helper for every host.
    let path = credential_helper(&d, "teststore", "carol", "pw");
    let store_cfg = d.write("store.json", r#"{"credsStore": "teststore"}"#);
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            store_cfg.to_str().expect("utf8"),
            "copy",
            &target,
            "oci://out:a",
        ],
        &[("PATH", &path)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Wrong credentials in the Docker config lose to the flags; alone they are refused.
    let wrong_cfg = d.write(
        "wrong.json",
        format!(r#"{{"auths": {{"{}": {{"auth": "{bad}"}}}}}}"#, reg.addr),
    );
    let w = wrong_cfg.to_str().expect("utf8");
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            w,
            "copy",
            &target,
            "oci://out:b",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            w,
            "-u",
            "carol",
            "-p",
            "pw",
            "copy",
            &target,
            "oci://out:c",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A large file goes to the registry while it is hashed (one streamed PATCH, one pass), and
/// its digest is remembered: packing it again reads nothing and uploads nothing, until the
/// file changes.
#[test]
fn large_files_upload_while_hashing_and_are_not_read_again() {
    let reg = RegistryServer::start();
    let d = TestDir::new();
    let big: Vec<u8> = (0..20_000_000u32).map(|i| (i % 241) as u8).collect();
    d.write("big.bin", &big);
    d.write("note.txt", "v1");
    d.write(
        "pack.yaml",
        "items:\n  - from: file://big.bin\n  - from: file://note.txt\n",
    );
    let tmp = d.mkdir("tmp");
    let args = |target: &str| -> Vec<String> {
        [
            "--plain-http",
            "--tmp-dir",
            tmp.to_str().expect("utf8"),
            "--format",
            "json",
            "pack",
            "-f",
            "pack.yaml",
            target,
        ]
        .map(String::from)
        .to_vec()
    };
    let requests = |from: usize| -> Vec<String> {
        std::thread::sleep(std::time::Duration::from_millis(200));
        reg.log()[from..]
            .lines()
            .filter_map(|l| l.split('"').nth(1).map(str::to_string))
            .filter(|r| r.contains("/v2/big/"))
            .collect()
    };
    let target = reg.reference("big/a:v1");
    // Packs once; returns the requests the registry saw for it.
    let pack_seen = || -> Vec<String> {
        let start = reg.log().len();
        let o = run(
            &d.path,
            &args(&target).iter().map(String::as_str).collect::<Vec<_>>(),
            &[],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        requests(start)
    };
    let first = pack_seen();
    assert_eq!(
        first.iter().filter(|r| r.starts_with("PATCH ")).count(),
        1,
        "one streamed PATCH: {first:?}"
    );
    let raw = skopeo_raw(&target);
    let manifest: Value = serde_json::from_slice(&raw).expect("json");
    assert_eq!(manifest["layers"][0]["digest"], sha256(&big).as_str());
    // Change only the small file: the big one is neither read nor uploaded again.
    d.write("note.txt", "v2");
    let second = pack_seen();
    assert_eq!(
        second.iter().filter(|r| r.starts_with("PATCH ")).count(),
        0,
        "{second:?}"
    );
    assert!(
        second
            .iter()
            .any(|r| r.starts_with(&format!("HEAD /v2/big/a/blobs/{}", sha256(&big)))),
        "{second:?}"
    );
    // Rewrite the big file (same size, other bytes): the cache misses, the new bytes go up.
    let changed: Vec<u8> = big.iter().map(|b| b.wrapping_add(1)).collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    d.write("big.bin", &changed);
    pack_seen();
    let manifest: Value = serde_json::from_slice(&skopeo_raw(&target)).expect("json");
    assert_eq!(manifest["layers"][0]["digest"], sha256(&changed).as_str());
    // The same file into a layout uses the cached digest and still verifies the bytes.
    assert!(pack_ok(&d, "pack.yaml", "oci://layout:v1").starts_with("sha256:"));
}

/// A 1 GiB `file://` pushed to a registry is uploaded while it is hashed, and the pack's
/// statistics count it as stored, with its bytes, in bounded memory.
#[test]
fn a_one_gib_file_pushed_to_a_registry_counts_as_stored() {
    let reg = RegistryServer::start();
    let d = TestDir::new();
    let big = std::fs::File::create(d.join("big.bin")).expect("create");
    big.set_len(1 << 30).expect("sparse 1 GiB");
    d.write("pack.yaml", "items:\n  - from: file://big.bin\n");
    let target = reg.reference("gib/a:v1");
    let (o, kib) = run_measured(
        &d.path,
        &[
            "--plain-http",
            "--format",
            "json",
            "pack",
            "-f",
            "pack.yaml",
            &target,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let result: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        result["stats"]["stored"], 3,
        "layer, config, manifest: {result}"
    );
    assert_eq!(result["stats"]["skipped"], 0, "{result}");
    assert!(
        result["stats"]["bytes"].as_u64().expect("bytes") > 1 << 30,
        "the layer's bytes are counted: {result}"
    );
    assert!(kib < 64 << 10, "peak RSS {kib} KiB");
}

/// `oras pull` gunzips every layer marked for unpacking: one artifact with a layer of each
/// archive mode pulls whole — the gzip one unpacked, the plain and zstd ones saved as the
/// archive files they are.
#[test]
fn oras_pull_reads_every_archive_mode() {
    let reg = RegistryServer::start();
    let d = TestDir::new();
    for dir in ["gz", "plain", "zst"] {
        d.write(&format!("{dir}/sub/{dir}.txt"), dir);
    }
    d.write(
        "pack.yaml",
        "items:\n  - from: dir://gz\n    archive: tar+gzip\n  - from: dir://plain\n    archive: tar\n  - from: dir://zst\n    archive: tar+zstd\n",
    );
    let target = reg.reference("modes/a:v1");
    let digest = packed_digest(&run(
        &d.path,
        &["--plain-http", "pack", "-f", "pack.yaml", &target],
        &[],
    ));
    let pulled = d.mkdir("pulled");
    oras(
        &[
            "pull",
            "--plain-http",
            &target,
            "-o",
            pulled.to_str().expect("utf8"),
        ],
        &d.path,
    );
    assert_eq!(
        std::fs::read_to_string(pulled.join("gz/sub/gz.txt")).expect("unpacked"),
        "gz"
    );
    // The other two are the layer blobs, byte for byte.
    let copy = d.mkdir("copy");
    run(
        &d.path,
        &[
            "--plain-http",
            "copy",
            &target,
            &format!("oci://{}:v1", copy.display()),
        ],
        &[],
    );
    let manifest = blob_json(&copy, &digest);
    for (i, name) in [(1, "plain"), (2, "zst")] {
        let layer = &manifest["layers"][i];
        assert_eq!(layer["annotations"]["org.opencontainers.image.title"], name);
        let saved = std::fs::read(pulled.join(name)).expect("saved as a file");
        assert_eq!(
            saved,
            blob(&copy, layer["digest"].as_str().expect("digest")),
            "{name}"
        );
    }
}

/// With a credential helper configured (`credsStore`, or the host's `credHelpers`), `login`
/// stores through it — no password in the Docker config, only an empty `auths` entry — and
/// `logout` erases through it; lookups follow Docker's order (`credHelpers`, `credsStore`,
/// then `auths`).
#[test]
fn login_and_logout_go_through_the_configured_credential_helper() {
    let reg = RegistryServer::with_basic_auth("alice", "s3cret");
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("pack.yaml", "items:\n  - from: file://a.txt\n");
    let (path, store) = file_credential_helper(&d, "filestore");
    let target = reg.reference("private/a:v1");
    let host = reg.addr.as_str();
    for (name, config) in [
        ("credsStore", json!({"credsStore": "filestore"})),
        (
            "credHelpers",
            json!({"credsStore": "missing-helper", "credHelpers": {host: "filestore"}}),
        ),
    ] {
        let cfg = d.write(&format!("{name}/config.json"), config.to_string());
        let cfg = cfg.to_str().expect("utf8");
        let env = [("PATH", path.as_str())];
        let o = run(
            &d.path,
            &[
                "--plain-http",
                "--registry-config",
                cfg,
                "-u",
                "alice",
                "-p",
                "s3cret",
                "login",
                host,
            ],
            &env,
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let text = std::fs::read_to_string(cfg).expect("config");
        assert!(
            !text.contains("auth\""),
            "{name}: a password in the config: {text}"
        );
        assert_eq!(
            read_json(std::path::Path::new(cfg))["auths"][host],
            json!({}),
            "{name}"
        );
        let kept: Vec<_> = std::fs::read_dir(&store).expect("store").collect();
        assert_eq!(kept.len(), 1, "{name}: the helper stored it");
        let o = run(
            &d.path,
            &[
                "--plain-http",
                "--registry-config",
                cfg,
                "pack",
                "-f",
                "pack.yaml",
                &target,
            ],
            &env,
        );
        assert!(
            o.status.success(),
            "{name}: found through the helper: {}",
            stderr(&o)
        );
        let o = run(&d.path, &["--registry-config", cfg, "logout", host], &env);
        assert!(
            stdout(&o).contains("Removed credentials"),
            "{name}: {}",
            stdout(&o)
        );
        assert_eq!(
            std::fs::read_dir(&store).expect("store").count(),
            0,
            "{name}: erased"
        );
        assert!(read_json(std::path::Path::new(cfg))["auths"]
            .get(host)
            .is_none());
        let o = run(
            &d.path,
            &[
                "--plain-http",
                "--registry-config",
                cfg,
                "copy",
                &target,
                "oci://pulled:v1",
            ],
            &env,
        );
        assert_eq!(
            o.status.code(),
            Some(1),
            "{name}: still authorised after logout"
        );
    }
    // Docker's order: the helper's credential wins over a stale one in `auths`.
    let (path2, _) = file_credential_helper(&d, "filestore");
    let cfg = d.write(
        "order/config.json",
        json!({"credsStore": "filestore"}).to_string(),
    );
    let cfg = cfg.to_str().expect("utf8");
    let env = [("PATH", path2.as_str())];
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            cfg,
            "-u",
            "alice",
            "-p",
            "s3cret",
            "login",
            host,
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut config = read_json(std::path::Path::new(cfg));
    use base64::Engine as _;
    config["auths"][host] =
        json!({"auth": base64::engine::general_purpose::STANDARD.encode("alice:stale")});
    std::fs::write(cfg, config.to_string()).expect("write");
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--registry-config",
            cfg,
            "copy",
            &target,
            "oci://ordered:v1",
        ],
        &env,
    );
    assert!(
        o.status.success(),
        "the helper comes before auths: {}",
        stderr(&o)
    );
}

/// `login` checks credentials as `docker login` does — `/v2/` with a token for no scope, or
/// for `registry:catalog:*` where the token service demands a scope — and never asks for
/// push access to a made-up repository. Wrong credentials are refused either way.
#[test]
fn login_asks_for_no_repository_scope() {
    for demand_scope in [false, true] {
        let t = TokenRegistry::start_with("bob", "hunter2", demand_scope);
        let d = TestDir::new();
        let cfg = d.join("config.json");
        let cfg = cfg.to_str().expect("utf8");
        let host = t.registry.addr.as_str();
        let o = run(
            &d.path,
            &[
                "--plain-http",
                "--registry-config",
                cfg,
                "-u",
                "bob",
                "-p",
                "hunter2",
                "login",
                host,
            ],
            &[],
        );
        assert!(o.status.success(), "{demand_scope}: {}", stderr(&o));
        let granted = t.granted.lock().expect("lock").clone();
        let expect = if demand_scope {
            "registry:catalog:*"
        } else {
            ""
        };
        assert_eq!(granted, [expect], "{demand_scope}");
        let o = run(
            &d.path,
            &[
                "--plain-http",
                "--registry-config",
                cfg,
                "-u",
                "bob",
                "-p",
                "wrong",
                "login",
                host,
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(1), "{demand_scope}: {}", stderr(&o));
        assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
    }
}
