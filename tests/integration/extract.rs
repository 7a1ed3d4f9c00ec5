//! `extract REF OUTDIR` (SPEC §7.1): pack → extract → pack gives the same root digest, from a
//! layout and from a real registry, for a corpus of pack files covering every local source
//! kind, both modes, the archive formats, configs, annotations and platforms at every level,
//! image items, `${VAR}` and `SOURCE_DATE_EPOCH`.

use std::path::Path;

use serde_json::Value;

use crate::util::*;

/// The sources every pack file of the corpus reads.
fn sources(d: &TestDir) {
    use std::os::unix::fs::PermissionsExt;
    d.write("files/app.conf.tmpl", "listen = 8080\n");
    d.write("files/data.json", "{\"a\": 1}\n");
    d.write("files/notes.txt", "plain text\n");
    d.write("files/tool", "#!/bin/sh\necho tool\n");
    std::fs::set_permissions(d.join("files/tool"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    d.write("files/price $5 & ünïcode.txt", "dollars\n");
    d.write("files/schema.json", "{\"type\": \"object\"}\n");
    d.write("files/image-config.json", "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}");
    d.write("files/other-config.json", "{\"other\": true}\n");
    d.write("tree/index.html", "<h1>hi</h1>\n");
    d.write("tree/css/site.css", "body{}\n");
    d.write("tree/sub/deep/file.yaml", "k: v\n");
    d.write("tree/run.sh", "#!/bin/sh\n");
    std::fs::set_permissions(d.join("tree/run.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::os::unix::fs::symlink("index.html", d.join("tree/link.html")).expect("symlink");
    d.mkdir("tree/empty");
    d.write("mixed/a.json", "{}\n");
    d.write("mixed/b.txt", "b\n");
    d.write("mixed/c.bin", "c");
}

/// The corpus: (name, pack file, extra environment).
fn corpus(image: &str, url: &str) -> Vec<(&'static str, String, Vec<(&'static str, &'static str)>)> {
    let none = Vec::new;
    vec![
        ("file", "items:\n- from: file://files/app.conf.tmpl\n".into(), none()),
        ("file-type-annotations", "items:\n- from: file://files/app.conf.tmpl\n  type: application/vnd.example.template\n  annotations: {description: template, z: last}\n".into(), none()),
        ("file-own-title", "items:\n- from: file://files/notes.txt\n  annotations: {org.opencontainers.image.title: renamed/notes.md}\n".into(), none()),
        ("file-exec", "items:\n- from: file://files/tool\n".into(), none()),
        ("file-odd-name", "items:\n- from: \"file://files/price $$5 & ünïcode.txt\"\n".into(), none()),
        ("dir", "items:\n- from: dir://tree/\n".into(), none()),
        ("dir-dot-slash", "items:\n- from: dir://./tree/sub/\n".into(), none()),
        ("dir-type", "items:\n- from: dir://mixed/\n  type: application/vnd.example.part\n".into(), none()),
        ("dir-inferred-mix", "items:\n- from: dir://mixed/\n".into(), none()),
        ("dir-annotations", "items:\n- from: dir://mixed\n  annotations: {team: data}\n".into(), none()),
        ("dir-twice", "items:\n- from: dir://mixed/\n- from: dir://mixed/\n".into(), none()),
        ("archive-tar", "items:\n- from: dir://tree/\n  archive: tar\n".into(), none()),
        ("archive-gzip", "items:\n- from: dir://tree/\n  archive: tar+gzip\n".into(), none()),
        ("archive-zstd", "items:\n- from: dir://tree/\n  archive: tar+zstd\n".into(), none()),
        ("archive-type-title", "items:\n- from: dir://tree/\n  archive: tar+gzip\n  type: application/vnd.example.site\n  annotations: {org.opencontainers.image.title: site.tgz, kind: site}\n".into(), none()),
        ("archive-epoch", "items:\n- from: dir://tree/\n  archive: tar+zstd\n".into(), vec![("SOURCE_DATE_EPOCH", "1700000000")]),
        ("created-epoch", "items:\n- from: file://files/notes.txt\n".into(), vec![("SOURCE_DATE_EPOCH", "1234567890")]),
        ("config", "config:\n  from: file://files/schema.json\nitems:\n- from: file://files/notes.txt\n".into(), none()),
        ("config-type-annotations", "type: application/vnd.example.bundle\nconfig:\n  from: file://files/schema.json\n  type: application/vnd.example.schema+json\n  annotations: {version: '2'}\nitems:\n- from: file://files/notes.txt\n".into(), none()),
        ("root-type-annotations", "type: application/vnd.example.thing\nannotations: {org.opencontainers.image.title: Thing, org.opencontainers.image.version: '1.0'}\nitems:\n- from: file://files/data.json\n".into(), none()),
        ("variables", "annotations: {version: \"${CORPUS_VERSION}\", fallback: \"${CORPUS_UNSET:-dflt}\", dollars: \"$$HOME\"}\nitems:\n- from: file://${CORPUS_DIR}/notes.txt\n".into(), vec![("CORPUS_VERSION", "3.1"), ("CORPUS_DIR", "files")]),
        ("mixed-manifest", "type: application/vnd.example.mixed\nitems:\n- from: file://files/app.conf.tmpl\n- from: dir://mixed/\n- from: dir://tree/\n  archive: tar+gzip\n- from: file://files/data.json\n".into(), none()),
        ("same-file-twice", "items:\n- from: file://files/notes.txt\n- from: file://files/notes.txt\n".into(), none()),
        ("http", format!("items:\n- from: {url}\n"), none()),
        ("index-platforms", "items:\n- from: file://files/tool\n  platform: linux/amd64\n- from: file://files/notes.txt\n  platform: linux/arm64\n".into(), none()),
        ("index-platform-and-none", "type: application/vnd.example.multi\nitems:\n- from: file://files/tool\n  platform: linux/amd64\n- from: dir://mixed/\n".into(), none()),
        ("index-variants", "items:\n- from: file://files/tool\n  platform: linux/arm/v7\n- from: file://files/notes.txt\n  platform: linux/arm64/v8\n- from: file://files/data.json\n  platform: windows(10.0.17763)/amd64\n".into(), none()),
        ("index-item-configs", "items:\n- from: file://files/tool\n  platform: linux/amd64\n  config: {from: file://files/schema.json}\n- from: file://files/notes.txt\n  platform: linux/arm64\n  config: {from: file://files/other-config.json, type: application/vnd.example.other+json}\n".into(), none()),
        ("index-top-config", "config: {from: file://files/schema.json, annotations: {level: top}}\nitems:\n- from: file://files/tool\n  platform: linux/amd64\n- from: file://files/notes.txt\n  platform: linux/arm64\n".into(), none()),
        ("index-top-and-item-config", "config: {from: file://files/schema.json}\nitems:\n- from: file://files/tool\n  platform: linux/amd64\n- from: file://files/notes.txt\n  platform: linux/arm64\n  config: {from: file://files/other-config.json}\n".into(), none()),
        ("index-archives", "items:\n- from: dir://tree/\n  archive: tar+zstd\n  platform: linux/amd64\n- from: dir://tree/\n  archive: tar\n  platform: linux/arm64\n".into(), vec![("SOURCE_DATE_EPOCH", "1600000000")]),
        ("image-item", format!("items:\n- from: {image}\n- from: file://files/notes.txt\n  platform: linux/amd64\n"), none()),
        ("image-item-typed", format!("type: application/vnd.example.set\nannotations: {{set: one}}\nitems:\n- from: {image}\n  type: application/vnd.example.member\n  platform: linux/amd64\n  annotations: {{role: base}}\n- from: dir://mixed/\n  platform: linux/arm64\n"), none()),
        ("only-images", format!("items:\n- from: {image}\n  platform: linux/amd64\n- from: {image}\n  platform: linux/arm64\n  annotations: {{copy: second}}\n"), none()),
    ]
}

/// Extracts `reference` into `out` (JSON output), asserting success.
fn extract_ok(d: &TestDir, reference: &str, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--plain-http", "--format", "json", "extract", reference, out.to_str().expect("utf8")];
    args.extend_from_slice(extra);
    let o = run(&d.path, &args, &[]);
    assert!(o.status.success(), "extract {reference}: {}{}", stdout(&o), stderr(&o));
    serde_json::from_slice(&o.stdout).expect("json")
}

/// Packs `out/pack.yaml` again into `target` with the epoch the extraction recorded.
fn repack(d: &TestDir, x: &Value, target: &str) -> String {
    let epoch = x["sourceDateEpoch"].as_u64().map(|e| e.to_string());
    let env: Vec<(&str, &str)> = epoch.iter().map(|e| ("SOURCE_DATE_EPOCH", e.as_str())).collect();
    let pack = x["packFile"].as_str().expect("packFile");
    packed_digest(&run(&d.path, &["--plain-http", "pack", "-f", pack, target], &env))
}

fn round_trip(to_registry: Option<&RegistryServer>) {
    let d = TestDir::new();
    sources(&d);
    // An image to use as an item: a manifest with an image config.
    std::fs::write(
        d.join("image.yaml"),
        "config: {from: file://files/image-config.json, type: application/vnd.oci.image.config.v1+json}\nitems:\n- from: dir://tree/\n  archive: tar+gzip\n",
    )
    .expect("write");
    pack_ok(&d, "image.yaml", "oci://images-src:base");
    let image = format!("oci://{}:base", d.join("images-src").display());
    let srv = HttpServer::start();
    srv.route(
        "/dl/payload.tar.gz",
        Reply::Body {
            body: b"not really gzip".to_vec(),
            etag: "\"v1\"".into(),
        },
    );
    let cases = corpus(&image, &srv.url("/dl/payload.tar.gz"));
    assert!(cases.len() >= 30, "the corpus has {} pack files", cases.len());
    for (name, yaml, env) in cases {
        let file = format!("{name}.yaml");
        d.write(&file, &yaml);
        let (first, second) = match to_registry {
            Some(r) => (r.reference(&format!("first/{name}:v1")), r.reference(&format!("second/{name}:v1"))),
            None => (format!("oci://first:{name}"), format!("oci://second:{name}")),
        };
        let packed = packed_digest(&run(&d.path, &["--plain-http", "pack", "-f", &file, &first], &env));
        let out = d.join(&format!("out-{name}"));
        let x = extract_ok(&d, &first, &out, &[]);
        assert_eq!(x["digest"], packed.as_str(), "{name}");
        assert_eq!(x["notes"], serde_json::json!([]), "{name}: {x}");
        let again = repack(&d, &x, &second);
        assert_eq!(
            again,
            packed,
            "{name}: pack → extract → pack changed the digest; pack.yaml:\n{}",
            std::fs::read_to_string(out.join("pack.yaml")).unwrap_or_default()
        );
    }
}

#[test]
fn round_trip_from_a_layout() {
    round_trip(None);
}

#[test]
fn round_trip_from_a_registry() {
    let registry = RegistryServer::start();
    round_trip(Some(&registry));
}
