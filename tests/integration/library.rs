//! The blocking Rust façade: error kinds, progress events, use from inside a runtime.

use std::sync::{Arc, Mutex};

use oci_packer::{ErrorKind, Options, PackInput, Progress, ProgressEvent};

use crate::util::*;

fn yaml(d: &TestDir, text: &str) -> PackInput {
    PackInput::Yaml {
        text: text.to_string(),
        base_dir: d.path.clone(),
    }
}

#[test]
fn errors_have_stable_kinds_and_context() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    let target = format!("oci://{}:v1", d.join("out").display());
    let opts = Options::default();
    let e = oci_packer::pack(
        yaml(
            &d,
            "items:\n  - from: file://a.txt\n    platform: linux-amd64\n",
        ),
        &target,
        &opts,
    )
    .expect_err("bad platform");
    assert_eq!(e.kind(), ErrorKind::PackFile);
    assert_eq!(e.problems()[0].field, "items[0].platform");
    assert_eq!((e.problems()[0].line, e.problems()[0].column), (3, 15));

    let e = oci_packer::pack(yaml(&d, "items:\n  - from: file://nope\n"), &target, &opts)
        .expect_err("missing");
    assert_eq!(e.kind(), ErrorKind::SourceNotFound);
    assert!(e.path().is_some_and(|p| p.ends_with("nope")), "{e:?}");

    let pin = format!("sha256:{}", "1".repeat(64));
    let e = oci_packer::pack(
        yaml(
            &d,
            &format!("items:\n  - from: file://a.txt\n    digest: {pin}\n"),
        ),
        &target,
        &opts,
    )
    .expect_err("pin");
    assert_eq!(e.kind(), ErrorKind::DigestMismatch);
    assert_eq!(e.digest(), Some(pin.as_str()));

    let e = oci_packer::pack(
        yaml(&d, "items:\n  - from: file://a.txt\n"),
        "ftp://x/y",
        &opts,
    )
    .expect_err("ref");
    assert_eq!(e.kind(), ErrorKind::InvalidReference);
    assert_eq!(e.reference(), Some("ftp://x/y"));

    let e = oci_packer::pack(
        yaml(&d, "items:\n  - from: file://a.txt\n"),
        "127.0.0.1:1/x:v1",
        &opts,
    )
    .expect_err("no registry there");
    assert_eq!(e.kind(), ErrorKind::Network);

    let e = oci_packer::list(
        &format!("oci://{}:nope", d.join("missing").display()),
        &opts,
    )
    .expect_err("no layout");
    assert_eq!(e.kind(), ErrorKind::NotFound);

    // A large file is spooled into a new layout's directory while it is hashed; a later
    // failure removes the spooled copy and the directory: no layout is left.
    d.write("big.bin", vec![7u8; 9 << 20]);
    let two = "items:\n  - from: file://big.bin\n  - from: file://nope\n";
    let e = oci_packer::pack(yaml(&d, two), &target, &opts).expect_err("missing");
    assert_eq!(e.kind(), ErrorKind::SourceNotFound);
    assert!(!d.join("out").exists(), "no failed call wrote anything");
    let names: Vec<String> = snapshot(&d.path)
        .into_keys()
        .filter(|k| k.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "spooled temp files left: {names:?}");
}

