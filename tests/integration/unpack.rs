//! Safe extraction (SPEC §7.1, §7.4): a corpus of crafted archives and artifacts — names with
//! `..`, absolute names, symlink and hard-link escapes (direct, chained, through a symlinked
//! parent), limits, titles that leave OUTDIR or collide — each refused with a clear error,
//! and the destination's parent exactly as it was (nothing written outside, nothing left).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::util::*;

/// One raw tar header block (GNU magic) with any name, type and link name, and its data.
pub fn tar_entry(name: &[u8], kind: u8, link: &[u8], data: &[u8], mode: u32) -> Vec<u8> {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, u64::from(mode));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, data.len() as u64);
    octal(&mut h, 136, 12, 0);
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..265].copy_from_slice(b"ustar  \0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

pub fn file(name: &str, data: &[u8]) -> Vec<u8> {
    tar_entry(name.as_bytes(), b'0', b"", data, 0o644)
}
pub fn dir(name: &str) -> Vec<u8> {
    tar_entry(name.as_bytes(), b'5', b"", b"", 0o755)
}
pub fn symlink(name: &str, target: &str) -> Vec<u8> {
    tar_entry(name.as_bytes(), b'2', target.as_bytes(), b"", 0o777)
}
pub fn hardlink(name: &str, target: &str) -> Vec<u8> {
    tar_entry(name.as_bytes(), b'1', target.as_bytes(), b"", 0o644)
}
/// A GNU long-name entry for the entry that follows.
fn long_name(name: &[u8]) -> Vec<u8> {
    let mut data = name.to_vec();
    data.push(0);
    tar_entry(b"././@LongLink", b'L', b"", &data, 0o644)
}
/// A PAX extended header setting `path` for the entry that follows.
fn pax_path(path: &str) -> Vec<u8> {
    let rec = |len: usize| format!("{len} path={path}\n");
    let mut len = rec(0).len();
    while rec(len).len() != len {
        len = rec(len).len();
    }
    tar_entry(b"PaxHeaders/x", b'x', b"", rec(len).as_bytes(), 0o644)
}

pub fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// A layout at `dir` with one manifest named `evil` holding these layers (bytes, media
/// type, annotations), written by hand so that anything can be in it.
pub fn craft_layout(dir: &Path, layers: &[(Vec<u8>, &str, Value)]) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let put = |data: &[u8]| {
        let d = sha(data);
        std::fs::write(blobs.join(&d[7..]), data).expect("blob");
        d
    };
    let config = put(b"{}");
    let descs: Vec<Value> = layers
        .iter()
        .map(|(data, mt, ann)| {
            let mut d = json!({"mediaType": mt, "digest": put(data), "size": data.len()});
            if !ann.is_null() {
                d["annotations"] = ann.clone();
            }
            d
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.evil",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2, "data": "e30="},
        "layers": descs,
    }))
    .expect("json");
    let m = put(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m, "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "evil"}}],
        }))
        .expect("json"),
    )
    .expect("write");
    m
}

/// Every path under `dir` with its type, mode, size, link target and content hash.
pub fn tree_hash(dir: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let what = if m.file_type().is_symlink() {
                format!(
                    "link {}",
                    std::fs::read_link(&p).expect("readlink").display()
                )
            } else if m.is_dir() {
                go(root, &p, out);
                "dir".to_string()
            } else if m.is_file() {
                sha(&std::fs::read(&p).expect("read"))
            } else {
                format!("special {:o}", m.mode())
            };
            out.insert(rel, format!("{what} mode {:o} uid {}", m.mode(), m.uid()));
        }
    }
    go(dir, dir, &mut out);
    out
}

