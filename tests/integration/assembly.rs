//! SPEC §2.5: manifest and index mode, grouping, configs, annotation levels, determinism.

use serde_json::{json, Value};

use crate::util::*;

const EMPTY: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn seed_tree(d: &TestDir) {
    d.write("schema.json", r#"{"type":"object"}"#);
    d.write("config.tmpl", "port={{port}}\n");
    d.write("data/one.bin", "1");
    d.write("data/sub/two.bin", "22");
}

/// The seed README's example, its https item served by a local server, its oci:// item out.
#[test]
fn seed_readme_example_packs_with_the_spec_structure() {
    let srv = HttpServer::start();
    srv.route(
        "/binary.tar.gz",
        Reply::Body {
            body: b"binary".to_vec(),
            etag: "\"b\"".into(),
        },
    );
    let d = TestDir::new();
    seed_tree(&d);
    d.write(
        "artifact.yaml",
        format!(
            "# Artifact type\n\
             type: application/vnd.example.artifact\n\
             annotations:\n\
             \x20 org.opencontainers.image.title: \"My Artifact\"\n\
             \x20 org.opencontainers.image.vendor: \"Arenadata\"\n\
             config:\n\
             \x20 from: file://schema.json\n\
             \x20 type: application/vnd.example.schema\n\
             items:\n\
             \x20 - from: file://config.tmpl\n\
             \x20   type: application/vnd.example.template\n\
             \x20   annotations:\n\
             \x20     description: \"Configuration template\"\n\
             \x20 - from: dir://data/\n\
             \x20   type: application/vnd.example.data\n\
             \x20 - from: {}\n",
            srv.url("/binary.tar.gz")
        ),
    );
    let digest = packed_digest(&run(
        &d.path,
        &["-f", "artifact.yaml", "oci://build/layout:v1.0"],
        &[],
    ));
    let layout = d.join("build/layout");
    skopeo_reads(&layout, "v1.0");
    let entry = entry(&layout, "v1.0");
    assert_eq!(entry["digest"], digest.as_str());
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(entry["artifactType"], "application/vnd.example.artifact");
    let m = blob_json(&layout, &digest);
    let sha = |p: &str| {
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                std::fs::read(d.join(p)).expect("read")
            ))
        )
    };
    let expected = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.artifact",
        "config": {"mediaType": "application/vnd.example.schema", "digest": sha("schema.json"), "size": 17},
        "layers": [
            {"mediaType": "application/vnd.example.template", "digest": sha("config.tmpl"), "size": 14,
             "annotations": {"description": "Configuration template", "org.opencontainers.image.title": "config.tmpl"}},
            {"mediaType": "application/vnd.example.data", "digest": sha("data/one.bin"), "size": 1,
             "annotations": {"io.arenadata.oci-packer.dir": "data", "org.opencontainers.image.title": "one.bin"}},
            {"mediaType": "application/vnd.example.data", "digest": sha("data/sub/two.bin"), "size": 2,
             "annotations": {"io.arenadata.oci-packer.dir": "data", "org.opencontainers.image.title": "sub/two.bin"}},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
             "digest": format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"binary"))), "size": 6,
             "annotations": {"org.opencontainers.image.title": "binary.tar.gz"}},
        ],
        "annotations": {"org.opencontainers.image.title": "My Artifact", "org.opencontainers.image.vendor": "Arenadata"},
    });
    assert_eq!(m, expected);
    // Canonical bytes: compact, keys sorted.
    let raw = String::from_utf8(blob(&layout, &digest)).expect("utf8");
    assert!(
        raw.starts_with(r#"{"annotations":{"org.opencontainers.image.title":"My Artifact""#),
        "{raw}"
    );
    assert!(!raw.contains(": ") && !raw.contains('\n'));
}