#[test]
fn progress_events_add_up_to_the_bytes_written() {
    let d = TestDir::new();
    d.write("a.bin", vec![1u8; 300_000]);
    d.write("b.bin", vec![2u8; 12 << 20]);
    let events: Arc<Mutex<Vec<ProgressEvent>>> = Arc::default();
    let sink = events.clone();
    let opts = Options {
        progress: Progress::new(move |e| sink.lock().expect("lock").push(e.clone())),
        ..Options::default()
    };
    let target = format!("oci://{}:v1", d.join("out").display());
    let packed = oci_packer::pack(
        yaml(
            &d,
            "items:\n  - from: file://a.bin\n  - from: file://b.bin\n",
        ),
        &target,
        &opts,
    )
    .expect("pack");
    let events = events.lock().expect("lock");
    let started: Vec<(&str, u64)> = events
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::Started { digest, size, .. } => Some((digest.as_str(), *size)),
            _ => None,
        })
        .collect();
    let finished = events
        .iter()
        .filter(|e| matches!(e, ProgressEvent::Finished { .. }))
        .count();
    let advanced: u64 = events
        .iter()
        .map(|e| match e {
            ProgressEvent::Advanced { bytes, .. } => *bytes,
            _ => 0,
        })
        .sum();
    assert_eq!(
        started.len(),
        4,
        "two layers, the empty config, the manifest: {started:?}"
    );
    assert_eq!(finished, 4);
    assert_eq!(
        advanced, packed.stats.bytes,
        "byte events add up to what was stored"
    );
    assert_eq!(advanced, started.iter().map(|s| s.1).sum::<u64>());
    assert!(started.iter().any(|s| s.0 == packed.descriptor.digest()));
    let staged: u64 = events
        .iter()
        .map(|e| match e {
            ProgressEvent::StageAdvanced { source, bytes } if source.ends_with("b.bin") => *bytes,
            _ => 0,
        })
        .sum();
    assert_eq!(
        staged,
        12 << 20,
        "reading the large file is reported while staging"
    );
    assert!(events.iter().any(
        |e| matches!(e, ProgressEvent::StageFinished { source } if source.ends_with("b.bin"))
    ));
}

