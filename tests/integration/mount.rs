//! `mount` / `umount` (SPEC §7.5), for real, as root: overlayfs of GNU-tar layers with
//! whiteouts, many layers, tmpfs and bind mounts inside, systemd units, the delete guard.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// Builds `NAME.tar` of the files of `build` with GNU tar (as root: owners and modes kept).
fn gnu_layer(d: &TestDir, name: &str, build: impl FnOnce(&Path)) -> String {
    let root = d.mkdir(&format!("rootfs-{name}"));
    build(&root);
    let file = format!("{name}.tar");
    let o = Command::new("tar")
        .args(["-cf", &file, "-C", root.to_str().expect("utf8"), "."])
        .current_dir(&d.path)
        .output()
        .expect("tar");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    file
}

/// Packs the layers (bottom first) as an image into `oci://images:NAME`.
fn image(d: &TestDir, name: &str, layers: &[String]) {
    d.write(
        "cfg.json",
        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
    );
    let mut yaml = String::from(
        "config: {from: file://cfg.json, type: application/vnd.oci.image.config.v1+json}\nitems:\n",
    );
    for l in layers {
        yaml.push_str(&format!("- from: file://{l}\n"));
    }
    d.write(&format!("{name}.yaml"), yaml);
    pack_ok(d, &format!("{name}.yaml"), &format!("oci://images:{name}"));
}

/// The mountinfo lines of mount points at or below `dir`: (mount point, options, fs type).
fn mounts_below(dir: &Path) -> Vec<(PathBuf, String, String)> {
    let bytes = std::fs::read("/proc/self/mountinfo").expect("mountinfo");
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = PathBuf::from(f.get(4)?.replace("\\040", " "));
            let dash = f.iter().position(|x| *x == "-")?;
            (point.starts_with(dir)).then(|| (point, f[5].to_string(), f[dash + 1].to_string()))
        })
        .collect()
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// Unmounts whatever a failed assertion left, so the next test starts clean.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn three_gnu_tar_layers_merge_read_only_nosuid_nodev() {
    use std::os::unix::fs::PermissionsExt;
    let d = TestDir::new();
    let l1 = gnu_layer(&d, "l1", |r| {
        write(&r.join("etc/a"), "a\n");
        write(&r.join("etc/b"), "b1\n");
        write(&r.join("opq/x"), "x\n");
        write(&r.join("bin/tool"), "#!/bin/sh\n");
        std::fs::set_permissions(r.join("bin/tool"), std::fs::Permissions::from_mode(0o4755))
            .expect("chmod");
        std::fs::create_dir_all(r.join("tmp")).expect("tmp");
    });
    let l2 = gnu_layer(&d, "l2", |r| {
        write(&r.join("etc/.wh.a"), "");
        write(&r.join("opq/.wh..wh..opq"), "");
        write(&r.join("opq/y"), "y\n");
    });
    let l3 = gnu_layer(&d, "l3", |r| {
        write(&r.join("etc/b"), "b3\n");
        write(&r.join("top.txt"), "top\n");
    });
    image(&d, "three", &[l1, l2, l3]);
    // What the merge must show, built by hand.
    let expected = d.mkdir("expected");
    write(&expected.join("etc/b"), "b3\n");
    write(&expected.join("opq/y"), "y\n");
    write(&expected.join("bin/tool"), "#!/bin/sh\n");
    write(&expected.join("top.txt"), "top\n");
    std::fs::create_dir_all(expected.join("tmp")).expect("tmp");
    let mnt = d.join("mnt");
    let _guard = Unmount(mnt.clone());
    run_ok(&d.path, &["mount", "oci://images:three", "mnt"]);
    let diff = Command::new("diff")
        .arg("-r")
        .arg(&expected)
        .arg(&mnt)
        .output()
        .expect("diff");
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    let err = std::fs::write(mnt.join("etc/new"), "x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(30), "{err}");
    let mounts = mounts_below(&mnt);
    let (_, options, fstype) = &mounts[0];
    assert_eq!(fstype, "overlay");
    for o in ["ro", "nosuid", "nodev"] {
        assert!(options.split(',').any(|x| x == o), "{options}");
    }
    // The image has /tmp: a tmpfs there by default, inside the overlay.
    assert!(
        mounts
            .iter()
            .any(|(p, _, t)| p == &mnt.join("tmp") && t == "tmpfs"),
        "{mounts:?}"
    );
    // delete of the mounted image is refused and says to unmount; gc keeps it.
    run_fails(&d.path, &["delete", "oci://images:three"], 2, "umount");
    // umount takes the nested tmpfs and the overlay.
    let o = run_ok(&d.path, &["umount", "mnt"]);
    assert!(mounts_below(&mnt).is_empty());
    assert_eq!(stdout(&o).matches("unmounted").count(), 2, "{}", stdout(&o));
    run_ok(&d.path, &["delete", "oci://images:three"]);
}

