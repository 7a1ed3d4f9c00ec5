//! SPEC §4: commands, the seed form, output formats, exit statuses, help.

use serde_json::Value;

use crate::util::*;

#[test]
fn seed_form_and_pack_command_agree() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("pack.yaml", "items:\n  - from: file://a.txt\n");
    let o = run(&d.path, &["-f", "pack.yaml", "oci://out:seed"], &[]);
    let seed = packed_digest(&o);
    assert_eq!(
        stdout(&o),
        format!("Pushed oci://out:seed\nDigest: {seed}\n")
    );
    assert_eq!(pack_ok(&d, "pack.yaml", "oci://out:cmd"), seed);
}

#[test]
fn json_output_and_exit_statuses() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("pack.yaml", "items:\n  - from: file://a.txt\n");
    d.write(
        "bad.yaml",
        "items:\n  - from: file://a.txt\n    platform: linux-amd64\n",
    );
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
        &[],
    );
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["reference"], "oci://out:v1");
    assert_eq!(v["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(v["blobsStored"], 3);
    let again: Value = serde_json::from_str(&stdout(&run(
        &d.path,
        &[
            "--format",
            "json",
            "pack",
            "-f",
            "pack.yaml",
            "oci://out:v1",
        ],
        &[],
    )))
    .expect("json");
    assert_eq!(
        (again["blobsStored"].clone(), again["blobsSkipped"].clone()),
        (0.into(), 1.into()),
        "the root exists: nothing moves"
    );

    let o = run(&d.path, &["validate", "-f", "pack.yaml"], &[]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), "pack.yaml: valid\n".to_string())
    );
    let o = run(
        &d.path,
        &["--format", "json", "validate", "-f", "bad.yaml"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"][0]["field"], "items[0].platform");
    assert_eq!(
        (
            v["problems"][0]["line"].clone(),
            v["problems"][0]["column"].clone()
        ),
        (3.into(), 15.into())
    );

    let o = run(
        &d.path,
        &["--format", "json", "pack", "-f", "bad.yaml", "oci://out:v2"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let e: Value = serde_json::from_str(stderr(&o).trim()).expect("json error");
    assert_eq!(e["error"]["kind"], "pack_file");

    let o = run(&d.path, &["validate", "-f", "missing.yaml"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("reading pack file missing.yaml"),
        "{}",
        stderr(&o)
    );

    let o = run(
        &d.path,
        &[
            "--plain-http",
            "pack",
            "-f",
            "pack.yaml",
            "127.0.0.1:1/repo:v1",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("http://127.0.0.1:1/v2/repo/")
            && stderr(&o).contains("Connection refused"),
        "{}",
        stderr(&o)
    );

    let o = run(&d.path, &["pack", "-f", "pack.yaml", "ftp://x"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown scheme \"ftp://\""),
        "{}",
        stderr(&o)
    );

    for args in [
        &["--bogus"][..],
        &["pack"],
        &["-j", "0", "list", "oci://x"],
        &[],
    ] {
        let o = run(&d.path, args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn every_command_has_help() {
    let d = TestDir::new();
    for cmd in [
        &["--help"][..],
        &["pack", "--help"],
        &["validate", "--help"],
        &["list", "--help"],
    ] {
        let o = run(&d.path, cmd, &[]);
        assert_eq!(o.status.code(), Some(0), "{cmd:?}");
        assert!(stdout(&o).contains("Usage:"), "{cmd:?}");
    }
    let o = run(&d.path, &["--version"], &[]);
    assert_eq!(
        stdout(&o),
        format!("oci-packer {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn logs_go_to_stderr_as_json_when_asked() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("pack.yaml", "items:\n  - from: file://a.txt\n");
    let o = run(
        &d.path,
        &[
            "-v",
            "--log-format",
            "json",
            "pack",
            "-f",
            "pack.yaml",
            "oci://out:v1",
        ],
        &[],
    );
    assert!(o.status.success());
    let line = stderr(&o)
        .lines()
        .find(|l| l.contains("packed"))
        .map(str::to_string)
        .expect("a log line");
    let v: Value = serde_json::from_str(&line).expect("json log");
    assert_eq!(v["level"], "INFO");
    assert!(!stdout(&o).contains("packed"), "logs stay off stdout");
}

/// The README's examples pack as documented, and skopeo reads them.
#[test]
fn readme_examples_pack() {
    let d = TestDir::new();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for (file, name) in [("pack.yaml", "example"), ("multiarch.yaml", "multi")] {
        let pack = examples.join(file);
        let target = format!("oci://{}:{name}", d.join("layout").display());
        packed_digest(&run(
            &d.path,
            &["pack", "-f", pack.to_str().expect("utf8"), &target],
            &[],
        ));
        skopeo_reads(&d.join("layout"), name);
    }
    let o = run(
        &d.path,
        &["list", &format!("oci://{}", d.join("layout").display())],
        &[],
    );
    assert!(
        stdout(&o).contains("linux/amd64,linux/arm64 "),
        "{}",
        stdout(&o)
    );
}

/// On a terminal, progress bars are drawn on stderr (here a pseudo-terminal from `script`).
#[test]
fn progress_bars_on_a_terminal() {
    let d = TestDir::new();
    d.write("big.bin", vec![3u8; 64 << 20]);
    d.write("pack.yaml", "items:\n  - from: file://big.bin\n");
    let cmd = format!(
        "{} pack -f pack.yaml oci://out:v1",
        env!("CARGO_BIN_EXE_oci-packer")
    );
    let o = std::process::Command::new("script")
        .current_dir(&d.path)
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script (util-linux)");
    assert!(o.status.success(), "{}", stderr(&o));
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(
        screen.contains("reading [") && screen.contains("big.bin"),
        "{screen}"
    );
    assert!(screen.contains("written ["), "{screen}");
    assert!(screen.contains("Digest: sha256:"), "{screen}");
    let quiet = run(&d.path, &["pack", "-f", "pack.yaml", "oci://out:v2"], &[]);
    assert!(
        !stderr(&quiet).contains('['),
        "no bars when stderr is not a terminal"
    );
}