#[test]
fn works_from_inside_a_tokio_runtime() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    let target = format!("oci://{}:v1", d.join("out").display());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let digest = rt.block_on(async {
        let packed = oci_packer::pack(
            yaml(&d, "items:\n  - from: file://a.txt\n"),
            &target,
            &Options::default(),
        )
        .expect("pack inside a runtime");
        tokio::task::yield_now().await;
        packed.descriptor.digest().to_string()
    });
    let listing = oci_packer::list(&target, &Options::default()).expect("list");
    match listing {
        oci_packer::Listing::Artifact { tree, .. } => {
            assert_eq!(tree.descriptor.digest().to_string(), digest)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn validate_returns_problems_and_fails_only_on_unreadable_files() {
    let d = TestDir::new();
    assert!(
        oci_packer::validate(yaml(&d, "items:\n  - from: file://x\n"))
            .expect("ok")
            .is_empty()
    );
    let ps = oci_packer::validate(yaml(&d, "items:\n  - from: nope\n")).expect("ok");
    assert_eq!(ps.len(), 1);
    let e = oci_packer::validate(d.join("missing.yaml").as_path()).expect_err("unreadable");
    assert_eq!(e.kind(), ErrorKind::SourceNotFound);
}

/// A source that changes while it is read — shrinks, grows or is rewritten in place, for
/// every archive mode and for per-file layers — fails with "changed while packing" naming
/// the file; nothing is tagged and no temp file is left. The change happens from the
/// progress callback, which runs on the thread that reads, so it lands mid-read every time.
#[test]
fn sources_that_change_while_packed_fail_and_leave_nothing() {
    type Change = fn(&std::path::Path);
    let shrink: Change = |p| truncate(p, 1000);
    let grow: Change = |p| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(p)
            .expect("open");
        f.write_all(b"more").expect("append");
    };
    let rewrite: Change = |p| {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .expect("open");
        f.seek(std::io::SeekFrom::End(-4)).expect("seek");
        f.write_all(b"XXXX").expect("write");
        // The same second on a coarse clock must not hide the change.
        f.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .expect("mtime");
    };
    let cases: [(&str, &str, Change); 7] = [
        ("tar", "  - from: dir://d\n    archive: tar\n", shrink),
        (
            "tar+gzip",
            "  - from: dir://d\n    archive: tar+gzip\n",
            shrink,
        ),
        (
            "tar+zstd",
            "  - from: dir://d\n    archive: tar+zstd\n",
            shrink,
        ),
        ("tar, grown", "  - from: dir://d\n    archive: tar\n", grow),
        ("dir layers", "  - from: dir://d\n", shrink),
        ("file", "  - from: file://d/big.bin\n", grow),
        ("file, rewritten", "  - from: file://d/big.bin\n", rewrite),
    ];
    for (name, item, change) in cases {
        let d = TestDir::new();
        d.write("d/big.bin", vec![7u8; 24 << 20]);
        let big = d.join("d/big.bin");
        let changed = Arc::new(Mutex::new(false));
        let flag = changed.clone();
        let opts = Options {
            progress: Progress::new(move |e| {
                if let ProgressEvent::StageAdvanced { .. } = e {
                    let mut done = flag.lock().expect("lock");
                    if !*done {
                        *done = true;
                        change(&big);
                    }
                }
            }),
            ..Options::default()
        };
        let target = format!("oci://{}:v1", d.join("out").display());
        let e =
            oci_packer::pack(yaml(&d, &format!("items:\n{item}")), &target, &opts).expect_err(name);
        assert!(*changed.lock().expect("lock"), "{name}: no progress event");
        assert_eq!(e.kind(), ErrorKind::Io, "{name}: {e}");
        assert!(
            e.to_string().contains("changed while packing")
                && e.path().is_some_and(|p| p.ends_with("d/big.bin")),
            "{name}: {e} {:?}",
            e.path()
        );
        let index = std::fs::read_to_string(d.join("out/index.json")).unwrap_or_default();
        assert!(!index.contains("\"v1\""), "{name}: tagged: {index}");
        assert_eq!(
            temp_files(&d.path),
            Vec::<std::path::PathBuf>::new(),
            "{name}"
        );
    }
}

/// A file swapped for a symlink to something outside the directory (or a directory swapped
/// for a symlink to one outside) between the walk and the read is never published: what is
/// opened must be the file the walk found, in per-file and archive modes alike.
#[test]
fn files_swapped_for_symlinks_while_packing_are_refused() {
    for (name, item) in [
        ("per-file", "  - from: dir://src\n"),
        ("archive", "  - from: dir://src\n    archive: tar\n"),
    ] {
        for swap_dir in [false, true] {
            let d = TestDir::new();
            d.write("src/a.bin", vec![1u8; 12 << 20]);
            d.write("src/z.txt", "original");
            d.write("src/zd/passwd", "original");
            d.write("outside/z.txt", "SECRET");
            d.write("outside/passwd", "SECRET");
            let (src, outside) = (d.join("src"), d.join("outside"));
            let done = Arc::new(Mutex::new(false));
            let flag = done.clone();
            let opts = Options {
                progress: Progress::new(move |e| {
                    let mut done = flag.lock().expect("lock");
                    if matches!(e, ProgressEvent::StageAdvanced { .. }) && !*done {
                        *done = true;
                        if swap_dir {
                            std::fs::remove_dir_all(src.join("zd")).expect("rm");
                            std::os::unix::fs::symlink(&outside, src.join("zd")).expect("ln");
                        } else {
                            std::fs::remove_file(src.join("z.txt")).expect("rm");
                            std::os::unix::fs::symlink(outside.join("z.txt"), src.join("z.txt"))
                                .expect("ln");
                        }
                    }
                }),
                ..Options::default()
            };
            let target = format!("oci://{}:v1", d.join("out").display());
            let e = oci_packer::pack(yaml(&d, &format!("items:\n{item}")), &target, &opts)
                .expect_err(name);
            assert!(*done.lock().expect("lock"), "{name}: not swapped");
            assert!(
                e.to_string().contains("changed while packing")
                    && e.to_string()
                        .contains("no longer the file found there first"),
                "{name} {swap_dir}: {e}"
            );
            assert!(
                !d.join("out/index.json").exists(),
                "{name}: a layout was written"
            );
        }
    }
}

/// Whether the layout at `dir` names anything (a failed pack may leave an empty layout
/// behind, never a tag).
fn tagged(dir: &std::path::Path) -> bool {
    std::fs::read(dir.join("index.json")).is_ok_and(|t| {
        let index: serde_json::Value = serde_json::from_slice(&t).expect("index.json");
        index["manifests"] != serde_json::json!([])
    })
}

/// A directory of the tree exchanged, again and again, with a symlink (kept outside the tree)
/// to a directory outside, while packs walk the tree: a pack either fails cleanly or holds
/// only files from inside — never the outside files (the walk holds each directory open and
/// never follows a link it did not check). The exchange races the walk; the guarantee must
/// hold on every run.
#[test]
fn directories_exchanged_for_links_during_the_walk_never_pack_outside_files() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = TestDir::new();
    for i in 0..8 {
        d.write(&format!("src/sub/f{i}.txt"), "inside");
        d.write(&format!("outside/f{i}.txt"), "SECRET");
    }
    std::os::unix::fs::symlink(d.join("outside"), d.join("evil")).expect("ln");
    // A link inside that resolves through the exchanged directory.
    std::os::unix::fs::symlink("sub/f0.txt", d.join("src/link")).expect("ln");
    let stop = Arc::new(AtomicBool::new(false));
    let exchanger = {
        let (stop, sub, evil) = (stop.clone(), d.join("src/sub"), d.join("evil"));
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &sub,
                    rustix::fs::CWD,
                    &evil,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .expect("exchange");
                swaps += 1;
                std::thread::yield_now();
            }
            swaps
        })
    };
    let (mut packed, mut refused) = (0, 0);
    for i in 0..300 {
        let archive = if i % 2 == 0 { "" } else { "    archive: tar\n" };
        let target = format!("oci://{}:v1", d.join(&format!("out{i}")).display());
        let text = format!("items:\n  - from: dir://src\n{archive}");
        match oci_packer::pack(yaml(&d, &text), &target, &Options::default()) {
            Ok(p) => {
                packed += 1;
                let out = d.join(&format!("out{i}"));
                let m: serde_json::Value =
                    serde_json::from_slice(&blob(&out, p.descriptor.digest())).expect("manifest");
                for l in m["layers"].as_array().expect("layers") {
                    let data = blob(&out, l["digest"].as_str().expect("digest"));
                    assert!(
                        !data.windows(6).any(|w| w == b"SECRET"),
                        "run {i}: an outside file was packed"
                    );
                }
            }
            Err(e) => {
                refused += 1;
                let text = e.to_string();
                assert!(
                    text.contains("resolves outside")
                        || text.contains("already packed as")
                        || text.contains("changed while packing")
                        || text.contains("cannot read")
                        || text.contains("cannot list"),
                    "run {i}: {text}"
                );
                assert!(
                    !tagged(&d.join(&format!("out{i}"))),
                    "run {i}: tagged ({text})"
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = exchanger.join().expect("exchanger");
    assert!(swaps > 0, "the directories were never exchanged");
    eprintln!("{packed} packed, {refused} refused, {swaps} exchanges");
}

/// A directory of 100 small files, a 16 MiB file and `base.txt`, with a pack file that
/// stages them in that order (with one item at a time: the small files are stored before
/// the large one starts) and then fails on a wrong digest pin.
fn failing_after_staging() -> (TestDir, String) {
    let d = TestDir::new();
    for i in 0..100 {
        d.write(&format!("src/f{i:03}.txt"), format!("file {i}"));
    }
    let big = std::fs::File::create(d.join("big.bin")).expect("create");
    big.set_len(16 << 20).expect("sparse 16 MiB");
    d.write("base.txt", "base");
    let text = format!(
        "items:\n  - from: dir://src\n  - from: file://big.bin\n  - from: file://base.txt\n    digest: sha256:{}\n",
        "1".repeat(64)
    );
    (d, text)
}

/// A layout the pack creates gets each small file as staging hashes it; a pack that then
/// fails takes the new layout back whole — a new directory disappears, an empty one is left
/// empty — and an existing layout is left byte for byte as it was.
#[test]
fn a_failed_pack_takes_back_the_new_layout_it_wrote_into() {
    let (d, text) = failing_after_staging();
    std::fs::create_dir(d.join("empty")).expect("mkdir");
    oci_packer::pack(
        yaml(&d, "items:\n  - from: file://base.txt\n"),
        &format!("oci://{}:base", d.join("existing").display()),
        &Options::default(),
    )
    .expect("base");
    let before = snapshot(&d.join("existing"));
    let existing_blobs = std::fs::read_dir(d.join("existing/blobs/sha256"))
        .expect("blobs")
        .count();
    for (dir, fresh) in [("new", true), ("empty", true), ("existing", false)] {
        let out = d.join(dir);
        let seen: Arc<Mutex<Option<usize>>> = Arc::default();
        let (probe, blobs) = (seen.clone(), out.join("blobs/sha256"));
        let mut opts = Options {
            concurrency: 1,
            progress: Progress::new(move |e| {
                if matches!(e, ProgressEvent::StageStarted { .. }) {
                    let n = std::fs::read_dir(&blobs).map_or(0, |r| r.count());
                    *probe.lock().expect("lock") = Some(n);
                }
            }),
            ..Options::default()
        };
        // The large file is read (no digest remembered from an earlier run).
        opts.registry.no_cache = true;
        let target = format!("oci://{}:v1", out.display());
        let e = oci_packer::pack(yaml(&d, &text), &target, &opts).expect_err(dir);
        assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{dir}: {e}");
        let stored = seen
            .lock()
            .expect("lock")
            .expect("the large file was staged");
        match (dir, fresh) {
            ("new", _) => {
                assert!(stored >= 100, "{dir}: {stored} blobs stored while staging");
                assert!(!out.exists(), "{dir}: the new layout was left");
            }
            ("empty", _) => {
                assert!(stored >= 100, "{dir}: {stored} blobs stored while staging");
                let left: Vec<_> = std::fs::read_dir(&out).expect("dir").collect();
                assert!(left.is_empty(), "{dir}: {left:?} left");
            }
            _ => {
                assert_eq!(
                    stored, existing_blobs,
                    "{dir}: staging wrote into an existing layout"
                );
                assert_eq!(snapshot(&out), before, "{dir}: changed");
            }
        }
    }
}

/// A new layout moved away and replaced by a symlink to another directory while the pack
/// runs — after its first blob (the pack took back nothing) or before it (the pack then wrote
/// into the other directory, as every layout write follows the path it was given): the
/// failing pack removes nothing but files it made, so the other directory's own files
/// (layout files, temp-like names, another blob) stay as they were.
#[test]
fn a_failed_pack_never_takes_back_a_directory_put_in_its_place() {
    for early in [false, true] {
        let (d, mut text) = failing_after_staging();
        if early {
            // The large file first: the swap comes before any blob is stored.
            text = text.replace(
                "  - from: dir://src\n  - from: file://big.bin\n",
                "  - from: file://big.bin\n  - from: dir://src\n",
            );
        }
        let outside = d.join("outside");
        for (name, body) in [
            (
                "index.json",
                r#"{"schemaVersion":2,"manifests":[]}"#.to_string(),
            ),
            (
                "oci-layout",
                r#"{"imageLayoutVersion":"1.0.0"}"#.to_string(),
            ),
            ("index.lock", String::new()),
            (".oci-packer.lock", String::new()),
            (".oci-packer-canary", "looks like a temp file".to_string()),
            (
                &format!("blobs/sha256/{}", "2".repeat(64)),
                "a blob".to_string(),
            ),
        ] {
            d.write(&format!("outside/{name}"), body);
        }
        let before = snapshot(&outside);
        let out = d.join("out");
        let (o, moved, to) = (out.clone(), d.join("out.moved"), outside.clone());
        let swapped = Arc::new(Mutex::new(false));
        let flag = swapped.clone();
        let mut opts = Options {
            concurrency: 1,
            progress: Progress::new(move |e| {
                let mut done = flag.lock().expect("lock");
                if matches!(e, ProgressEvent::StageStarted { .. }) && !*done {
                    *done = true;
                    std::fs::rename(&o, &moved).expect("move the new layout away");
                    std::os::unix::fs::symlink(&to, &o).expect("link");
                }
            }),
            ..Options::default()
        };
        opts.registry.no_cache = true;
        let target = format!("oci://{}:v1", out.display());
        let e = oci_packer::pack(yaml(&d, &text), &target, &opts).expect_err("pin");
        assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e}");
        assert!(*swapped.lock().expect("lock"), "not swapped");
        assert_eq!(
            snapshot(&outside),
            before,
            "early {early}: the other directory changed"
        );
        if !early {
            let moved_blobs = std::fs::read_dir(d.join("out.moved/blobs/sha256"))
                .expect("the moved layout is left as it was")
                .count();
            assert!(moved_blobs >= 100, "{moved_blobs}");
        }
    }
}

/// Sources staged, then swapped before they are sent: a symlink to another file of the same
/// size, a FIFO, or the same file edited in place (same size, same inode). The upload refuses
/// all three, naming the file (the FIFO is never waited on; the edited file's bytes are
/// checked against the digest staging computed before the upload can complete) and the
/// registry never receives the other file's bytes; an existing layout refuses them the same
/// way. A layout the pack creates stored each small file as it hashed it — the bytes hashed
/// are the bytes stored — so the swap after staging changes nothing there.
#[test]
fn sources_swapped_after_staging_are_never_sent() {
    let reg = RegistryServer::start();
    for swap in ["symlink", "fifo", "edit"] {
        for target_kind in ["registry", "existing layout", "new layout"] {
            let to_registry = target_kind == "registry";
            let d = TestDir::new();
            d.write("z.txt", "original");
            d.write("y.txt", "another!");
            d.write("outside.txt", "SECRET!!");
            let z = d.join("z.txt");
            let outside = d.join("outside.txt");
            let done = Arc::new(Mutex::new(false));
            let flag = done.clone();
            let mut opts = Options {
                progress: Progress::new(move |e| {
                    let mut done = flag.lock().expect("lock");
                    if matches!(e, ProgressEvent::Started { .. }) && !*done {
                        *done = true;
                        if swap == "edit" {
                            use std::io::Write;
                            let mut f = std::fs::OpenOptions::new()
                                .write(true)
                                .open(&z)
                                .expect("open for writing");
                            f.write_all(b"SECRET!!").expect("edit in place");
                            return;
                        }
                        std::fs::remove_file(&z).expect("rm");
                        if swap == "symlink" {
                            std::os::unix::fs::symlink(&outside, &z).expect("ln");
                        } else {
                            let ok = std::process::Command::new("mkfifo")
                                .arg(&z)
                                .status()
                                .expect("mkfifo");
                            assert!(ok.success());
                        }
                    }
                }),
                ..Options::default()
            };
            opts.registry.plain_http = true;
            let repo = format!("swap-{swap}");
            let target = match to_registry {
                true => reg.reference(&format!("{repo}/a:v1")),
                false => format!("oci://{}:v1", d.join("out").display()),
            };
            let text = "items:\n  - from: file://y.txt\n  - from: file://z.txt\n";
            if target_kind == "existing layout" {
                d.write("base.txt", "base");
                let base = "items:\n  - from: file://base.txt\n";
                oci_packer::pack(
                    yaml(&d, base),
                    &format!("oci://{}:base", d.join("out").display()),
                    &Options::default(),
                )
                .expect("base");
            }
            if target_kind == "new layout" {
                oci_packer::pack(yaml(&d, text), &target, &opts).expect(swap);
                assert!(*done.lock().expect("lock"), "{swap}: not swapped");
                let blobs: Vec<Vec<u8>> = std::fs::read_dir(d.join("out/blobs/sha256"))
                    .expect("blobs")
                    .map(|e| std::fs::read(e.expect("entry").path()).expect("blob"))
                    .collect();
                assert!(
                    blobs.iter().any(|b| b == b"original"),
                    "{swap}: staged bytes stored"
                );
                assert!(
                    !blobs.iter().any(|b| b == b"SECRET!!"),
                    "{swap}: swapped bytes stored"
                );
                let v = oci_packer::verify(&target, &Options::default()).expect("verify");
                assert!(v.problems.is_empty(), "{swap}: {:?}", v.problems);
                continue;
            }
            let e = oci_packer::pack(yaml(&d, text), &target, &opts).expect_err(swap);
            assert!(*done.lock().expect("lock"), "{swap}: not swapped");
            let want = match swap {
                "fifo" => "not a regular file",
                _ => "changed while packing",
            };
            assert!(
                e.to_string().contains(want) && e.to_string().contains("z.txt"),
                "{swap} {to_registry}: {e}"
            );
            if to_registry {
                let secret = format!(
                    "{}/v2/{repo}/a/blobs/sha256:{}",
                    reg.addr,
                    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"SECRET!!"))
                );
                let code = std::process::Command::new("curl")
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I"])
                    .arg(format!("http://{secret}"))
                    .output()
                    .expect("curl");
                assert_eq!(String::from_utf8_lossy(&code.stdout), "404", "{swap}");
                let tag = format!("http://{}/v2/{repo}/a/manifests/v1", reg.addr);
                let code = std::process::Command::new("curl")
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I", &tag])
                    .output()
                    .expect("curl");
                assert_eq!(
                    String::from_utf8_lossy(&code.stdout),
                    "404",
                    "{swap}: tagged"
                );
            } else {
                assert_eq!(entry_names(&d.join("out")), ["base"], "{swap}: tagged");
            }
        }
    }
}