#[test]
fn index_mode_groups_by_platform_with_configs_and_annotations() {
    let d = TestDir::new();
    seed_tree(&d);
    d.write("amd.json", r#"{"arch":"amd64"}"#);
    d.write("default.json", r#"{"default":true}"#);
    d.write(
        "pack.yaml",
        "type: application/vnd.example.multi\n\
         annotations: {level: root}\n\
         config: {from: file://default.json, type: application/vnd.example.cfg, annotations: {level: config}}\n\
         items:\n\
         \x20 - from: file://config.tmpl\n\
         \x20   platform: linux(v8)/amd64\n\
         \x20   config: {from: file://amd.json}\n\
         \x20   annotations: {level: layer}\n\
         \x20 - from: file://schema.json\n\
         \x20 - from: dir://data\n\
         \x20   platform: linux/aarch64\n\
         \x20 - from: file://data/one.bin\n\
         \x20   platform: Linux(v8)/x86_64\n",
    );
    let digest = pack_ok(&d, "pack.yaml", "oci://out:multi");
    let out = d.join("out");
    skopeo_reads(&out, "multi");
    let index = blob_json(&out, &digest);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["artifactType"], "application/vnd.example.multi");
    assert_eq!(index["annotations"], json!({"level": "root"}));
    let members = index["manifests"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{index}");
    assert_eq!(
        members[0]["platform"],
        json!({"os": "linux", "os.version": "v8", "architecture": "amd64"})
    );
    assert_eq!(members[1].get("platform"), None);
    assert_eq!(
        members[2]["platform"],
        json!({"os": "linux", "architecture": "arm64"})
    );
    for m in members {
        assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(m["artifactType"], "application/vnd.example.multi");
        assert_eq!(m.get("annotations"), None);
    }
    let amd: Value = blob_json(&out, members[0]["digest"].as_str().expect("d"));
    assert_eq!(
        amd["config"]["mediaType"], "application/json",
        "item config: type inferred"
    );
    let titles: Vec<&str> = amd["layers"]
        .as_array()
        .expect("l")
        .iter()
        .map(|l| {
            l["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .expect("t")
        })
        .collect();
    assert_eq!(
        titles,
        ["config.tmpl", "one.bin"],
        "x86_64 normalises into the amd64 group"
    );
    assert_eq!(amd["layers"][0]["annotations"]["level"], "layer");
    let none: Value = blob_json(&out, members[1]["digest"].as_str().expect("d"));
    assert_eq!(
        none["config"]["mediaType"], "application/vnd.example.cfg",
        "top-level config is the default"
    );
    assert_eq!(none["config"]["annotations"], json!({"level": "config"}));
    let arm: Value = blob_json(&out, members[2]["digest"].as_str().expect("d"));
    assert_eq!(arm["layers"].as_array().expect("l").len(), 2);
    assert_eq!(arm["artifactType"], "application/vnd.example.multi");
}

#[test]
fn empty_config_and_default_artifact_type() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("pack.yaml", "items:\n  - from: file://a.txt\n");
    let digest = pack_ok(&d, "pack.yaml", "oci://out");
    let m = blob_json(&d.join("out"), &digest);
    assert_eq!(
        m["config"],
        json!({"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY, "size": 2, "data": "e30="})
    );
    assert_eq!(m["artifactType"], "application/vnd.unknown.artifact.v1");
    assert_eq!(blob(&d.join("out"), EMPTY), b"{}");
    assert_eq!(
        entry(&d.join("out"), "latest")["digest"],
        digest.as_str(),
        "REF defaults to latest"
    );
}

#[test]
fn same_inputs_same_digest_in_other_dirs_at_other_times() {
    let pack = "type: application/vnd.repro\nitems:\n  - from: file://a.txt\n  - from: dir://d\n    archive: tar+gzip\n  - from: dir://d\n    platform: linux/arm64\n";
    let make = |delay_mtime: bool| {
        let d = TestDir::new();
        d.write("a.txt", "same");
        d.write("d/x/y.txt", "y");
        d.write("pack.yaml", pack);
        if delay_mtime {
            let t = std::time::SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(86_400 * 365 * 40);
            for f in ["a.txt", "d/x/y.txt"] {
                std::fs::File::options()
                    .write(true)
                    .open(d.join(f))
                    .expect("open")
                    .set_modified(t)
                    .expect("mtime");
            }
        }
        let digest = pack_ok(&d, "pack.yaml", "oci://layout:r");
        (d, digest)
    };
    let (_a, d1) = make(false);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (b, d2) = make(true);
    assert_eq!(d1, d2);
    assert!(
        blob_json(&b.join("layout"), &d2)
            .get("annotations")
            .is_none(),
        "no timestamp by default"
    );
}

#[test]
fn created_comes_from_source_date_epoch_or_the_flag() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write(
        "pack.yaml",
        "annotations: {k: v}\nitems:\n  - from: file://a.txt\n",
    );
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let a = packed_digest(&run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://out:a"],
        &epoch,
    ));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = packed_digest(&run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://out:b"],
        &epoch,
    ));
    assert_eq!(
        a, b,
        "SOURCE_DATE_EPOCH gives the same digest at another time"
    );
    let m = blob_json(&d.join("out"), &a);
    assert_eq!(
        m["annotations"],
        json!({"k": "v", "org.opencontainers.image.created": "2023-11-14T22:13:20Z"})
    );
    let c = packed_digest(&run(
        &d.path,
        &[
            "pack",
            "--created",
            "2024-01-02T03:04:05Z",
            "-f",
            "pack.yaml",
            "oci://out:c",
        ],
        &epoch,
    ));
    assert_eq!(
        blob_json(&d.join("out"), &c)["annotations"]["org.opencontainers.image.created"],
        "2024-01-02T03:04:05Z"
    );
    let now = packed_digest(&run(
        &d.path,
        &["pack", "--created", "-f", "pack.yaml", "oci://out:now"],
        &[],
    ));
    let created = blob_json(&d.join("out"), &now)["annotations"]
        ["org.opencontainers.image.created"]
        .as_str()
        .expect("c")
        .to_string();
    assert!(
        created.starts_with("20") && created.ends_with('Z'),
        "{created}"
    );
    let bad = run(
        &d.path,
        &[
            "pack",
            "--created",
            "yesterday",
            "-f",
            "pack.yaml",
            "oci://out:x",
        ],
        &[],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("--created \"yesterday\""),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn dry_run_prints_what_would_be_written_and_writes_nothing() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write(
        "pack.yaml",
        "items:\n  - from: file://a.txt\n    platform: linux/amd64\n",
    );
    let o = run(
        &d.path,
        &["pack", "--dry-run", "-f", "pack.yaml", "oci://out:v1"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!d.join("out").exists(), "dry run wrote the layout");
    let printed = stdout(&o);
    let json = printed.trim_end().as_bytes();
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(json))
    );
    assert_eq!(pack_ok(&d, "pack.yaml", "oci://out:v1"), digest);
}

/// Platforms mean what containerd means: equivalent spellings are one member, written in
/// containerd's normalised form; platforms Go does not know are kept as written.
#[test]
fn equivalent_platform_spellings_are_one_member_written_normalised() {
    let d = TestDir::new();
    let spellings = [
        "linux/arm64",
        "linux/arm64/v8",
        "linux/aarch64",
        "linux/arm",
        "linux/arm/v7",
        "linux/armhf",
        "linux/amd64",
        "linux/x86_64/v1",
        "wasi/wasm",
    ];
    let mut pack = String::from("items:\n");
    for (i, p) in spellings.iter().enumerate() {
        d.write(&format!("f{i}.txt"), p.as_bytes());
        pack += &format!("  - from: file://f{i}.txt\n    platform: {p}\n");
    }
    d.write("pack.yaml", &pack);
    let digest = pack_ok(&d, "pack.yaml", "oci://out:multi");
    let index = blob_json(&d.join("out"), &digest);
    let members = index["manifests"].as_array().expect("members");
    let platforms: Vec<&Value> = members.iter().map(|m| &m["platform"]).collect();
    assert_eq!(
        platforms,
        [
            &json!({"os": "linux", "architecture": "arm64"}),
            &json!({"os": "linux", "architecture": "arm", "variant": "v7"}),
            &json!({"os": "linux", "architecture": "amd64"}),
            &json!({"os": "wasi", "architecture": "wasm"}),
        ]
    );
    let layers = |i: usize| {
        blob_json(&d.join("out"), members[i]["digest"].as_str().expect("d"))["layers"]
            .as_array()
            .expect("layers")
            .len()
    };
    assert_eq!([layers(0), layers(1), layers(2), layers(3)], [3, 3, 2, 1]);
}

/// `--platform` lets an exact variant win: from an index holding both a plain `arm64` and
/// an `arm64/v8` member, `linux/arm64/v8` picks the v8 one and `linux/arm64` the plain one
/// (as skopeo does); `linux/aarch64/v8` is the v8 one too.
#[test]
fn copy_platform_prefers_the_exact_variant() {
    let d = TestDir::new();
    let src = d.join("src");
    let lay = RawLayout::new(&src);
    lay.put(b"{}");
    let plain = lay.put(&manifest(&[desc("text/plain", b"plain")]));
    let v8 = lay.put(&manifest(&[desc("text/plain", b"v8")]));
    lay.put(b"plain");
    lay.put(b"v8");
    let member = |digest: &str, platform: Value| json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": std::fs::metadata(lay.path(digest)).expect("m").len(), "platform": platform});
    let idx = index(&[
        member(&plain, json!({"os": "linux", "architecture": "arm64"})),
        member(
            &v8,
            json!({"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ),
    ]);
    let idx_digest = lay.put(&idx);
    lay.tag(json!({"mediaType": OCI_INDEX, "digest": idx_digest, "size": idx.len()}));
    for (wanted, expect) in [
        ("linux/arm64/v8", &v8),
        ("linux/aarch64/v8", &v8),
        ("linux/arm64", &plain),
    ] {
        let o = run(
            &d.path,
            &["copy", "--platform", wanted, "oci://src:v1", "oci://dst:x"],
            &[],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            entry(&d.join("dst"), "x")["digest"],
            expect.as_str(),
            "{wanted}"
        );
    }
}