#[test]
fn two_hundred_layers_mount() {
    let d = TestDir::new();
    let layers: Vec<String> = (0..200)
        .map(|i| {
            gnu_layer(&d, &format!("layer{i:03}"), |r| {
                write(&r.join(format!("f{i:03}")), &format!("{i}\n"))
            })
        })
        .collect();
    image(&d, "many", &layers);
    let mnt = d.join("mnt");
    let _guard = Unmount(mnt.clone());
    run_ok(
        &d.path,
        &["mount", "--no-tmpfs", "oci://images:many", "mnt"],
    );
    let names: Vec<String> = std::fs::read_dir(&mnt)
        .expect("read")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 200, "{names:?}");
    assert_eq!(
        std::fs::read_to_string(mnt.join("f199")).expect("f199"),
        "199\n"
    );
    run_ok(&d.path, &["umount", "mnt"]);
}

#[test]
fn binds_and_tmpfs_inside_and_escapes_refused() {
    let d = TestDir::new();
    let l = gnu_layer(&d, "l", |r| {
        std::fs::create_dir_all(r.join("data")).expect("data");
        std::fs::create_dir_all(r.join("cache")).expect("cache");
        // Inside the image (it leads to its root), but `..` from there would leave it.
        std::fs::create_dir_all(r.join("a/b")).expect("a/b");
        std::os::unix::fs::symlink("../..", r.join("a/b/c")).expect("link");
        std::os::unix::fs::symlink("/data", r.join("abs")).expect("link");
    });
    image(&d, "b", &[l]);
    write(&d.join("host/file.txt"), "from the host\n");
    let mnt = d.join("mnt");
    let _guard = Unmount(mnt.clone());
    // A target that climbs out of the image: refused, nothing mounted.
    run_fails(
        &d.path,
        &[
            "mount",
            "--bind",
            "host:/a/b/c/../x",
            "--tmpfs",
            "/cache:1m",
            "oci://images:b",
            "mnt",
        ],
        1,
        "leads outside the image",
    );
    assert!(mounts_below(&mnt).is_empty());
    // A symlink inside the image is followed within it.
    let host = d.join("host");
    let bind = format!("{}:/abs", host.display());
    run_ok(
        &d.path,
        &[
            "mount",
            "--bind",
            &bind,
            "--tmpfs",
            "/cache:1m",
            "oci://images:b",
            "mnt",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("data/file.txt")).expect("bound"),
        "from the host\n"
    );
    std::fs::write(mnt.join("cache/scratch"), "w").expect("the tmpfs is writable");
    let mounts = mounts_below(&mnt);
    let cache = mounts
        .iter()
        .find(|(p, _, _)| p == &mnt.join("cache"))
        .expect("tmpfs");
    assert_eq!(cache.2, "tmpfs");
    run_ok(&d.path, &["umount", "mnt"]);
    assert!(mounts_below(&mnt).is_empty());
    // A target missing from the read-only image is an error before anything is mounted.
    let o = run(
        &d.path,
        &["mount", "--tmpfs", "/nope", "oci://images:b", "mnt"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(mounts_below(&mnt).is_empty());
}

#[test]
fn persistent_units_are_named_and_written_as_systemd_expects() {
    let d = TestDir::new();
    let l = gnu_layer(&d, "l", |r| {
        std::fs::create_dir_all(r.join("tmp")).expect("tmp");
        std::fs::create_dir_all(r.join("srv/my-data")).expect("srv");
    });
    image(&d, "p", &[l]);
    let units = d.mkdir("units");
    let target = d.join("mnt/my app");
    let o = run_ok(
        &d.path,
        &[
            "--format",
            "json",
            "mount",
            "--persistent",
            "--unit-dir",
            units.to_str().expect("utf8"),
            "--bind",
            "/etc:/srv/my-data",
            "--tmpfs",
            "/tmp:16m",
            "oci://images:p",
            target.to_str().expect("utf8"),
        ],
    );
    assert!(
        mounts_below(&d.join("mnt")).is_empty(),
        "persistent mounts nothing"
    );
    let escape = |p: &Path| {
        let o = Command::new("systemd-escape")
            .args(["--path", "--suffix=mount"])
            .arg(p)
            .output()
            .expect("systemd-escape (Debian's systemd package)");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let names = [
        escape(&target),
        escape(&target.join("tmp")),
        escape(&target.join("srv/my-data")),
    ];
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let written: Vec<String> = v["units"]
        .as_array()
        .expect("units")
        .iter()
        .map(|u| {
            Path::new(u.as_str().expect("path"))
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(written, names);
    let field = |unit: &str, key: &str| -> Vec<String> {
        std::fs::read_to_string(units.join(unit))
            .expect("unit")
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
            .collect()
    };
    let overlay = &names[0];
    assert_eq!(field(overlay, "What"), ["overlay"]);
    assert_eq!(field(overlay, "Where"), [target.display().to_string()]);
    assert_eq!(field(overlay, "Type"), ["overlay"]);
    let options = &field(overlay, "Options")[0];
    assert!(
        options.starts_with("ro,nosuid,nodev,lowerdir=/"),
        "{options}"
    );
    assert_eq!(field(overlay, "WantedBy"), ["multi-user.target"]);
    assert_eq!(field(&names[1], "What"), ["tmpfs"]);
    assert_eq!(field(&names[1], "Options"), ["nosuid,nodev,size=16m"]);
    assert_eq!(field(&names[1], "Requires"), std::slice::from_ref(overlay));
    assert_eq!(field(&names[1], "After"), std::slice::from_ref(overlay));
    assert_eq!(field(&names[2], "What"), ["/etc"]);
    assert_eq!(
        field(&names[2], "Where"),
        [target.join("srv/my-data").display().to_string()]
    );
    assert_eq!(field(&names[2], "Options"), ["bind,nosuid,nodev"]);
    assert_eq!(field(&names[2], "After"), std::slice::from_ref(overlay));
    // A path that a unit file cannot hold (a line break would add settings, `%` is a
    // specifier): refused, nothing written.
    let other = d.mkdir("units2");
    for bad in ["mnt/a\nExecStart=/bin/sh", "mnt/100%"] {
        run_fails(
            &d.path,
            &[
                "mount",
                "--persistent",
                "--unit-dir",
                other.to_str().expect("utf8"),
                "oci://images:p",
                bad,
            ],
            2,
            "cannot hold",
        );
        assert_eq!(std::fs::read_dir(&other).expect("units2").count(), 0);
    }
}

#[test]
fn refusals_name_what_to_do() {
    let d = TestDir::new();
    let l = gnu_layer(&d, "l", |r| write(&r.join("f"), "f\n"));
    image(&d, "img", &[l]);
    d.write("a.txt", "a");
    d.write("art.yaml", "items:\n- from: file://a.txt\n");
    pack_ok(&d, "art.yaml", "oci://images:artifact");
    d.write("busy/file", "x");
    for (args, code, expect) in [
        (
            vec!["mount", "oci://images:artifact", "m1"],
            2,
            "is not a container image",
        ),
        (vec!["mount", "oci://images:img", "busy"], 2, "is not empty"),
        (
            vec!["mount", "127.0.0.1:5000/x:v1", "m2"],
            2,
            "reads images from layouts",
        ),
        (
            vec![
                "mount",
                "--platform",
                "linux/s390x",
                "oci://images:img",
                "m3",
            ],
            0,
            "",
        ),
    ] {
        let o = run(&d.path, &args, &[]);
        if code == 0 {
            // A single manifest: --platform selects nothing; mounted as it is.
            assert!(o.status.success(), "{}", stderr(&o));
            let u = run(&d.path, &["umount", "m3"], &[]);
            assert!(u.status.success());
            continue;
        }
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
    }
    // Not root: the error says so, exit 1.
    let o = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_oci-packer"))
        .args(["mount", "oci://images:img", "m4"])
        .current_dir(&d.path)
        .env("XDG_CACHE_HOME", d.join("cache"))
        .output()
        .expect("setpriv");
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("need root"));
    // --verify: a damaged layer blob stops the mount.
    let layout = d.join("images");
    let m = blob_json(
        &layout,
        entry(&layout, "img")["digest"].as_str().expect("digest"),
    );
    let layer = m["layers"][0]["digest"].as_str().expect("layer");
    let path = layout.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[700] ^= 1;
    std::fs::write(&path, bytes).expect("write");
    run_fails(
        &d.path,
        &["mount", "--verify", "oci://images:img", "m5"],
        1,
        "damaged",
    );
    assert!(mounts_below(&d.join("m5")).is_empty());
}

#[test]
fn index_members_by_platform_and_busy_mounts() {
    let d = TestDir::new();
    let amd = gnu_layer(&d, "amd", |r| write(&r.join("arch"), "amd64\n"));
    let arm = gnu_layer(&d, "arm", |r| write(&r.join("arch"), "arm64\n"));
    d.write(
        "cfg.json",
        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
    );
    d.write(
        "index.yaml",
        format!(
            "config: {{from: file://cfg.json, type: application/vnd.oci.image.config.v1+json}}\nitems:\n- from: file://{amd}\n  platform: linux/amd64\n- from: file://{arm}\n  platform: linux/arm64\n"
        ),
    );
    pack_ok(&d, "index.yaml", "oci://images:multi");
    let mnt = d.join("mnt");
    let _guard = Unmount(mnt.clone());
    // The member for this machine (amd64 here), or the one asked for.
    let host = if cfg!(target_arch = "aarch64") {
        "arm64\n"
    } else {
        "amd64\n"
    };
    run_ok(
        &d.path,
        &["mount", "--no-tmpfs", "oci://images:multi", "mnt"],
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("arch")).expect("arch"),
        host
    );
    // A process inside keeps it busy: umount says so; --lazy detaches it.
    let mut holder = Command::new("sleep")
        .arg("600")
        .current_dir(&mnt)
        .spawn()
        .expect("sleep");
    let busy = run(&d.path, &["umount", "mnt"], &[]);
    let lazy = run(&d.path, &["umount", "--lazy", "mnt"], &[]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(busy.status.code(), Some(1), "{}", stderr(&busy));
    assert!(
        stderr(&busy).contains("could not be unmounted"),
        "{}",
        stderr(&busy)
    );
    assert!(lazy.status.success(), "{}", stderr(&lazy));
    assert!(mounts_below(&mnt).is_empty());
    run_ok(
        &d.path,
        &[
            "mount",
            "--no-tmpfs",
            "--platform",
            "linux/arm64",
            "oci://images:multi",
            "mnt",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("arch")).expect("arch"),
        "arm64\n"
    );
    assert!(run(&d.path, &["umount", "mnt"], &[]).status.success());
    let o = run_fails(
        &d.path,
        &[
            "mount",
            "--platform",
            "linux/s390x",
            "oci://images:multi",
            "mnt",
        ],
        1,
        "no member of",
    );
    assert!(stderr(&o).contains("linux/amd64"), "{}", stderr(&o));
}

/// Found by a hostile round: one mount point that is not UTF-8, anywhere, made the mount
/// table unreadable, so `delete` removed mounted layers and `umount` failed.
#[test]
fn a_mount_point_not_in_utf8_hides_nothing() {
    use std::os::unix::ffi::OsStrExt;
    let d = TestDir::new();
    let l = gnu_layer(&d, "l", |r| write(&r.join("f"), "f\n"));
    image(&d, "img", &[l]);
    let odd = d.path.join(std::ffi::OsStr::from_bytes(b"odd\xff"));
    std::fs::create_dir(&odd).expect("mkdir");
    let _odd_guard = Unmount(odd.clone());
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&odd)
        .output()
        .expect("mount");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mnt = d.join("mnt");
    let _guard = Unmount(mnt.clone());
    run_ok(&d.path, &["mount", "--no-tmpfs", "oci://images:img", "mnt"]);
    let refused = run(&d.path, &["delete", "oci://images:img"], &[]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    run_ok(&d.path, &["umount", "mnt"]);
    let _ = Command::new("umount").arg(&odd).status();
}

/// The directory of the layer `n` (bottom first) of `oci://images:NAME`, unpacked.
fn unpacked_layer(d: &TestDir, name: &str, n: usize) -> PathBuf {
    let layout = d.join("images");
    let m = blob_json(
        &layout,
        entry(&layout, name)["digest"].as_str().expect("digest"),
    );
    let digest = m["layers"][n]["digest"].as_str().expect("layer");
    layout.join("unpacked/sha256").join(&digest[7..])
}

/// Found by a hostile round: a path resolved inside the image (through a symlink whose
/// target holds a line break) reached `Where=`; `%` in a tmpfs size was a specifier; a
/// unit of another program was overwritten.
#[test]
fn unit_files_hold_only_what_they_can_and_replace_only_ours() {
    let d = TestDir::new();
    let l = gnu_layer(&d, "l", |r| {
        std::fs::create_dir_all(r.join("x\nExecStart=/bin/evil")).expect("odd dir");
        std::os::unix::fs::symlink("x\nExecStart=/bin/evil", r.join("data")).expect("link");
        std::fs::create_dir_all(r.join("tmp")).expect("tmp");
        std::fs::create_dir_all(r.join("srv")).expect("srv");
    });
    image(&d, "u", &[l]);
    let units = d.mkdir("units");
    let unit_dir = units.to_str().expect("utf8");
    let persistent = |flags: &[&str]| {
        let mut args = vec![
            "--format",
            "json",
            "mount",
            "--persistent",
            "--unit-dir",
            unit_dir,
        ];
        args.extend(flags);
        args.extend(["oci://images:u", "mnt"]);
        run(&d.path, &args, &[])
    };
    let o = persistent(&["--bind", "/etc:/data"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot hold"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&units).expect("units").count(), 0);
    // A relative bind source is written as its real absolute path; `50%` as `50%%`.
    d.mkdir("hostdir");
    let o = persistent(&["--bind", "./hostdir:/srv", "--tmpfs", "/tmp:50%"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let written: Vec<PathBuf> = v["units"]
        .as_array()
        .expect("units")
        .iter()
        .map(|u| PathBuf::from(u.as_str().expect("path")))
        .collect();
    assert_eq!(written.len(), 3, "{written:?}");
    let text = |p: &Path| std::fs::read_to_string(p).expect("unit");
    assert!(
        text(&written[1]).contains("\nOptions=nosuid,nodev,size=50%%\n"),
        "{}",
        text(&written[1])
    );
    let real = d.join("hostdir").canonicalize().expect("real");
    assert!(
        text(&written[2]).contains(&format!("\nWhat={}\n", real.display())),
        "{}",
        text(&written[2])
    );
    // Ours are replaced by a new run; another program's unit of the same name is not.
    std::fs::write(&written[2], "[Unit]\nDescription=someone else's\n").expect("foreign");
    let o = persistent(&["--bind", "./hostdir:/srv"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not written by oci-packer"),
        "{}",
        stderr(&o)
    );
    assert_eq!(text(&written[2]), "[Unit]\nDescription=someone else's\n");
    // A mount point on `/` (unit `-.mount`) is refused, as is a backslash.
    for dir in ["/", "mnt\\"] {
        let o = run(
            &d.path,
            &[
                "mount",
                "--persistent",
                "--unit-dir",
                unit_dir,
                "oci://images:u",
                dir,
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(2), "{dir}: {}", stderr(&o));
    }
}

/// Found by a hostile round: `delete` removed an unpacked layer with a host directory bound
/// below it, deleting the host's files; the guard missed a moved layout; mounting inside a
/// layout put the mount where a collection reaches.
#[test]
fn delete_never_reaches_into_mounts_and_follows_moved_layouts() {
    let d = TestDir::new();
    let l = gnu_layer(&d, "l", |r| {
        std::fs::create_dir_all(r.join("d")).expect("d");
        write(&r.join("f"), "f\n");
    });
    image(&d, "img", &[l]);
    let mnt = d.join("mnt");
    let _guard = Unmount(mnt.clone());
    run_ok(&d.path, &["mount", "--no-tmpfs", "oci://images:img", "mnt"]);
    // The overlay unmounted; a host directory bound inside the unpacked layer.
    assert!(run(&d.path, &["umount", "mnt"], &[]).status.success());
    let layer = unpacked_layer(&d, "img", 0);
    write(&d.join("host/precious"), "keep me\n");
    let inside = layer.join("d");
    let _bind_guard = Unmount(inside.clone());
    let o = Command::new("mount")
        .arg("--bind")
        .arg(d.join("host"))
        .arg(&inside)
        .output()
        .expect("mount");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for args in [
        vec!["delete", "oci://images:img"],
        vec!["gc", "oci://images"],
    ] {
        let o = run(&d.path, &args, &[]);
        if args[0] == "gc" {
            // gc keeps the tagged image's layer: nothing to refuse.
            assert!(o.status.success(), "{}", stderr(&o));
            continue;
        }
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("in use by a mount"), "{}", stderr(&o));
    }
    assert_eq!(
        std::fs::read_to_string(d.join("host/precious")).expect("host file kept"),
        "keep me\n"
    );
    assert!(layer.join("f").exists(), "nothing of the layer was removed");
    let _ = Command::new("umount").arg(&inside).status();
    // Mounted, then the layout renamed: the overlay's lower paths no longer exist, and the
    // moved layout's layers stay while it is mounted.
    run_ok(&d.path, &["mount", "--no-tmpfs", "oci://images:img", "mnt"]);
    std::fs::rename(d.join("images"), d.join("moved")).expect("rename");
    run_fails(&d.path, &["delete", "oci://moved:img"], 2, "umount");
    assert_eq!(
        std::fs::read_to_string(mnt.join("f")).expect("still there"),
        "f\n"
    );
    assert!(run(&d.path, &["umount", "mnt"], &[]).status.success());
    // A mount point inside a layout, anywhere, is refused before anything is made.
    for dir in ["moved/unpacked/sha256/.empty", "moved/mnt", "moved"] {
        run_fails(
            &d.path,
            &["mount", "oci://moved:img", dir],
            2,
            "inside the layout",
        );
    }
    assert!(!d.join("moved/mnt").exists());
    run_ok(&d.path, &["delete", "oci://moved:img"]);
}

/// Found by a hostile round: a default tmpfs on `/tmp` where the image has `tmp -> /`
/// covered the whole image; a bind below a tmpfs landed underneath it; `//tmp` was not
/// `/tmp`; binds were suid-capable.
#[test]
fn targets_never_hide_each_other_and_binds_are_restricted() {
    let d = TestDir::new();
    let l = gnu_layer(&d, "l", |r| {
        std::os::unix::fs::symlink("/", r.join("tmp")).expect("tmp -> /");
        std::fs::create_dir_all(r.join("run/sub")).expect("run/sub");
        write(&r.join("marker"), "image\n");
    });
    image(&d, "t", &[l]);
    write(&d.join("host/h"), "host\n");
    let bind = format!("{}:/run/sub", d.join("host").display());
    let mnt = d.join("mnt");
    let _guard = Unmount(mnt.clone());
    // Defaults: none on /tmp (it is the root here), none on /run (a bind is below it).
    run_ok(
        &d.path,
        &["mount", "--bind", &bind, "oci://images:t", "mnt"],
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("marker")).expect("image"),
        "image\n"
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("run/sub/h")).expect("bind"),
        "host\n"
    );
    let mounts = mounts_below(&mnt);
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    let (point, options, _) = &mounts[1];
    assert_eq!(point, &mnt.join("run/sub"));
    for o in ["nosuid", "nodev"] {
        assert!(options.split(',').any(|x| x == o), "{options}");
    }
    assert!(run(&d.path, &["umount", "mnt"], &[]).status.success());
    // --suid --dev: the bind keeps what the host mount allows.
    run_ok(
        &d.path,
        &[
            "mount",
            "--suid",
            "--dev",
            "--no-tmpfs",
            "--bind",
            &bind,
            "oci://images:t",
            "mnt",
        ],
    );
    let mounts = mounts_below(&mnt);
    assert!(!mounts[0].1.split(',').any(|x| x == "nosuid"), "{mounts:?}");
    assert!(run(&d.path, &["umount", "mnt"], &[]).status.success());
    // Asked for: the root, or overlapping targets — refused, nothing mounted.
    for (args, expect) in [
        (vec!["--tmpfs", "/tmp"], "image's root"),
        (vec!["--tmpfs", "/run", "--bind", &bind], "overlap"),
        (vec!["--tmpfs", "/run", "--tmpfs", "//run/"], "overlap"),
    ] {
        let mut all = vec!["mount"];
        all.extend(&args);
        all.extend(["oci://images:t", "mnt"]);
        let o = run(&d.path, &all, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
        assert!(mounts_below(&mnt).is_empty());
    }
    // `//run` is /run: one tmpfs there, the default not added again.
    run_ok(
        &d.path,
        &["mount", "--tmpfs", "//run:1m", "oci://images:t", "mnt"],
    );
    let mounts = mounts_below(&mnt);
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    assert_eq!(mounts[1].0, mnt.join("run"));
    assert!(run(&d.path, &["umount", "mnt"], &[]).status.success());
}

/// Found by a hostile round: an image with the same layer twice (real images repeat empty
/// layers) could not be mounted (overlayfs refuses a directory twice).
#[test]
fn a_layer_repeated_mounts_as_the_same_merge() {
    let d = TestDir::new();
    let a = gnu_layer(&d, "a", |r| write(&r.join("x"), "a\n"));
    let b = gnu_layer(&d, "b", |r| {
        write(&r.join(".wh.x"), "");
        write(&r.join("y"), "b\n");
    });
    image(&d, "rep", &[a.clone(), b, a]);
    let mnt = d.join("mnt");
    let _guard = Unmount(mnt.clone());
    run_ok(&d.path, &["mount", "--no-tmpfs", "oci://images:rep", "mnt"]);
    // The top copy of `a` brings x back over b's whiteout, as applying the layers does.
    assert_eq!(std::fs::read_to_string(mnt.join("x")).expect("x"), "a\n");
    assert_eq!(std::fs::read_to_string(mnt.join("y")).expect("y"), "b\n");
    assert!(run(&d.path, &["umount", "mnt"], &[]).status.success());
}

/// Found by a hostile round: two mounts could stack on one directory; sizes tmpfs takes
/// for "no limit" passed; `umount /`; a bind of a file failed with a bare "Invalid
/// argument"; a directory made for a failed mount stayed; a symlinked DIR; the printed
/// umount command was not quoted.
#[test]
fn mount_points_and_flags_are_checked_up_front() {
    let d = TestDir::new();
    let empty = gnu_layer(&d, "empty", |_| {});
    image(&d, "e", &[empty]);
    let mnt = d.join("my mnt");
    let _guard = Unmount(mnt.clone());
    let o = run_ok(
        &d.path,
        &["mount", "--no-tmpfs", "oci://images:e", "my mnt"],
    );
    // Printed so that it pastes: quoted.
    let shown = format!("umount '{}'", mnt.display());
    assert!(stdout(&o).contains(&shown), "{}", stdout(&o));
    // The image is empty, so the mount point looks empty: a second mount is still refused.
    run_fails(
        &d.path,
        &["mount", "--no-tmpfs", "oci://images:e", "my mnt"],
        2,
        "mount point already",
    );
    assert_eq!(mounts_below(&mnt).len(), 1);
    // umount through a symlink to the mount point works; umount / is refused.
    std::os::unix::fs::symlink(&mnt, d.join("link")).expect("link");
    run_ok(&d.path, &["umount", "link"]);
    assert!(mounts_below(&mnt).is_empty());
    let o = run(&d.path, &["umount", "/"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Mounting through the symlink mounts at the real path.
    let o = run_ok(
        &d.path,
        &[
            "--format",
            "json",
            "mount",
            "--no-tmpfs",
            "oci://images:e",
            "link",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        v["dir"],
        mnt.canonicalize().expect("real").display().to_string()
    );
    assert_eq!(mounts_below(&mnt).len(), 1);
    assert!(run(&d.path, &["umount", "link"], &[]).status.success());
    // Sizes: 0 (no limit to tmpfs), percentages past 100 or with a unit: refused.
    for size in ["0", "1m%", "101%", "0%", "-1"] {
        let flag = format!("/tmp:{size}");
        run_fails(
            &d.path,
            &["mount", "--tmpfs", &flag, "oci://images:e", "m2"],
            2,
            "--tmpfs",
        );
    }
    // A file as a bind source: said so.
    d.write("a-file", "x");
    run_fails(
        &d.path,
        &["mount", "--bind", "a-file:/x", "oci://images:e", "m2"],
        2,
        "is not a directory",
    );
    // A failed mount leaves no directory it made.
    let o = run(
        &d.path,
        &["mount", "--tmpfs", "/nope", "oci://images:e", "new/a/b"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!d.join("new").exists());
    // / as a mount point.
    run_fails(
        &d.path,
        &["mount", "oci://images:e", "/"],
        2,
        "whole system",
    );
}

/// Found by a hostile round: `mount` took no lock, so a `delete` running at the same time
/// could remove a layer between its unpacking and the mount. A collector holding the
/// layout's operation lock makes `mount` wait (seen in the kernel's wait channel of one of
/// its threads), and the mount then goes ahead with its layers there.
#[test]
fn mount_waits_for_a_running_collection() {
    use std::io::Write as _;
    let d = TestDir::new();
    let l = gnu_layer(&d, "l", |r| write(&r.join("f"), "f\n"));
    image(&d, "img", &[l]);
    let lock = d.join("images/.oci-packer.lock");
    // A collector's exclusive hold, until its stdin closes.
    let mut holder = Command::new("flock")
        .arg("-x")
        .arg(&lock)
        .arg("cat")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("flock");
    let held = || {
        !Command::new("flock")
            .args(["-n", "-s"])
            .arg(&lock)
            .arg("true")
            .status()
            .expect("flock -n")
            .success()
    };
    wait_while_running(&mut holder, "the collector's lock", held);
    let mnt = d.join("mnt");
    let _guard = Unmount(mnt.clone());
    let mut mount = bin()
        .args(["mount", "--no-tmpfs", "oci://images:img", "mnt"])
        .current_dir(&d.path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mount");
    let waiting = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|rd| {
                rd.flatten().any(|t| {
                    std::fs::read_to_string(t.path().join("wchan"))
                        .is_ok_and(|w| w.contains("lock"))
                })
            })
            .unwrap_or(false)
    };
    // Ending first would mean it ran while a collection held the layout.
    let pid = mount.id();
    wait_while_running(&mut mount, "mount waiting for the collection", || {
        waiting(pid)
    });
    assert!(mounts_below(&mnt).is_empty());
    holder
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"")
        .expect("write");
    assert!(holder.wait().expect("holder").success());
    let o = mount.wait_with_output().expect("mount");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(mnt.join("f")).expect("f"), "f\n");
    assert_eq!(
        run(&d.path, &["delete", "oci://images:img"], &[])
            .status
            .code(),
        Some(2)
    );
    assert!(run(&d.path, &["umount", "mnt"], &[]).status.success());
}

/// Builds `NAME.tar` of only `members` of the files `build` makes (GNU tar; no entries for
/// their parent directories).
fn gnu_layer_of(d: &TestDir, name: &str, members: &[&str], build: impl FnOnce(&Path)) -> String {
    let root = d.mkdir(&format!("rootfs-{name}"));
    build(&root);
    let file = format!("{name}.tar");
    let o = Command::new("tar")
        .args(["-cf", &file, "-C", root.to_str().expect("utf8")])
        .args(members)
        .current_dir(&d.path)
        .output()
        .expect("tar");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    file
}

/// Found by a hostile round: parents a layer does not list were made 0700 and hid the
/// lower layers' files from everyone but root; an opaque marker at a layer's root (which
/// overlayfs ignores there) let deleted files show through.
#[test]
fn implicit_parents_and_an_opaque_root_merge_as_the_image_says() {
    use std::os::unix::fs::PermissionsExt;
    let d = TestDir::new();
    let a = gnu_layer(&d, "a", |r| {
        write(&r.join("usr/share/a"), "a\n");
        write(&r.join("secret/key"), "s\n");
    });
    let b = gnu_layer_of(&d, "b", &["./usr/share/b"], |r| {
        write(&r.join("usr/share/b"), "b\n")
    });
    image(&d, "parents", &[a.clone(), b]);
    let mnt = d.join("mnt");
    let _guard = Unmount(mnt.clone());
    run_ok(
        &d.path,
        &["mount", "--no-tmpfs", "oci://images:parents", "mnt"],
    );
    for p in ["usr", "usr/share"] {
        let mode = std::fs::metadata(mnt.join(p))
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{p}: {mode:o}");
    }
    let o = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
        .arg(mnt.join("usr/share/a"))
        .output()
        .expect("setpriv");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    run_ok(&d.path, &["umount", "mnt"]);
    // `.wh..wh..opq` at the top of the second layer: nothing of the first is left.
    let c = gnu_layer(&d, "c", |r| {
        write(&r.join(".wh..wh..opq"), "");
        write(&r.join("new"), "n\n");
    });
    image(&d, "opaque", &[a, c]);
    run_ok(
        &d.path,
        &["mount", "--no-tmpfs", "oci://images:opaque", "mnt"],
    );
    let names: Vec<String> = std::fs::read_dir(&mnt)
        .expect("read")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["new"]);
    run_ok(&d.path, &["umount", "mnt"]);
}

/// Found by a hostile round: more layers than overlayfs stacks (500) gave an error about
/// the kernel's version; `--persistent` checked nothing of DIR; white space at the end of
/// a path was dropped by systemd; an upper directory of an overlay was not guarded; a
/// symlink loop was called an escape; bare system errors and a silent `umount`.
#[test]
fn more_refusals_say_what_is_wrong() {
    let d = TestDir::new();
    let layers: Vec<String> = (0..501)
        .map(|i| {
            gnu_layer(&d, &format!("l{i:03}"), |r| {
                write(&r.join(format!("f{i}")), "x")
            })
        })
        .collect();
    image(&d, "huge", &layers);
    run_fails(
        &d.path,
        &["mount", "oci://images:huge", "m1"],
        2,
        "overlayfs stacks at most 500",
    );
    assert!(!d.join("m1").exists());
    let l = gnu_layer(&d, "small", |r| {
        std::fs::create_dir_all(r.join("srv")).expect("srv");
        std::os::unix::fs::symlink("b", r.join("a")).expect("a -> b");
        std::os::unix::fs::symlink("a", r.join("b")).expect("b -> a");
    });
    image(&d, "small", &[l]);
    let units = d.mkdir("units");
    let unit_dir = units.to_str().expect("utf8");
    d.write("busy/keep", "x");
    d.write("a-file", "x");
    d.mkdir("data ");
    for (args, expect) in [
        (
            vec!["--persistent", "--unit-dir", unit_dir, "busy"],
            "is not empty",
        ),
        (
            vec!["--persistent", "--unit-dir", unit_dir, "a-file"],
            "is not a directory",
        ),
        (vec!["a-file"], "is not a directory"),
        (
            vec!["--persistent", "--unit-dir", "a-file", "m2"],
            "is not a directory",
        ),
        (
            vec!["--persistent", "--unit-dir", unit_dir, "m2 "],
            "white space",
        ),
        (
            vec![
                "--persistent",
                "--unit-dir",
                unit_dir,
                "--bind",
                "data :/srv",
                "m2",
            ],
            "white space",
        ),
        (vec!["--tmpfs", "../a", "m2"], "above the image's root"),
        (vec!["--tmpfs", "/srv:17179869184g", "m2"], "at most 1 EiB"),
        (
            vec!["--tmpfs", "/srv:18446744073709551615", "m2"],
            "at most 1 EiB",
        ),
    ] {
        let mut all = vec!["mount", "--no-tmpfs"];
        all.extend(&args);
        all.insert(all.len() - 1, "oci://images:small");
        run_fails(&d.path, &all, 2, expect);
    }
    assert_eq!(std::fs::read_dir(&units).expect("units").count(), 0);
    assert!(!d.join("m2").exists());
    let o = run(
        &d.path,
        &[
            "mount",
            "--no-tmpfs",
            "--tmpfs",
            "/a",
            "oci://images:small",
            "m3",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("a loop?"), "{}", stderr(&o));
    run_fails(&d.path, &["umount", "m3"], 2, "nothing is mounted");
    // A layer's directory as an overlay's upper directory keeps it.
    run_ok(
        &d.path,
        &["mount", "--no-tmpfs", "oci://images:small", "m4"],
    );
    run_ok(&d.path, &["umount", "m4"]);
    let layer = unpacked_layer(&d, "small", 0);
    let (lower, work, point) = (d.mkdir("lo"), d.mkdir("wk"), d.mkdir("m5"));
    let _guard = Unmount(point.clone());
    let o = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            layer.display(),
            work.display()
        ))
        .arg(&point)
        .output()
        .expect("mount");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    run_fails(
        &d.path,
        &["delete", "oci://images:small"],
        2,
        "in use by a mount",
    );
    assert!(layer.exists());
    let _ = Command::new("umount").arg(&point).status();
}