/// An existing layout's `blobs` directory replaced by a symlink to a directory outside after
/// the pack has started writing: the rest of the blobs still go to the directory the pack
/// opened, nothing is written outside, and the tag names complete content.
#[test]
fn a_blobs_directory_swapped_mid_pack_never_sends_writes_outside() {
    let d = TestDir::new();
    for i in 0..6 {
        d.write(&format!("f{i}.txt"), format!("file {i}"));
    }
    d.mkdir("outside");
    let lay = d.join("lay");
    let target = format!("oci://{}:v1", lay.display());
    let one = "items:\n  - from: file://f0.txt\n";
    oci_packer::pack(yaml(&d, one), &target, &Options::default()).expect("first pack");
    let done = Arc::new(Mutex::new(false));
    let flag = done.clone();
    let (blobs, outside) = (lay.join("blobs"), d.join("outside"));
    let link_to = outside.clone();
    let opts = Options {
        progress: Progress::new(move |e| {
            let mut done = flag.lock().expect("lock");
            if matches!(e, ProgressEvent::Finished { .. }) && !*done {
                *done = true;
                std::fs::rename(&blobs, blobs.with_file_name("blobs-real")).expect("mv");
                std::os::unix::fs::symlink(&link_to, &blobs).expect("ln");
            }
        }),
        concurrency: 1,
        ..Options::default()
    };
    let items: String = (1..6)
        .map(|i| format!("  - from: file://f{i}.txt\n"))
        .collect();
    let packed =
        oci_packer::pack(yaml(&d, &format!("items:\n{items}")), &target, &opts).expect("pack");
    assert!(*done.lock().expect("lock"), "not swapped");
    assert_eq!(
        std::fs::read_dir(&outside).expect("ls").count(),
        0,
        "something was written outside the layout"
    );
    let real = lay.join("blobs-real/sha256");
    let digest: &str = packed.descriptor.digest();
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(real.join(&digest["sha256:".len()..]))
            .expect("manifest in the opened directory"),
    )
    .expect("json");
    for l in m["layers"].as_array().expect("layers") {
        let hex = &l["digest"].as_str().expect("digest")["sha256:".len()..];
        assert!(real.join(hex).is_file(), "layer {hex} missing");
    }
    // Reading it now, through the link, is refused with a clear error.
    let e = oci_packer::list(&target, &Options::default()).expect_err("symlinked blobs");
    assert!(e.to_string().contains("not a real directory"), "{e}");
}

