//! SPEC §3 layouts: atomic, locked index.json, re-tagging, corrupt input, concurrent writers,
//! crashes, and `list`.

use std::process::Stdio;

use serde_json::Value;

use crate::util::*;

/// Every blob under a digest name has that digest; index.json names only blobs that exist.
fn assert_layout_valid(dir: &std::path::Path) {
    use sha2::Digest;
    assert_eq!(
        std::fs::read(dir.join("oci-layout")).expect("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index = read_json(&dir.join("index.json"));
    for e in index["manifests"].as_array().expect("manifests") {
        let d = e["digest"].as_str().expect("digest");
        assert_eq!(
            blob(dir, d).len() as u64,
            e["size"].as_u64().expect("size"),
            "{d}"
        );
    }
    for f in std::fs::read_dir(dir.join("blobs/sha256")).expect("blobs") {
        let f = f.expect("entry");
        let name = f.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // an unfinished temp file, never under a digest name
        }
        let data = std::fs::read(f.path()).expect("read");
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&data)),
            name,
            "partial or wrong blob under a digest name"
        );
    }
}

#[test]
fn retagging_replaces_the_older_entry_and_entries_are_sorted() {
    let d = TestDir::new();
    write_two_packs(&d);
    let a = pack_ok(&d, "a.yaml", "oci://out:zeta");
    pack_ok(&d, "a.yaml", "oci://out:alpha");
    let b = pack_ok(&d, "b.yaml", "oci://out:zeta");
    assert_ne!(a, b);
    let index = read_json(&d.join("out/index.json"));
    let names: Vec<(&str, &str)> = index["manifests"]
        .as_array()
        .expect("m")
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .expect("n"),
                m["digest"].as_str().expect("d"),
            )
        })
        .collect();
    assert_eq!(names, [("alpha", a.as_str()), ("zeta", b.as_str())]);
    assert_eq!(index["schemaVersion"], 2);
    assert_layout_valid(&d.join("out"));
    skopeo_reads(&d.join("out"), "zeta");
    skopeo_reads(&d.join("out"), "alpha");
}