/// Extracting the crafted `evil` artifact into `parent/out` must fail with `kind` and a
/// message containing `expect`, leaving `parent` exactly as it was.
fn refused(
    name: &str,
    layers: &[(Vec<u8>, &str, Value)],
    extra: &[&str],
    kind: &str,
    expect: &str,
) {
    let d = TestDir::new();
    let parent = d.mkdir("parent");
    // Targets an escape would reach: a file and a directory beside OUTDIR.
    d.write("parent/victim.txt", "untouched\n");
    d.mkdir("parent/outside");
    craft_layout(&d.join("layout"), layers);
    let before = tree_hash(&parent);
    let out = parent.join("out");
    let reference = format!("oci://{}:evil", d.join("layout").display());
    let mut args = vec![
        "--format",
        "json",
        "extract",
        &reference,
        out.to_str().expect("utf8"),
        "--unpack",
    ];
    args.extend_from_slice(extra);
    let o = run(&d.path, &args, &[]);
    assert!(
        !o.status.success(),
        "{name}: extract succeeded: {}",
        stdout(&o)
    );
    let err: Value = serde_json::from_slice(&o.stderr)
        .unwrap_or_else(|_| panic!("{name}: {}{}", stdout(&o), stderr(&o)));
    assert_eq!(err["error"]["kind"], kind, "{name}: {err}");
    let message = err["error"]["message"].as_str().expect("message");
    assert!(
        message.contains(expect),
        "{name}: {message:?} does not say {expect:?}"
    );
    assert!(
        !message.contains("/.oci-packer-"),
        "{name}: {message:?} names a temp path"
    );
    assert_eq!(tree_hash(&parent), before, "{name}: the parent changed");
    assert!(!out.exists(), "{name}: {} was left", out.display());
}

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

fn layer(entries: &[Vec<u8>]) -> Vec<(Vec<u8>, &'static str, Value)> {
    vec![(
        archive(entries),
        TAR,
        json!({"org.opencontainers.image.title": "layer.tar"}),
    )]
}

fn titled(files: &[(&str, &[u8])]) -> Vec<(Vec<u8>, &'static str, Value)> {
    files
        .iter()
        .map(|(t, data)| {
            (
                data.to_vec(),
                "text/plain",
                json!({"org.opencontainers.image.title": t}),
            )
        })
        .collect()
}