/// The copy staging spooled into a layout (a large file), replaced before the layout adopts
/// it — by a symlink to a file elsewhere, or by another file of the same size: the pack
/// fails, nothing is tagged, no blob holds the other bytes, and the file elsewhere keeps its
/// permissions.
#[test]
fn a_spooled_copy_swapped_before_adoption_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    for swap in ["symlink", "file"] {
        let d = TestDir::new();
        let n = (9 << 20) + 123;
        d.write("big.bin", vec![b'A'; n]);
        d.write("victim", vec![b'V'; n]);
        let victim = d.join("victim");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let lay = d.join("lay");
        let target = format!("oci://{}:v1", lay.display());
        d.write("small.txt", "s");
        oci_packer::pack(
            yaml(&d, "items:\n  - from: file://small.txt\n"),
            &target,
            &Options::default(),
        )
        .expect("the layout");
        let done = Arc::new(Mutex::new(false));
        let (flag, dir, outside) = (done.clone(), lay.clone(), victim.clone());
        let opts = Options {
            progress: Progress::new(move |e| {
                let mut done = flag.lock().expect("lock");
                let ProgressEvent::Started { size, .. } = e else {
                    return;
                };
                if *done || *size != n as u64 {
                    return;
                }
                *done = true;
                let spooled = std::fs::read_dir(&dir)
                    .expect("ls")
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| {
                        p.file_name()
                            .is_some_and(|f| f.to_string_lossy().starts_with(".oci-packer-"))
                            && p.metadata().is_ok_and(|m| m.len() == n as u64)
                    })
                    .expect("the spooled copy");
                std::fs::remove_file(&spooled).expect("rm");
                match swap {
                    "symlink" => std::os::unix::fs::symlink(&outside, &spooled).expect("ln"),
                    _ => std::fs::write(&spooled, vec![b'X'; n]).expect("write"),
                }
            }),
            ..Options::default()
        };
        let e = oci_packer::pack(
            yaml(&d, "items:\n  - from: file://big.bin\n"),
            &target,
            &opts,
        )
        .expect_err(swap);
        assert!(*done.lock().expect("lock"), "{swap}: not swapped");
        assert!(
            e.to_string().contains("changed while packing"),
            "{swap}: {e}"
        );
        let mode = std::fs::metadata(&victim)
            .expect("victim")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{swap}: the file elsewhere was chmodded");
        for blob in std::fs::read_dir(lay.join("blobs/sha256"))
            .expect("blobs")
            .flatten()
        {
            let data = std::fs::read(blob.path()).expect("blob");
            assert!(
                !data.starts_with(b"VVVV") && !data.starts_with(b"XXXX"),
                "{swap}: foreign bytes stored"
            );
        }
        let listing = oci_packer::list(&format!("oci://{}", lay.display()), &Options::default())
            .expect("list");
        let text = format!("{listing:?}");
        assert_eq!(
            text.matches("reference: \"v1\"").count(),
            1,
            "{swap}: {text}"
        );
    }
}
