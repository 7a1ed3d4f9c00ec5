//! `extract REF OUTDIR` (SPEC §7.1): pack → extract → pack gives the same root digest, from a
//! layout and from a real registry, for a corpus of pack files covering every local source
//! kind, both modes, the archive formats, configs, annotations and platforms at every level,
//! image items, `${VAR}` and `SOURCE_DATE_EPOCH`.

use std::path::Path;

use serde_json::Value;
use sha2::Digest as _;

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
    std::fs::set_permissions(
        d.join("tree/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::os::unix::fs::symlink("index.html", d.join("tree/link.html")).expect("symlink");
    d.mkdir("tree/empty");
    d.write("mixed/a.json", "{}\n");
    d.write("mixed/b.txt", "b\n");
    d.write("mixed/c.bin", "c");
    d.write("odd/.oci-packer-cache", "not ours\n");
    d.write("odd/ok.txt", "ok\n");
}

/// One pack file of the corpus: its name, its text, extra environment.
type Case = (&'static str, String, Vec<(&'static str, &'static str)>);

/// The corpus: (name, pack file, extra environment).
fn corpus(image: &str, url: &str) -> Vec<Case> {
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
        (
            "dollar-keys",
            "annotations: {\"price$\": \"1\"}\nitems:\n- from: file://files/notes.txt\n  annotations: {\"k$x\": v}\n".into(),
            none(),
        ),
        ("temp-like-name", "items:\n- from: dir://odd/\n".into(), none()),
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
    let mut args = vec![
        "--plain-http",
        "--format",
        "json",
        "extract",
        reference,
        out.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    let o = run(&d.path, &args, &[]);
    assert!(
        o.status.success(),
        "extract {reference}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    serde_json::from_slice(&o.stdout).expect("json")
}

/// Packs `out/pack.yaml` again into `target` with the epoch the extraction recorded.
fn repack(d: &TestDir, x: &Value, target: &str) -> String {
    let epoch = x["sourceDateEpoch"].as_u64().map(|e| e.to_string());
    let env: Vec<(&str, &str)> = epoch
        .iter()
        .map(|e| ("SOURCE_DATE_EPOCH", e.as_str()))
        .collect();
    let pack = x["packFile"].as_str().expect("packFile");
    packed_digest(&run(
        &d.path,
        &["--plain-http", "pack", "-f", pack, target],
        &env,
    ))
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
    assert!(
        cases.len() >= 30,
        "the corpus has {} pack files",
        cases.len()
    );
    for (name, yaml, env) in cases {
        let file = format!("{name}.yaml");
        d.write(&file, &yaml);
        let (first, second) = match to_registry {
            Some(r) => (
                r.reference(&format!("first/{name}:v1")),
                r.reference(&format!("second/{name}:v1")),
            ),
            None => (
                format!("oci://first:{name}"),
                format!("oci://second:{name}"),
            ),
        };
        let packed = packed_digest(&run(
            &d.path,
            &["--plain-http", "pack", "-f", &file, &first],
            &env,
        ));
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

/// `diff -r` of two trees, which must agree.
fn same_tree(a: &Path, b: &Path) {
    let o = std::process::Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .output()
        .expect("diff");
    assert!(
        o.status.success(),
        "diff -r {} {}:\n{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&o.stdout)
    );
}

/// Type, mode, owner and (for everything but directories' times) mtime of every path, as
/// `find -printf` shows them.
fn metadata(dir: &Path) -> Vec<String> {
    let o = std::process::Command::new("find")
        .arg(".")
        .args(["-printf", "%p %y %m %u %g %T@ %l\n"])
        .current_dir(dir)
        .output()
        .expect("find");
    let mut lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn an_oras_push_extracts_and_unpacks_like_oras_pull() {
    let d = TestDir::new();
    d.write("work/readme.txt", "read me\n");
    d.write("work/site/index.html", "<p>x</p>\n");
    d.write("work/site/a/b.css", "b{}\n");
    let layout = d.join("oras-layout");
    oras(
        &[
            "push",
            "--oci-layout",
            &format!("{}:v1", layout.display()),
            "readme.txt",
            "site",
        ],
        &d.join("work"),
    );
    let reference = format!("oci://{}:v1", layout.display());
    // As files: the directory layer stays the archive ORAS made, byte for byte.
    let x = extract_ok(&d, &reference, &d.join("plain"), &[]);
    assert_eq!(
        std::fs::read(d.join("plain/readme.txt")).expect("readme"),
        b"read me\n"
    );
    let archive = std::fs::read(d.join("plain/site")).expect("archive");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
            .expect("json");
    let manifest = blob_json(
        &layout,
        index["manifests"][0]["digest"].as_str().expect("digest"),
    );
    let site_layer = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .find(|l| l["annotations"]["org.opencontainers.image.title"] == "site")
        .expect("site layer");
    assert_eq!(
        format!("sha256:{:x}", sha2::Sha256::digest(&archive)),
        site_layer["digest"].as_str().expect("digest")
    );
    // ORAS's JSON is not in oci-packer's form: said, since the root digest will differ.
    assert!(
        x["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("not in the form oci-packer writes")),
        "{x}"
    );
    // copy --unpack: the files ORAS typed as tar are no archives and stay as they are.
    let o = run(
        &d.path,
        &["copy", "--unpack", &reference, "oci://unpacked-copy:v1"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("(readme.txt) is typed as a tar archive but is not one"),
        "{}",
        stderr(&o)
    );
    // The pack file packs the same layers again.
    let again = repack(&d, &x, "oci://again:v1");
    let again_manifest = blob_json(&d.join("again"), &again);
    assert_eq!(again_manifest["layers"], manifest["layers"]);
    // --unpack: the directory, as `oras pull` gives it.
    extract_ok(&d, &reference, &d.join("unpacked"), &["--unpack"]);
    let pulled = d.mkdir("pulled");
    oras(
        &["pull", "--oci-layout", &format!("{}:v1", layout.display())],
        &pulled,
    );
    same_tree(&pulled.join("site"), &d.join("unpacked/site"));
    same_tree(&d.join("work/site"), &d.join("unpacked/site"));
}

/// A layer made by GNU tar as root: modes (setuid, 0700 directory), owners, a symlink, a
/// hard link, whiteout markers, an empty directory.
fn gnu_tar_layer(d: &TestDir, name: &str, build: impl FnOnce(&Path)) -> std::path::PathBuf {
    let root = d.mkdir(&format!("rootfs-{name}"));
    build(&root);
    let out = d.join(&format!("{name}.tar.gz"));
    let o = std::process::Command::new("tar")
        .args([
            "-czf",
            out.to_str().expect("utf8"),
            "-C",
            root.to_str().expect("utf8"),
            ".",
        ])
        .output()
        .expect("tar");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn an_image_with_gnu_tar_layers_copied_by_skopeo_unpacks_like_tar_x() {
    use std::os::unix::fs::PermissionsExt;
    let d = TestDir::new();
    let chmod = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    let l1 = gnu_tar_layer(&d, "base", |r| {
        std::fs::create_dir_all(r.join("usr/bin")).expect("mkdir");
        std::fs::write(r.join("usr/bin/tool"), "#!/bin/sh\n").expect("write");
        chmod(&r.join("usr/bin/tool"), 0o4755);
        std::fs::create_dir_all(r.join("root")).expect("mkdir");
        chmod(&r.join("root"), 0o700);
        std::fs::write(r.join("etc-passwd"), "root:x:0:0\n").expect("write");
        std::fs::hard_link(r.join("etc-passwd"), r.join("passwd-link")).expect("link");
        std::os::unix::fs::symlink("usr/bin/tool", r.join("tool")).expect("symlink");
        std::fs::create_dir_all(r.join("var/empty")).expect("mkdir");
        std::fs::write(r.join("owned"), "nobody's\n").expect("write");
        std::process::Command::new("chown")
            .args(["65534:65534"])
            .arg(r.join("owned"))
            .status()
            .expect("chown");
    });
    let l2 = gnu_tar_layer(&d, "top", |r| {
        std::fs::create_dir_all(r.join("usr/bin")).expect("mkdir");
        std::fs::write(r.join("usr/bin/.wh.tool"), "").expect("write");
        std::fs::create_dir_all(r.join("var")).expect("mkdir");
        std::fs::write(r.join("var/.wh..wh..opq"), "").expect("write");
        std::fs::write(r.join("new.txt"), "new\n").expect("write");
        chmod(&r.join("new.txt"), 0o600);
    });
    d.write("image-config.json", "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}");
    d.write(
        "image.yaml",
        "config: {from: file://image-config.json, type: application/vnd.oci.image.config.v1+json}\nitems:\n- from: file://base.tar.gz\n- from: file://top.tar.gz\n",
    );
    pack_ok(&d, "image.yaml", "oci://src:v1");
    let registry = RegistryServer::start();
    let target = registry.reference("gnu/image:v1");
    let o = std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", d.join("src").display()))
        .arg(format!("docker://{target}"))
        .output()
        .expect("skopeo must be installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let x = extract_ok(&d, &target, &d.join("out"), &["--unpack"]);
    assert_eq!(x["files"], 3, "{x}");
    for (name, layer) in [("base", &l1), ("top", &l2)] {
        let reference = d.mkdir(&format!("tar-x-{name}"));
        let o = std::process::Command::new("tar")
            .args([
                "-xzf",
                layer.to_str().expect("utf8"),
                "-C",
                reference.to_str().expect("utf8"),
            ])
            .output()
            .expect("tar");
        assert!(o.status.success());
        let ours = d.join(&format!("out/{name}"));
        same_tree(&reference, &ours);
        assert_eq!(
            metadata(&reference),
            metadata(&ours),
            "{name}: modes, owners or times differ from tar -x"
        );
    }
    // The config is written as it is.
    assert_eq!(
        std::fs::read(d.join("out/config.json")).expect("config"),
        std::fs::read(d.join("image-config.json")).expect("config")
    );
}

/// A layout exactly as the Go tool writes it: its mode marker in index.json, `repo:tag`
/// names, per-file `dir://` layers whose directory annotation is the path as written
/// (`./data`), layers with an artifactType, and an index of `cr://` members (bare entries).
#[test]
fn layouts_the_go_tool_wrote_extract_and_pack_again() {
    use crate::unpack::craft_layout;
    let d = TestDir::new();
    let layout = d.join("go-layout");
    let files = [
        ("a.tmpl", &b"alpha\n"[..]),
        ("nested/b.tmpl", &b"beta\n"[..]),
    ];
    let mut layers: Vec<(Vec<u8>, &str, Value)> = files
        .iter()
        .map(|(t, data)| (data.to_vec(), "application/octet-stream", serde_json::json!({"org.opencontainers.image.title": t, "io.arenadata.oci-packer.dir": "./data"})))
        .collect();
    layers.push((
        b"port=1\n".to_vec(),
        "application/octet-stream",
        serde_json::json!({"org.opencontainers.image.title": "app.conf"}),
    ));
    let manifest_digest = craft_layout(&layout, &layers);
    // The Go tool's index.json: its mode marker, a `repo:tag` name, a created time on the
    // root, and an index whose members are bare `cr://` entries.
    let manifest = blob(&layout, &manifest_digest);
    let index_json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "artifactType": "application/vnd.example.set",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}}],
        "annotations": {"org.opencontainers.image.created": "2024-05-06T07:08:09Z"},
    });
    let index_bytes = serde_json::to_vec(&index_json).expect("json");
    let index_digest = format!("sha256:{:x}", sha2::Sha256::digest(&index_bytes));
    std::fs::write(
        layout.join("blobs/sha256").join(&index_digest[7..]),
        &index_bytes,
    )
    .expect("write");
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "artifactType": "application/vnd.oci.layout.blobs.tar",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "example/service:v1"}},
                {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index_bytes.len(), "annotations": {"org.opencontainers.image.ref.name": "example/set:v1"}},
            ],
        }))
        .expect("json"),
    )
    .expect("write");
    // The manifest: dir layers regrouped into one dir:// item, files where they were.
    let x = extract_ok(
        &d,
        &format!("oci://{}:example/service:v1", layout.display()),
        &d.join("out"),
        &[],
    );
    assert_eq!(
        std::fs::read(d.join("out/data/a.tmpl")).expect("a"),
        b"alpha\n"
    );
    assert_eq!(
        std::fs::read(d.join("out/data/nested/b.tmpl")).expect("b"),
        b"beta\n"
    );
    assert_eq!(
        std::fs::read(d.join("out/app.conf")).expect("conf"),
        b"port=1\n"
    );
    let pack = std::fs::read_to_string(d.join("out/pack.yaml")).expect("pack");
    assert!(pack.contains("- from: dir://data/\n"), "{pack}");
    assert_eq!(pack.matches("- from:").count(), 2, "{pack}");
    let again = repack(&d, &x, "oci://again:service");
    let m = blob_json(&d.join("again"), &again);
    let titles = layer_titles(&m);
    assert_eq!(titles, ["a.tmpl", "nested/b.tmpl", "app.conf"]);
    // The index of cr:// members: each member an oci:// item by digest, the created time
    // as SOURCE_DATE_EPOCH.
    let x = extract_ok(
        &d,
        &format!("oci://{}:example/set:v1", layout.display()),
        &d.join("set"),
        &[],
    );
    assert_eq!(x["sourceDateEpoch"], 1714979289);
    let pack = std::fs::read_to_string(d.join("set/pack.yaml")).expect("pack");
    assert!(pack.contains(&format!("@{manifest_digest}")), "{pack}");
    let again = repack(&d, &x, "oci://again:set");
    let index_again = blob_json(&d.join("again"), &again);
    assert_eq!(
        index_again["manifests"][0]["digest"],
        manifest_digest.as_str()
    );
    assert_eq!(
        index_again["annotations"]["org.opencontainers.image.created"],
        "2024-05-06T07:08:09Z"
    );
    // With --images the member is copied and the pack file packs offline.
    let x = extract_ok(
        &d,
        &format!("oci://{}:example/set:v1", layout.display()),
        &d.join("offline"),
        &["--images"],
    );
    std::fs::remove_dir_all(&layout).expect("remove the source");
    let offline = repack(&d, &x, "oci://packed-offline:set");
    assert_eq!(offline, again);
}