#[test]
fn malicious_archives_are_refused_and_leave_nothing() {
    let u = "unsafe_content";
    type Layers = Vec<(Vec<u8>, &'static str, Value)>;
    let cases: Vec<(&str, Layers, Vec<&str>, &str, &str)> = vec![
        (
            "dotdot",
            layer(&[file("../victim.txt", b"pwned")]),
            vec![],
            u,
            "climbs out",
        ),
        (
            "dotdot-inside",
            layer(&[dir("a/"), file("a/../../victim.txt", b"pwned")]),
            vec![],
            u,
            "climbs out",
        ),
        (
            "dot-slash-dotdot",
            layer(&[file("./../victim.txt", b"pwned")]),
            vec![],
            u,
            "climbs out",
        ),
        (
            "absolute",
            layer(&[file("/etc/oci-packer-test-victim", b"pwned")]),
            vec![],
            u,
            "absolute",
        ),
        (
            "long-name-dotdot",
            layer(&[
                long_name(b"x/../../../victim.txt"),
                file("placeholder", b"pwned"),
            ]),
            vec![],
            u,
            "climbs out",
        ),
        (
            "pax-path-dotdot",
            layer(&[pax_path("../victim.txt"), file("placeholder", b"pwned")]),
            vec![],
            u,
            "climbs out",
        ),
        (
            "pax-path-absolute",
            layer(&[
                pax_path("/tmp/oci-packer-victim"),
                file("placeholder", b"pwned"),
            ]),
            vec![],
            u,
            "absolute",
        ),
        (
            "nul-in-long-name",
            layer(&[
                long_name(b"a\0/../../victim.txt"),
                file("placeholder", b"pwned"),
            ]),
            vec![],
            u,
            "NUL",
        ),
        (
            "symlink-relative-escape",
            layer(&[symlink("link", "../victim.txt")]),
            vec![],
            u,
            "outside the destination",
        ),
        (
            "symlink-deep-escape",
            layer(&[
                dir("a/"),
                dir("a/b/"),
                symlink("a/b/link", "../../../outside"),
            ]),
            vec![],
            u,
            "outside the destination",
        ),
        // Found by a hostile round: a link written through a parent that is a link to `.`
        // is not as deep as its name says.
        (
            "symlink-through-dot-link",
            layer(&[
                symlink("a", "."),
                symlink("a/a/a/a/esc", "../../../../outside"),
            ]),
            vec![],
            u,
            "outside the destination",
        ),
        // ... and a hard link to a deep symlink gives its relative target a shallower home.
        (
            "hardlink-to-deep-symlink",
            layer(&[
                dir("a/"),
                dir("a/b/"),
                dir("a/b/c/"),
                symlink("a/b/c/l", "../../../x"),
                hardlink("esc", "a/b/c/l"),
            ]),
            vec![],
            u,
            "hard link to a symlink",
        ),
        (
            "symlink-lexical-escape",
            layer(&[symlink("x", "y/../../victim.txt")]),
            vec![],
            u,
            "outside the destination",
        ),
        (
            "symlink-chained",
            layer(&[
                dir("sub/"),
                symlink("d1", "sub"),
                symlink("sub/d2", "../.."),
            ]),
            vec![],
            u,
            "outside the destination",
        ),
        (
            "through-absolute-symlink-dir",
            layer(&[symlink("etc", "/"), file("etc/victim-abs", b"pwned")]),
            vec![],
            u,
            "leads outside",
        ),
        (
            "through-symlink-to-parent",
            layer(&[symlink("up", "/.."), file("up/victim.txt", b"pwned")]),
            vec![],
            u,
            "leads outside",
        ),
        (
            "through-symlinked-parent-dir",
            layer(&[
                symlink("out", "/tmp"),
                dir("out/x/"),
                file("out/x/y", b"pwned"),
            ]),
            vec![],
            u,
            "leads outside",
        ),
        (
            "hardlink-dotdot",
            layer(&[hardlink("h", "../victim.txt")]),
            vec![],
            u,
            "outside the destination",
        ),
        (
            "hardlink-absolute",
            layer(&[hardlink("h", "/etc/passwd")]),
            vec![],
            u,
            "outside the destination",
        ),
        (
            "hardlink-through-symlink",
            layer(&[symlink("s", "/etc"), hardlink("h", "s/passwd")]),
            vec![],
            u,
            "leads outside",
        ),
        (
            "hardlink-to-nothing",
            layer(&[hardlink("h", "missing")]),
            vec![],
            u,
            "has not created",
        ),
        (
            "hardlink-to-directory",
            layer(&[dir("d/"), hardlink("h", "d")]),
            vec![],
            u,
            "directory",
        ),
        (
            "directory-replaced-by-symlink",
            layer(&[dir("d/"), file("d/f", b"x"), symlink("d", "/tmp")]),
            vec![],
            u,
            "replace a directory",
        ),
        (
            "size-limit",
            layer(&[file("big", &[7u8; 4096])]),
            vec!["--max-bytes", "1000"],
            u,
            "more than 1000 bytes",
        ),
        (
            "entry-limit",
            layer(
                &(0..20)
                    .map(|i| file(&format!("f{i}"), b"x"))
                    .collect::<Vec<_>>(),
            ),
            vec!["--max-entries", "10"],
            u,
            "more than 10 entries",
        ),
        (
            "zstd-bomb",
            vec![(
                zstd::encode_all(&archive(&[file("zeros", &vec![0u8; 8 << 20])])[..], 19)
                    .expect("zstd"),
                "application/vnd.oci.image.layer.v1.tar+zstd",
                json!({"org.opencontainers.image.title": "bomb.tar.zst"}),
            )],
            vec!["--max-bytes", "1048576"],
            u,
            "more than 1048576 bytes",
        ),
        (
            "truncated",
            vec![(
                file("short", &[1u8; 4096])[..1000].to_vec(),
                TAR,
                json!({"org.opencontainers.image.title": "t.tar"}),
            )],
            vec![],
            u,
            "cannot be read",
        ),
        (
            "corrupt-gzip",
            vec![(
                vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5],
                "application/vnd.oci.image.layer.v1.tar+gzip",
                json!({"org.opencontainers.image.title": "c.tgz"}),
            )],
            vec![],
            u,
            "cannot be read",
        ),
        (
            "whiteout-aimed-outside",
            layer(&[file("../.wh.victim.txt", b"")]),
            vec![],
            u,
            "climbs out",
        ),
        // Titles of plain layers.
        (
            "title-dotdot",
            titled(&[("../victim.txt", b"pwned")]),
            vec![],
            u,
            "climbs out",
        ),
        (
            "title-deep-dotdot",
            titled(&[("a/../../victim.txt", b"pwned")]),
            vec![],
            u,
            "climbs out",
        ),
        (
            "title-absolute",
            titled(&[("/tmp/oci-packer-victim", b"pwned")]),
            vec![],
            u,
            "absolute",
        ),
        (
            "title-nul",
            titled(&[("a\u{0}b", b"pwned")]),
            vec![],
            u,
            "NUL",
        ),
        (
            "title-dotdot-alone",
            titled(&[("..", b"pwned")]),
            vec![],
            u,
            "climbs out",
        ),
        (
            "title-duplicate",
            titled(&[("same.txt", b"one"), ("same.txt", b"two")]),
            vec![],
            u,
            "collides",
        ),
        (
            "title-file-and-dir",
            titled(&[("a", b"one"), ("a/b", b"two")]),
            vec![],
            u,
            "collides",
        ),
        (
            "symlink-chain-through-dot",
            layer(&[symlink("a", "."), symlink("b", "a/../victim.txt")]),
            vec![],
            u,
            "outside the destination",
        ),
        (
            "dir-annotation-dotdot",
            vec![(
                b"x".to_vec(),
                "text/plain",
                json!({"org.opencontainers.image.title": "f", "io.arenadata.oci-packer.dir": "../up"}),
            )],
            vec![],
            u,
            "climbs out",
        ),
    ];
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for (name, layers, extra, kind, expect) in cases {
        refused(name, &layers, &extra, kind, expect);
    }
}

