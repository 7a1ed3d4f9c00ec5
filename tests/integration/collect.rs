//! `delete` and `gc`: untagging and collecting layouts (shared blobs kept, nested indexes and
//! referrers handled, dry runs exact, racing packs safe, old temp files swept), and deleting
//! registry manifests.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::util::*;

/// `--format json` run of oci-packer: (exit status, stdout as JSON).
fn json_run(d: &TestDir, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let o = run(&d.path, &all, &[]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    if !o.status.success() {
        eprintln!("{}", stderr(&o));
    }
    (o.status.code(), v)
}

fn removed(v: &Value) -> BTreeSet<String> {
    v["removed"]
        .as_array()
        .expect("removed")
        .iter()
        .map(|b| b["digest"].as_str().expect("digest").to_string())
        .collect()
}

fn blob_names(lay: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(lay.join("blobs/sha256"))
        .expect("blobs")
        .flatten()
        .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
        .filter(|n| !n.contains(".oci-packer"))
        .collect()
}

/// Shared blobs survive a delete; a nested index (an index whose member is another index)
/// is collected with everything under it once nothing names it; a dry run says exactly what
/// the real run then removes; every remaining tag still verifies.
#[test]
fn delete_keeps_shared_blobs_collects_nested_indexes_and_dry_runs_exactly() {
    let d = TestDir::new();
    d.write("a.txt", "only in v1");
    d.write("b.txt", "only in v1 too");
    d.write("shared.bin", vec![7u8; 10_000]);
    d.write(
        "v1.yaml",
        "items:\n  - from: file://a.txt\n    platform: linux/amd64\n  - from: file://shared.bin\n    platform: linux/amd64\n  - from: file://b.txt\n    platform: linux/arm64\n",
    );
    d.write("v2.yaml", "items:\n  - from: file://shared.bin\n");
    d.write("nested.yaml", "items:\n  - from: oci://./lay:v1\n");
    pack_ok(&d, "v1.yaml", "oci://lay:v1");
    pack_ok(&d, "v2.yaml", "oci://lay:v2");
    pack_ok(&d, "nested.yaml", "oci://lay:nested");
    let all = blob_names(&d.join("lay"));

    // v1 is still reached through `nested`: deleting its tag removes nothing.
    let (code, v) = json_run(&d, &["delete", "oci://lay:v1"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["untagged"], serde_json::json!(["v1"]));
    assert!(removed(&v).is_empty(), "{v}");

    // Deleting `nested` now frees the nested index and v1's own blobs, not the shared ones.
    let (code, dry) = json_run(&d, &["delete", "--dry-run", "oci://lay:nested"]);
    assert_eq!((code, &dry["dryRun"]), (Some(0), &Value::Bool(true)));
    assert_eq!(blob_names(&d.join("lay")), all, "a dry run changed nothing");
    let (code, real) = json_run(&d, &["delete", "oci://lay:nested"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        removed(&real),
        removed(&dry),
        "the dry run said exactly what goes"
    );
    assert!(removed(&real).len() >= 6, "{real}");
    let left = blob_names(&d.join("lay"));
    assert_eq!(left, &all - &removed(&real));
    assert!(
        left.contains(&sha256(&[7u8; 10_000])),
        "the shared blob survived"
    );
    for text in ["only in v1", "only in v1 too"] {
        assert!(
            !left.contains(&sha256(text.as_bytes())),
            "{text} was collected"
        );
    }
    let o = run(&d.path, &["verify", "oci://lay:v2"], &[]);
    assert!(o.status.success(), "{}", stdout(&o));
    // Text output names the same blobs; a missing entry is an error; a bare layout needs gc.
    let o = run(&d.path, &["delete", "oci://lay:gone"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no entry named \"gone\""),
        "{}",
        stderr(&o)
    );
    let o = run(&d.path, &["delete", "oci://lay"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("oci-packer gc oci://lay"),
        "{}",
        stderr(&o)
    );
}

/// An artifact whose `subject` is a kept manifest (a referrer) is kept by `gc`, and goes
/// once its subject goes.
#[test]
fn referrers_of_kept_manifests_are_kept() {
    let d = TestDir::new();
    d.write("a.txt", "the subject's layer");
    d.write("p.yaml", "items:\n  - from: file://a.txt\n");
    let subject = pack_ok(&d, "p.yaml", "oci://lay:v1");
    let lay_dir = d.join("lay");
    let lay = RawLayout::new(&lay_dir);
    let sig = lay.put(b"signature");
    let mut referrer: Value =
        serde_json::from_slice(&manifest(&[desc("application/octet-stream", b"signature")]))
            .expect("json");
    let subject_size = std::fs::metadata(lay.path(&subject))
        .expect("subject")
        .len();
    referrer["subject"] =
        serde_json::json!({"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size});
    let referrer = lay.put(&serde_json::to_vec(&referrer).expect("json"));
    let (code, v) = json_run(&d, &["gc", "oci://lay"]);
    assert_eq!(code, Some(0));
    assert!(
        removed(&v).is_empty(),
        "a referrer of a kept manifest went: {v}"
    );
    let (_, v) = json_run(&d, &["delete", "oci://lay:v1"]);
    let gone = removed(&v);
    for digest in [&subject, &referrer, &sig] {
        assert!(gone.contains(digest.as_str()), "{digest} stayed: {v}");
    }
}

/// `gc` removes this program's temp files older than an hour, in the layout and its blobs
/// directory, and leaves fresh ones (a writer may be using them).
#[test]
fn gc_sweeps_old_temp_files_and_leaves_fresh_ones() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("p.yaml", "items:\n  - from: file://a.txt\n");
    pack_ok(&d, "p.yaml", "oci://lay:v1");
    let old = [
        d.write("lay/.oci-packer-old1", "x"),
        d.write("lay/blobs/sha256/.oci-packer-old2", "x"),
    ];
    let fresh = [
        d.write("lay/.oci-packer-new1", "x"),
        d.write("lay/blobs/sha256/.oci-packer-new2", "x"),
    ];
    for f in &old {
        let ok = std::process::Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(f)
            .status()
            .expect("touch");
        assert!(ok.success());
    }
    let (code, v) = json_run(&d, &["gc", "oci://lay"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["tempFiles"], 2, "{v}");
    assert!(old.iter().all(|f| !f.exists()) && fresh.iter().all(|f| f.exists()));
    let o = run(&d.path, &["verify", "oci://lay:v1"], &[]);
    assert!(o.status.success());
}

/// Twenty rounds of packs racing `delete` and `gc` on one layout: every pack succeeds, and
/// every tag left at the end passes `verify` (a collector never takes blobs a writer is about
/// to tag).
#[test]
fn packs_racing_delete_and_gc_leave_every_tag_whole() {
    let d = TestDir::new();
    d.write("shared.bin", vec![3u8; 50_000]);
    for i in 0..20 {
        d.write(&format!("f{i}.txt"), format!("file {i}"));
        d.write(
            &format!("p{i}.yaml"),
            format!("items:\n  - from: file://f{i}.txt\n  - from: file://shared.bin\n"),
        );
    }
    pack_ok(&d, "p0.yaml", "oci://lay:t0");
    let path = d.path.clone();
    let collector = std::thread::spawn(move || {
        for i in 0..20 {
            let args: Vec<String> = match i % 2 {
                0 => vec!["delete".into(), format!("oci://lay:t{}", i / 2)],
                _ => vec!["gc".into(), "oci://lay".into()],
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = run(&path, &args, &[]);
            // An entry not written yet is fine; anything else is not.
            assert!(
                o.status.success() || stderr(&o).contains("no entry named"),
                "{args:?}: {}",
                stderr(&o)
            );
        }
    });
    for i in 1..20 {
        pack_ok(&d, &format!("p{i}.yaml"), &format!("oci://lay:t{i}"));
    }
    collector.join().expect("collector");
    let tags = entry_names(&d.join("lay"));
    assert!(!tags.is_empty());
    for t in tags {
        let o = run(&d.path, &["verify", &format!("oci://lay:{t}")], &[]);
        assert!(o.status.success(), "{t}: {}", stdout(&o));
    }
}

/// Registries: deleting needs --force (every tag on the manifest goes); with it the manifest
/// is deleted; a registry that does not allow deletes (Distribution's default) is reported
/// as such.
#[test]
fn registry_deletes_need_force_and_report_registries_that_refuse() {
    let reg = RegistryServer::start();
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("p.yaml", "items:\n  - from: file://a.txt\n");
    let target = reg.reference("del/a:v1");
    let o = run(
        &d.path,
        &["--plain-http", "pack", "-f", "p.yaml", &target],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&d.path, &["--plain-http", "delete", &target], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("pass --force"), "{}", stderr(&o));
    let o = run(
        &d.path,
        &["--plain-http", "delete", "--force", &target],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("deleted manifest sha256:"),
        "{}",
        stdout(&o)
    );
    let o = run(&d.path, &["--plain-http", "list", &target], &[]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the manifest is gone: {}",
        stdout(&o)
    );

    let plain = RegistryServer::start_without_deletes();
    let target = plain.reference("del/a:v1");
    let o = run(
        &d.path,
        &["--plain-http", "pack", "-f", "p.yaml", &target],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        &d.path,
        &["--plain-http", "delete", "--force", &target],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unsupported by this registry"),
        "{}",
        stderr(&o)
    );
}

/// Hostile and damaged layouts: a manifest's bytes that are also another artifact's plain
/// layer are still followed as a manifest; a child digest that is a path out of the layout
/// is never followed (what it would name does not change what is kept); a manifest in use
/// that is damaged stops the collection (its children cannot be known) and nothing goes; a
/// layout without index.json is refused; `gc` with an entry is refused; the dry run counts
/// old temp files as the real run removes them.
#[test]
fn collections_of_hostile_or_damaged_layouts_keep_what_is_in_use() {
    let d = TestDir::new();
    for (name, text) in [("a.txt", "hello"), ("b.txt", "world"), ("s.txt", "shared")] {
        d.write(name, text);
    }
    d.write(
        "p1.yaml",
        "items:\n  - from: file://a.txt\n  - from: file://s.txt\n",
    );
    d.write(
        "p2.yaml",
        "items:\n  - from: file://b.txt\n  - from: file://s.txt\n",
    );
    pack_ok(&d, "p1.yaml", "oci://lay:v1");
    let v2 = pack_ok(&d, "p2.yaml", "oci://lay:v2");
    // v2's manifest bytes, packed again as a plain file layer of v3.
    let m = std::fs::read(d.join(&format!("lay/blobs/sha256/{}", &v2["sha256:".len()..])))
        .expect("manifest");
    d.write("manifest-copy.json", &m);
    d.write("p3.yaml", "items:\n  - from: file://manifest-copy.json\n");
    pack_ok(&d, "p3.yaml", "oci://lay:v3");
    let o = run(&d.path, &["gc", "oci://lay"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&d.path, &["verify", "oci://lay:v2"], &[]);
    assert!(o.status.success(), "v2 lost a blob: {}", stdout(&o));

    // A child whose digest is a path out of the layout.
    d.write("outside/y", "{}");
    let lay_dir = d.join("lay");
    let lay = RawLayout::new(&lay_dir);
    let orphan = lay.put(b"an orphan");
    let evil = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": "sha256:../../../outside/y", "size": 2});
    let bad = lay.put(&manifest(&[evil]));
    let mut index = read_json(&d.join("lay/index.json"));
    index["manifests"]
        .as_array_mut()
        .expect("manifests")
        .push(serde_json::json!({"mediaType": OCI_MANIFEST, "digest": bad,
            "size": manifest(&[serde_json::json!({"mediaType": OCI_MANIFEST, "digest": "sha256:../../../outside/y", "size": 2})]).len(),
            "annotations": {"org.opencontainers.image.ref.name": "evil"}}));
    std::fs::write(d.join("lay/index.json"), index.to_string()).expect("index");
    let (code, v) = json_run(&d, &["gc", "--dry-run", "oci://lay"]);
    assert_eq!(code, Some(0));
    assert!(removed(&v).contains(&orphan), "{v}");
    assert!(d.join("outside/y").exists());

    // A damaged manifest in use: refused, nothing removed.
    let v1_hex = {
        let idx = read_json(&d.join("lay/index.json"));
        let v1 = idx["manifests"]
            .as_array()
            .expect("m")
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "v1")
            .expect("v1")["digest"]
            .as_str()
            .expect("digest")
            .to_string();
        v1["sha256:".len()..].to_string()
    };
    let before = blob_names(&d.join("lay"));
    let path = d.join(&format!("lay/blobs/sha256/{v1_hex}"));
    let full = std::fs::read(&path).expect("v1");
    std::fs::write(&path, &full[..full.len() / 2]).expect("truncate");
    let o = run(&d.path, &["gc", "oci://lay"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing or damaged"), "{}", stderr(&o));
    assert_eq!(blob_names(&d.join("lay")), before, "something was removed");
    std::fs::write(&path, &full).expect("repair");

    // gc with an entry; no index.json; dry-run temp counts.
    let o = run(&d.path, &["gc", "oci://lay:v2"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("oci-packer delete oci://lay:v2"),
        "{}",
        stderr(&o)
    );
    d.write("lay/.oci-packer-old", "x");
    let ok = std::process::Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(d.join("lay/.oci-packer-old"))
        .status()
        .expect("touch");
    assert!(ok.success());
    let (_, dry) = json_run(&d, &["gc", "--dry-run", "oci://lay"]);
    let (_, real) = json_run(&d, &["gc", "oci://lay"]);
    assert_eq!(
        (&dry["tempFiles"], &real["tempFiles"]),
        (&1.into(), &1.into()),
        "{dry} {real}"
    );
    std::fs::remove_file(d.join("lay/index.json")).expect("rm index");
    let o = run(&d.path, &["gc", "oci://lay"], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("has no index.json"), "{}", stderr(&o));
}