#[test]
fn limits_platform_warnings_and_sizes() {
    let d = TestDir::new();
    sources(&d);
    d.write(
        "a.yaml",
        "items:\n- from: dir://tree/\n  archive: tar+gzip\n",
    );
    pack_ok(&d, "a.yaml", "oci://l:v1");
    // An archive of our own past the limit is an error, as for any archive.
    let o = run(
        &d.path,
        &["extract", "oci://l:v1", "small", "--max-bytes", "10"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("more than 10 bytes"), "{}", stderr(&o));
    assert!(!d.join("small").exists());
    let o = run(
        &d.path,
        &["extract", "oci://l:v1", "big", "--max-bytes", "1MB"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        &d.path,
        &["extract", "oci://l:v1", "bad", "--max-bytes", "12 parsecs"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a size"), "{}", stderr(&o));
    // --platform on a single manifest: taken as it is, with a warning.
    let o = run(
        &d.path,
        &["extract", "--platform", "linux/s390x", "oci://l:v1", "p"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("selects nothing"), "{}", stderr(&o));
}

/// Found by a hostile round: `--force` replaced user files before failing, and replaced a
/// user's directory tree by a file; a failed or cancelled extract removed files others put
/// in OUTDIR, or left its temp directory.
#[test]
fn force_never_swaps_files_and_directories_and_cancel_leaves_nothing() {
    let d = TestDir::new();
    d.write("f/data", "layer\n");
    d.write("f/sub/x", "x\n");
    d.write(
        "p.yaml",
        "items:\n- from: file://f/data\n- from: dir://f/sub/\n",
    );
    pack_ok(&d, "p.yaml", "oci://l:v1");
    // OUTDIR has a directory where a file goes, and a file where a directory goes.
    for (user, what) in [
        ("out1/data/important/keep.txt", "a directory"),
        ("out2/f", "a file"),
    ] {
        d.write(user, "mine\n");
        let out = user.split('/').next().expect("dir");
        let before = crate::unpack::tree_hash(&d.join(out));
        let o = run(&d.path, &["extract", "--force", "oci://l:v1", out], &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("is {what} in OUTDIR")),
            "{}",
            stderr(&o)
        );
        assert_eq!(
            crate::unpack::tree_hash(&d.join(out)),
            before,
            "{out} changed"
        );
    }
    // Ctrl-C while a large layer is written: exit 130, nothing left.
    let big = std::fs::File::create(d.join("big.bin")).expect("big");
    big.set_len(3 << 30).expect("sparse 3 GiB");
    d.write("big.yaml", "items:\n- from: file://big.bin\n");
    pack_ok(&d, "big.yaml", "oci://big:v1");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_oci-packer"))
        .current_dir(&d.path)
        .args(["-q", "extract", "oci://big:v1", "bigout"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let writing = |dir: &Path| {
        walk_files(dir)
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
    };
    wait_while_running(&mut child, "the layer being written", || {
        writing(&d.join("bigout"))
    });
    let out = interrupt(child);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        !d.join("bigout").exists(),
        "{:?}",
        walk_files(&d.join("bigout"))
    );
}

/// Every file below `dir`.
fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(_) => out.push(e.path()),
                Err(_) => {}
            }
        }
    }
    out
}

/// Found by a hostile round: `--created` with archives made without `SOURCE_DATE_EPOCH`
/// (mtime 0) must not turn into a `SOURCE_DATE_EPOCH` that stamps the archives.
#[test]
fn created_with_archives_at_time_zero_round_trips() {
    let d = TestDir::new();
    sources(&d);
    d.write(
        "c.yaml",
        "items:\n- from: dir://tree/\n  archive: tar+gzip\n",
    );
    let packed = packed_digest(&run(
        &d.path,
        &[
            "pack",
            "--created",
            "2024-01-02T03:04:05Z",
            "-f",
            "c.yaml",
            "oci://c:v1",
        ],
        &[],
    ));
    let x = extract_ok(&d, "oci://c:v1", &d.join("out"), &[]);
    assert_eq!(x["sourceDateEpoch"], Value::Null, "{x}");
    assert_eq!(repack(&d, &x, "oci://again:v1"), packed);
}