#[test]
fn a_corrupted_layer_is_refused_and_leaves_nothing() {
    let d = TestDir::new();
    let parent = d.mkdir("parent");
    let layers = layer(&[file("a", b"aaaa")]);
    craft_layout(&d.join("layout"), &layers);
    // Same size, other bytes.
    let digest = sha(&layers[0].0);
    let path = d.join("layout/blobs/sha256").join(&digest[7..]);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[600] ^= 1;
    std::fs::write(&path, bytes).expect("write");
    let before = tree_hash(&parent);
    for extra in [&[][..], &["--unpack"][..]] {
        let out = parent.join("out");
        let reference = format!("oci://{}:evil", d.join("layout").display());
        let mut args = vec!["extract", &reference, out.to_str().expect("utf8")];
        args.extend_from_slice(extra);
        let o = run(&d.path, &args, &[]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(&digest), "{}", stderr(&o));
        assert_eq!(tree_hash(&parent), before);
    }
}

#[test]
fn device_nodes_are_skipped_with_a_warning_when_not_root() {
    let d = TestDir::new();
    let char_dev = tar_entry(b"dev/null", b'3', b"", b"", 0o666);
    let block_dev = tar_entry(b"dev/sda", b'4', b"", b"", 0o660);
    craft_layout(
        &d.join("layout"),
        &layer(&[dir("dev/"), char_dev, block_dev, file("ok", b"fine")]),
    );
    let out = d.join("out");
    // The layout and the output directory belong to nobody, who runs extract.
    let o = std::process::Command::new("chown")
        .args(["-R", "nobody:nogroup", d.path.to_str().expect("utf8")])
        .output()
        .expect("chown");
    assert!(o.status.success());
    let reference = format!("oci://{}:evil", d.join("layout").display());
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_oci-packer"))
        .args([
            "extract",
            &reference,
            out.to_str().expect("utf8"),
            "--unpack",
        ])
        .env("XDG_CACHE_HOME", d.join("cache"))
        .env("HOME", d.join("home"))
        .output()
        .expect("setpriv");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2 device nodes not created"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(out.join("layer/ok")).expect("ok"), b"fine");
    assert!(!out.join("layer/dev/null").exists() && !out.join("layer/dev/sda").exists());
}