#[test]
fn corrupt_index_json_is_an_error_and_left_unchanged() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("pack.yaml", "items:\n  - from: file://a.txt\n");
    pack_ok(&d, "pack.yaml", "oci://out:v1");
    std::fs::write(d.join("out/index.json"), b"{\"manifests\": [").expect("corrupt");
    let before = snapshot(&d.join("out"));
    let o = run(&d.path, &["pack", "-f", "pack.yaml", "oci://out:v2"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("layout out: index.json is not a valid OCI index")
            && err.contains("left unchanged"),
        "{err}"
    );
    assert_eq!(snapshot(&d.join("out")), before);
    let o = run(&d.path, &["list", "oci://out"], &[]);
    assert!(
        stderr(&o).contains("index.json is not a valid OCI index"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_directory_that_is_not_a_layout_is_refused() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("pack.yaml", "items:\n  - from: file://a.txt\n");
    d.write("notalayout/readme", "mine");
    let o = run(
        &d.path,
        &["pack", "-f", "pack.yaml", "oci://notalayout:v1"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("exists but is not an OCI image layout"),
        "{}",
        stderr(&o)
    );
    assert_eq!(snapshot(&d.join("notalayout")).len(), 1);
}

#[test]
fn eight_processes_pack_into_one_layout_at_once() {
    let d = TestDir::new();
    d.write("shared.bin", vec![42u8; 300_000]);
    let mut children = Vec::new();
    for i in 0..8 {
        d.write(&format!("own{i}.txt"), format!("own {i}"));
        d.write(
            &format!("p{i}.yaml"),
            format!("items:\n  - from: file://shared.bin\n  - from: file://own{i}.txt\n"),
        );
        let child = bin()
            .current_dir(&d.path)
            .args([
                "pack",
                "-f",
                &format!("p{i}.yaml"),
                &format!("oci://out:tag{i}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        children.push(child);
    }
    for c in children {
        let o = c.wait_with_output().expect("wait");
        packed_digest(&o);
    }
    let mut names = entry_names(&d.join("out"));
    names.sort();
    assert_eq!(names, (0..8).map(|i| format!("tag{i}")).collect::<Vec<_>>());
    assert_layout_valid(&d.join("out"));
    for i in 0..8 {
        skopeo_reads(&d.join("out"), &format!("tag{i}"));
    }
}

/// Packs into one new layout at once, half of them failing after staging stored their
/// files there: every pack that succeeds has its whole graph in a valid layout (a failing
/// one takes the layout back only while no other writer holds it), and what is left names
/// only the tags that succeeded.
#[test]
fn failing_and_succeeding_packs_into_one_new_layout_at_once() {
    let d = TestDir::new();
    for i in 0..80 {
        d.write(&format!("src/f{i:02}.txt"), format!("shared {i}"));
    }
    d.write("own.txt", "own");
    d.write(
        "good.yaml",
        "items:\n  - from: dir://src\n  - from: file://own.txt\n",
    );
    d.write(
        "bad.yaml",
        format!(
            "items:\n  - from: dir://src\n  - from: file://own.txt\n    digest: sha256:{}\n",
            "1".repeat(64)
        ),
    );
    for round in 0..12 {
        let out = format!("out{round}");
        let children: Vec<_> = (0..4)
            .map(|i| {
                let (file, tag) = match i % 2 {
                    0 => ("good.yaml", format!("oci://{out}:good{i}")),
                    _ => ("bad.yaml", format!("oci://{out}:bad{i}")),
                };
                bin()
                    .current_dir(&d.path)
                    .args(["pack", "-f", file, &tag])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        for (i, c) in children.into_iter().enumerate() {
            let o = c.wait_with_output().expect("wait");
            match i % 2 {
                0 => {
                    packed_digest(&o);
                }
                _ => assert_eq!(o.status.code(), Some(1), "{round}: {}", stderr(&o)),
            }
        }
        assert_layout_valid(&d.join(&out));
        let mut names = entry_names(&d.join(&out));
        names.sort();
        assert_eq!(names, ["good0", "good2"], "{round}");
        for tag in ["good0", "good2"] {
            run_ok(&d.path, &["verify", &format!("oci://{out}:{tag}")]);
        }
    }
}

#[test]
fn a_pack_killed_midway_leaves_the_layout_valid() {
    let d = TestDir::new();
    d.write("small.txt", "small");
    d.write("small.yaml", "items:\n  - from: file://small.txt\n");
    pack_ok(&d, "small.yaml", "oci://out:before");
    // Large enough that hashing and copying take a while even in a release build.
    let big = std::fs::File::create(d.join("big.bin")).expect("create");
    big.set_len(512 << 20).expect("sparse 512 MiB");
    d.write(
        "big.yaml",
        "items:\n  - from: file://big.bin\n  - from: file://small.txt\n",
    );
    for delay_ms in [50u64, 400, 1200] {
        let mut child = bin()
            .current_dir(&d.path)
            .args(["pack", "-f", "big.yaml", "oci://out:big"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        assert_layout_valid(&d.join("out"));
        skopeo_reads(&d.join("out"), "before");
    }
    // A re-run completes and the earlier entry is still there.
    pack_ok(&d, "big.yaml", "oci://out:big");
    assert_layout_valid(&d.join("out"));
    assert_eq!(
        read_json(&d.join("out/index.json"))["manifests"]
            .as_array()
            .expect("m")
            .len(),
        2
    );
}

#[test]
fn fsync_option_writes_the_same_layout() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("pack.yaml", "items:\n  - from: file://a.txt\n");
    let a = packed_digest(&run(
        &d.path,
        &["--fsync", "pack", "-f", "pack.yaml", "oci://synced:v1"],
        &[],
    ));
    let b = pack_ok(&d, "pack.yaml", "oci://plain:v1");
    assert_eq!(a, b);
    assert_eq!(snapshot(&d.join("synced")), snapshot(&d.join("plain")));
}

#[test]
fn list_shows_entries_and_trees() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("b.json", "{}");
    d.write(
        "m.yaml",
        "type: application/vnd.example\nitems:\n  - from: file://a.txt\n",
    );
    d.write("i.yaml", "items:\n  - from: file://a.txt\n    platform: linux/amd64\n  - from: file://b.json\n    platform: linux/arm/v7\n");
    let m = pack_ok(&d, "m.yaml", "oci://out:man");
    let i = pack_ok(&d, "i.yaml", "oci://out:idx");
    let o = run(&d.path, &["list", "oci://out"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["REF", "KIND", "DIGEST", "PLATFORM", "ARTIFACT-TYPE", "SIZE"]
    );
    assert_eq!(
        &lines[1][..5],
        ["idx", "index", i.as_str(), "linux/amd64,linux/arm/v7", "-"]
    );
    assert_eq!(
        &lines[2][..5],
        [
            "man",
            "manifest",
            m.as_str(),
            "-",
            "application/vnd.example"
        ]
    );

    let o = run(&d.path, &["--format", "json", "list", "oci://out:idx"], &[]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["kind"], "artifact");
    assert_eq!(v["tree"]["descriptor"]["digest"], i.as_str());
    let members = v["tree"]["children"].as_array().expect("children");
    assert_eq!(members.len(), 2);
    assert_eq!(members[1]["descriptor"]["platform"]["variant"], "v7");
    assert_eq!(
        members[0]["children"][1]["descriptor"]["annotations"]["org.opencontainers.image.title"],
        "a.txt"
    );

    let o = run(&d.path, &["list", &format!("oci://out@{m}")], &[]);
    assert!(stdout(&o).contains("└── text/plain"), "{}", stdout(&o));
    let o = run(&d.path, &["list", "oci://out:nope"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no entry named \"nope\""),
        "{}",
        stderr(&o)
    );
    let o = run(&d.path, &["list", "oci://missing"], &[]);
    assert!(
        stderr(&o).contains("no OCI image layout there"),
        "{}",
        stderr(&o)
    );
}

/// Child mode of [`killed_runs_leave_temp_files_only_inside_the_layout`]: packs a large file
/// into the layout named by `OCI_PACKER_TEST_KILL_INTO` and kills itself (SIGKILL, no
/// destructors) at its first progress event, midway through writing it.
#[test]
#[ignore = "run by killed_runs_leave_temp_files_only_inside_the_layout"]
fn child_pack_that_kills_itself() {
    let Ok(target) = std::env::var("OCI_PACKER_TEST_KILL_INTO") else {
        return;
    };
    let file = std::env::var("OCI_PACKER_TEST_KILL_FILE").expect("file");
    let opts = oci_packer::Options {
        progress: oci_packer::Progress::new(|e| {
            if matches!(e, oci_packer::ProgressEvent::StageAdvanced { .. }) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &std::process::id().to_string()])
                    .status();
            }
        }),
        ..Default::default()
    };
    let _ = oci_packer::pack(
        oci_packer::PackInput::Yaml {
            text: format!("items:\n  - from: file://{file}\n"),
            base_dir: ".".into(),
        },
        &target,
        &opts,
    );
    unreachable!("killed");
}

/// A run killed midway leaves its temp files inside the layout — for a new layout too,
/// never in the parent directory — and the next writer removes those older than an hour
/// (a recent one may belong to a live writer and stays).
#[test]
fn killed_runs_leave_temp_files_only_inside_the_layout() {
    let d = TestDir::new();
    let big = d.join("big.bin");
    d.write(
        "big.bin",
        (0..48u32 << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    for (name, existing) in [("new", false), ("existing", true)] {
        let layout = d.join(name);
        if existing {
            d.write("small.txt", "small");
            d.write("small.yaml", "items:\n  - from: file://small.txt\n");
            pack_ok(&d, "small.yaml", &format!("oci://{name}:before"));
        }
        let status = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "layout::child_pack_that_kills_itself",
                "--ignored",
                "--quiet",
            ])
            .env(
                "OCI_PACKER_TEST_KILL_INTO",
                format!("oci://{}:v1", layout.display()),
            )
            .env("OCI_PACKER_TEST_KILL_FILE", &big)
            .stdout(Stdio::null())
            .status()
            .expect("child");
        assert!(!status.success(), "{name}: the child was not killed");
        let leftovers = temp_files(&d.path);
        assert!(
            !leftovers.is_empty(),
            "{name}: killed before writing anything"
        );
        for p in &leftovers {
            assert!(
                p.starts_with(&layout),
                "{name}: temp file outside the layout: {p:?}"
            );
        }
        // An hour later, the next pack into the layout removes them; a fresh one stays.
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        for p in &leftovers {
            std::fs::File::options()
                .write(true)
                .open(p)
                .and_then(|f| f.set_modified(two_hours_ago))
                .expect("age the leftover");
        }
        let fresh = layout.join(".oci-packer-fresh");
        std::fs::write(&fresh, "a live writer's").expect("fresh");
        d.write("a.txt", "a");
        d.write("a.yaml", "items:\n  - from: file://a.txt\n");
        pack_ok(&d, "a.yaml", &format!("oci://{name}:after"));
        assert_eq!(temp_files(&d.path), vec![fresh.clone()], "{name}");
        std::fs::remove_file(&fresh).expect("rm");
        assert_layout_valid(&layout);
    }
}

/// A small file system (a real tmpfs) that fills up midway: the pack fails with the
/// file system's error, waits for its writers, leaves no temp file, and the next pack of
/// something that fits succeeds.
#[test]
fn a_full_file_system_fails_cleanly_and_the_next_pack_works() {
    struct Tmpfs(std::path::PathBuf);
    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let d = TestDir::new();
    let mnt = d.mkdir("small-fs");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("mount (the tests run as root)");
    assert!(ok.success(), "mounting a tmpfs needs root");
    let _fs = Tmpfs(mnt.clone());
    d.write(
        "big.bin",
        (0..40u32 << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    d.write("other.bin", vec![9u8; 10 << 20]);
    d.write(
        "big.yaml",
        "items:\n  - from: file://big.bin\n  - from: file://other.bin\n",
    );
    let target = format!("oci://{}:v1", mnt.join("out").display());
    let o = run(&d.path, &["pack", "-f", "big.yaml", &target], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("No space left on device"),
        "{}",
        stderr(&o)
    );
    assert_eq!(temp_files(&mnt), Vec::<std::path::PathBuf>::new());
    d.write("a.txt", "a");
    d.write("a.yaml", "items:\n  - from: file://a.txt\n");
    pack_ok(
        &d,
        "a.yaml",
        &format!("oci://{}:small", mnt.join("out").display()),
    );
    assert_layout_valid(&mnt.join("out"));
}

/// `index.lock` (and the operation lock) are never opened through a symlink: a dangling
/// link planted in the layout makes the pack fail, and nothing appears where it points.
#[test]
fn lock_files_are_never_opened_through_symlinks() {
    for lock in ["index.lock", ".oci-packer.lock"] {
        let d = TestDir::new();
        d.write("a.txt", "a");
        d.write("a.yaml", "items:\n  - from: file://a.txt\n");
        pack_ok(&d, "a.yaml", "oci://out:v1");
        let planted = d.join("outside/planted");
        std::fs::create_dir_all(d.join("outside")).expect("mkdir");
        let _ = std::fs::remove_file(d.join("out").join(lock));
        std::os::unix::fs::symlink(&planted, d.join("out").join(lock)).expect("symlink");
        d.write("b.txt", "b");
        d.write("b.yaml", "items:\n  - from: file://b.txt\n");
        let o = run(&d.path, &["pack", "-f", "b.yaml", "oci://out:v2"], &[]);
        assert_eq!(o.status.code(), Some(2), "{lock}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("{lock} is a symlink")),
            "{lock}: {}",
            stderr(&o)
        );
        assert!(
            !planted.exists(),
            "{lock}: a file appeared outside the layout"
        );
    }
}

/// A layout whose `blobs` or `blobs/sha256` is a symlink to a directory outside is refused:
/// no blob (nor temp file) is written through it.
#[test]
fn blob_directories_must_be_real_directories() {
    for planted in ["blobs", "blobs/sha256"] {
        let d = TestDir::new();
        write_two_packs(&d);
        pack_ok(&d, "a.yaml", "oci://out:a");
        let outside = d.mkdir("outside");
        let link = d.join("out").join(planted);
        std::fs::rename(&link, d.join("moved")).expect("move");
        std::os::unix::fs::symlink(&outside, &link).expect("symlink");
        let o = run(&d.path, &["pack", "-f", "b.yaml", "oci://out:b"], &[]);
        assert_eq!(o.status.code(), Some(2), "{planted}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("is not a real directory"),
            "{}",
            stderr(&o)
        );
        assert_eq!(
            std::fs::read_dir(&outside).expect("outside").count(),
            0,
            "{planted}: written outside the layout"
        );
    }
}

/// A manifest over 4 MiB (a directory of 20,000 files as one layer each) is refused before
/// anything is read or written, for a dry run too.
#[test]
fn manifests_over_four_mib_are_refused_before_writing() {
    let d = TestDir::new();
    for i in 0..20_000 {
        d.write(&format!("many/file-with-a-long-name-{i:05}.txt"), "x");
    }
    d.write("pack.yaml", "items:\n  - from: dir://many\n");
    for args in [
        vec!["pack", "--dry-run", "-f", "pack.yaml"],
        vec!["pack", "-f", "pack.yaml", "oci://out:v1"],
    ] {
        let o = run(&d.path, &args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("20000 files would make a manifest larger than 4 MiB"),
            "{}",
            stderr(&o)
        );
        assert!(stdout(&o).is_empty());
    }
    assert!(!d.join("out").exists());
}

/// `verify` finds a missing, a truncated and a corrupted blob of a layout — one line each,
/// with the path in the graph — and exits 1; a whole artifact passes with exit 0; JSON
/// lists the same problems.
#[test]
fn verify_finds_missing_truncated_and_corrupted_blobs() {
    let d = TestDir::new();
    for (name, text) in [("a.txt", "alpha"), ("b.txt", "bravo"), ("c.txt", "charlie")] {
        d.write(name, text);
    }
    d.write(
        "p.yaml",
        "items:\n  - from: file://a.txt\n    platform: linux/amd64\n  - from: file://b.txt\n    platform: linux/arm64\n  - from: file://c.txt\n    platform: linux/arm64\n",
    );
    pack_ok(&d, "p.yaml", "oci://lay:v1");
    let o = run(&d.path, &["verify", "oci://lay:v1"], &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("every blob is what its descriptor says"),
        "{}",
        stdout(&o)
    );
    let blob = |text: &str| {
        d.join(&format!(
            "lay/blobs/sha256/{}",
            &sha256(text.as_bytes())["sha256:".len()..]
        ))
    };
    std::fs::remove_file(blob("alpha")).expect("rm");
    std::fs::write(blob("bravo"), "brav").expect("truncate");
    std::fs::write(blob("charlie"), "CHARLIE").expect("corrupt");
    let o = run(&d.path, &["verify", "oci://lay:v1"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    let line = |kind: &str, text: &str| {
        out.lines().any(|l| {
            l.starts_with(kind) && l.contains(&sha256(text.as_bytes())) && l.contains(" > ")
        })
    };
    assert!(line("missing", "alpha"), "{out}");
    assert!(line("size mismatch", "bravo"), "{out}");
    assert!(line("digest mismatch", "charlie"), "{out}");
    assert!(out.contains("3 problem(s)"), "{out}");
    let o = run(
        &d.path,
        &["--format", "json", "verify", "oci://lay:v1"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let kinds: Vec<&str> = v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds.len(), 3, "{v}");
    for k in ["missing", "size mismatch", "digest mismatch"] {
        assert!(kinds.contains(&k), "{v}");
    }
    assert!(v["blobs"].as_u64().expect("blobs") >= 7, "{v}");
    // A reference that names nothing is an error, not a problem list.
    let o = run(&d.path, &["verify", "oci://lay:nope"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no entry named \"nope\""),
        "{}",
        stderr(&o)
    );
}