#[test]
fn limits_are_per_archive_and_can_be_raised() {
    let d = TestDir::new();
    craft_layout(&d.join("layout"), &layer(&[file("big", &[7u8; 4096])]));
    let reference = format!("oci://{}:evil", d.join("layout").display());
    let o = run(
        &d.path,
        &[
            "extract",
            &reference,
            "out",
            "--unpack",
            "--max-bytes",
            "4096",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(d.join("out/layer/big")).expect("big").len(),
        4096
    );
}

/// An image of two GNU tar layers: the second deletes `etc/a` with a whiteout and makes
/// `opq` opaque.
fn whiteout_image(d: &TestDir) {
    for (dir, files) in [
        (
            "r1",
            &[("etc/a", "a\n"), ("etc/b", "b\n"), ("opq/x", "x\n")][..],
        ),
        (
            "r2",
            &[
                ("etc/.wh.a", ""),
                ("opq/.wh..wh..opq", ""),
                ("opq/y", "y\n"),
            ][..],
        ),
    ] {
        for (f, text) in files {
            d.write(&format!("{dir}/{f}"), text);
        }
        let o = std::process::Command::new("tar")
            .args(["-czf", &format!("{dir}.tar.gz"), "-C", dir, "."])
            .current_dir(&d.path)
            .output()
            .expect("tar");
        assert!(o.status.success());
    }
    d.write("cfg.json", "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}");
    d.write(
        "image.yaml",
        "config: {from: file://cfg.json, type: application/vnd.oci.image.config.v1+json}\nitems:\n- from: file://r1.tar.gz\n- from: file://r2.tar.gz\n",
    );
}

fn layer_hexes(layout: &Path, name: &str) -> Vec<String> {
    let m = blob_json(
        layout,
        entry(layout, name)["digest"].as_str().expect("digest"),
    );
    m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest")[7..].to_string())
        .collect()
}

#[test]
fn copy_unpack_keeps_a_standard_layout_that_overlayfs_mounts() {
    let d = TestDir::new();
    whiteout_image(&d);
    let src = pack_ok(&d, "image.yaml", "oci://src:v1");
    let o = run(
        &d.path,
        &["copy", "--unpack", "oci://src:v1", "oci://dst:v1"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let dst = d.join("dst");
    let hexes = layer_hexes(&dst, "v1");
    let dirs: Vec<_> = hexes
        .iter()
        .map(|h| dst.join("unpacked/sha256").join(h))
        .collect();
    assert_eq!(std::fs::read(dirs[0].join("etc/a")).expect("a"), b"a\n");
    // Whiteouts in overlayfs form: a 0/0 character device, and the opaque xattr.
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh = std::fs::symlink_metadata(dirs[1].join("etc/a")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "{wh:?}");
    assert!(!dirs[1].join("etc/.wh.a").exists());
    let mut value = [0u8; 8];
    let n = rustix::fs::getxattr(
        dirs[1].join("opq").as_path(),
        "trusted.overlay.opaque",
        &mut value[..],
    )
    .expect("xattr");
    assert_eq!(&value[..n], b"y");
    // The layout stays standard: skopeo and ORAS read it, copies keep every digest.
    skopeo_reads(&dst, "v1");
    let pulled = d.mkdir("pulled");
    oras(
        &["pull", "--oci-layout", &format!("{}:v1", dst.display())],
        &pulled,
    );
    assert_eq!(
        std::fs::read(pulled.join("r2.tar.gz")).expect("layer"),
        std::fs::read(d.join("r2.tar.gz")).expect("layer")
    );
    let o = run(&d.path, &["copy", "oci://dst:v1", "oci://out:v1"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(entry(&d.join("out"), "v1")["digest"], src.as_str());
    let o = run(&d.path, &["verify", "oci://dst:v1"], &[]);
    assert!(o.status.success(), "{}", stdout(&o));
    // overlayfs merges the layers: the whiteout hides etc/a, the opaque dir hides opq/x.
    let mnt = d.mkdir("mnt");
    let lower = format!("lowerdir={}:{}", dirs[1].display(), dirs[0].display());
    let o = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &format!("ro,{lower}")])
        .arg(&mnt)
        .output()
        .expect("mount");
    assert!(
        o.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let merged = (
        mnt.join("etc/a").exists(),
        mnt.join("etc/b").exists(),
        mnt.join("opq/x").exists(),
        mnt.join("opq/y").exists(),
    );
    // While mounted, a delete that would remove the layers is refused and changes nothing.
    let refused = run(&d.path, &["delete", "oci://dst:v1"], &[]);
    let gc_refused = run(&d.path, &["gc", "oci://dst"], &[]);
    let still = dirs.iter().all(|p| p.is_dir()) && d.join("dst/index.json").exists();
    let umount = std::process::Command::new("umount")
        .arg(&mnt)
        .output()
        .expect("umount");
    assert!(umount.status.success());
    assert_eq!(merged, (false, true, false, true));
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("mounted") && stderr(&refused).contains("umount"),
        "{}",
        stderr(&refused)
    );
    assert!(still);
    assert!(
        gc_refused.status.success(),
        "gc removes nothing in use: {}",
        stderr(&gc_refused)
    );
    assert_eq!(entry(&dst, "v1")["digest"], src.as_str());
    // Unmounted: the delete goes through and takes the unpacked layers with the blobs.
    let o = run(&d.path, &["delete", "oci://dst:v1"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dirs.iter().all(|p| !p.exists()));
}

#[test]
fn pack_unpack_into_a_layout_and_refusals() {
    let d = TestDir::new();
    whiteout_image(&d);
    let o = run(
        &d.path,
        &["pack", "--unpack", "-f", "image.yaml", "oci://packed:v1"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for h in layer_hexes(&d.join("packed"), "v1") {
        assert!(d.join("packed/unpacked/sha256").join(&h).is_dir(), "{h}");
    }
    // An unpacked directory whose blob is gone is collected.
    d.mkdir(&format!("packed/unpacked/sha256/{}", "0".repeat(64)));
    let o = run(&d.path, &["gc", "oci://packed"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!d
        .join(&format!("packed/unpacked/sha256/{}", "0".repeat(64)))
        .exists());
    // Registries have no unpacked layers: refused before anything is written.
    let o = run(
        &d.path,
        &["pack", "--unpack", "-f", "image.yaml", "127.0.0.1:9/x:v1"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--unpack extracts layers into a layout"),
        "{}",
        stderr(&o)
    );
    // A hostile layer: the copy fails, no unpacked directory and no tag are left.
    craft_layout(
        &d.join("evil"),
        &layer(&[symlink("etc", "/"), file("etc/x", b"pwned")]),
    );
    let o = run(
        &d.path,
        &["copy", "--unpack", "oci://evil:evil", "oci://target:v1"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("leads outside"), "{}", stderr(&o));
    let index = read_json(&d.join("target/index.json"));
    assert_eq!(index["manifests"], json!([]));
    let leftovers: Vec<_> = std::fs::read_dir(d.join("target/unpacked/sha256"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Found by a hostile round: extension headers (PAX records, GNU long names) were read
/// whole into memory whatever `--max-bytes` said; now they are capped at 1 MiB, and the
/// run stays small.
#[test]
fn huge_extension_headers_are_refused_in_bounded_memory() {
    let big = 64usize << 20;
    let mut pax = b"0 path=".to_vec();
    pax.resize(big, b'a');
    for (name, header) in [
        ("pax", tar_entry(b"PaxHeaders/x", b'x', b"", &pax, 0o644)),
        (
            "gnu-long-name",
            tar_entry(b"././@LongLink", b'L', b"", &vec![b'n'; big], 0o644),
        ),
        (
            "pax-global",
            tar_entry(b"pax_global_header", b'g', b"", &pax, 0o644),
        ),
    ] {
        let d = TestDir::new();
        let tar = archive(&[header, file("f", b"x")]);
        let layer = zstd::encode_all(&tar[..], 3).expect("zstd");
        craft_layout(
            &d.join("layout"),
            &[(
                layer,
                "application/vnd.oci.image.layer.v1.tar+zstd",
                json!({"org.opencontainers.image.title": "bomb.tar.zst", "io.deis.oras.content.digest": sha(&tar)}),
            )],
        );
        let reference = format!("oci://{}:evil", d.join("layout").display());
        for args in [
            vec!["extract", reference.as_str(), "out"],
            vec!["extract", reference.as_str(), "out2", "--unpack"],
            vec!["copy", "--unpack", reference.as_str(), "oci://copied:v1"],
        ] {
            let (o, kib) = run_measured(&d.path, &args, &[]);
            assert_eq!(o.status.code(), Some(1), "{name} {args:?}: {}", stderr(&o));
            assert!(
                stderr(&o).contains("extension header"),
                "{name}: {}",
                stderr(&o)
            );
            assert!(
                stderr(&o).len() < 4096,
                "{name}: an error of {} bytes",
                stderr(&o).len()
            );
            assert!(kib < 64 * 1024, "{name} {args:?}: peak RSS {kib} KiB");
        }
        assert!(!d.join("out").exists() && !d.join("out2").exists());
    }
}

/// Found by a hostile round: unpacked layers keep setuid root files, so the directory
/// holding them is for root only.
#[test]
fn unpacked_layers_are_reachable_by_root_only() {
    use std::os::unix::fs::PermissionsExt;
    let d = TestDir::new();
    let suid = tar_entry(b"bin/tool", b'0', b"", b"#!/bin/sh\n", 0o4755);
    craft_layout(&d.join("layout"), &layer(&[dir("bin/"), suid]));
    let o = run(
        &d.path,
        &[
            "copy",
            "--unpack",
            &format!("oci://{}:evil", d.join("layout").display()),
            "oci://u:v1",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mode = std::fs::metadata(d.join("u/unpacked"))
        .expect("unpacked")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "ls"])
        .arg(d.join("u/unpacked/sha256"))
        .output()
        .expect("setpriv");
    assert!(!o.status.success(), "nobody can list the unpacked layers");
}

/// Found by a hostile round: a lower directory below a layer's directory, or named
/// relative to it, hid a live mount from `delete`.
#[test]
fn any_lower_directory_inside_a_layer_keeps_it() {
    let d = TestDir::new();
    craft_layout(
        &d.join("layout"),
        &layer(&[dir("a/"), dir("a/b/"), file("a/b/f", b"x")]),
    );
    let o = run(
        &d.path,
        &[
            "copy",
            "--unpack",
            &format!("oci://{}:evil", d.join("layout").display()),
            "oci://u:v1",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let hex = layer_hexes(&d.join("u"), "v1").remove(0);
    let layer_dir = d.join("u/unpacked/sha256").join(&hex);
    let empty = d.mkdir("empty");
    let mnt = d.mkdir("mnt");
    for (lower, cwd) in [
        (
            format!("{}:{}", layer_dir.join("a/b").display(), empty.display()),
            d.path.clone(),
        ),
        (
            format!("{hex}:{}", empty.display()),
            d.join("u/unpacked/sha256"),
        ),
    ] {
        let o = std::process::Command::new("mount")
            .current_dir(&cwd)
            .args([
                "-t",
                "overlay",
                "overlay",
                "-o",
                &format!("ro,lowerdir={lower}"),
            ])
            .arg(&mnt)
            .output()
            .expect("mount");
        assert!(
            o.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let refused = run(&d.path, &["delete", "oci://u:v1"], &[]);
        std::process::Command::new("umount")
            .arg(&mnt)
            .status()
            .expect("umount");
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{lower}: {}",
            stderr(&refused)
        );
        assert!(layer_dir.is_dir());
    }
    let o = run(&d.path, &["--format", "json", "delete", "oci://u:v1"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["unpacked"], json!([format!("sha256:{hex}")]));
}
