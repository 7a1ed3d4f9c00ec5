//! The command line: commands, the short form, output formats, exit statuses, help.

use serde_json::Value;

use crate::util::*;

#[test]
fn short_form_and_pack_command_agree() {
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
    assert_eq!(v["stats"]["stored"], 3);
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
        (
            again["stats"]["stored"].clone(),
            again["stats"]["skipped"].clone()
        ),
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

/// In the short form, a bare TARGET word that names a command, or that is no reference at
/// all, is a usage error saying what to write — nothing is pushed anywhere. Commands of the
/// original tool that this version lacks are refused with a message saying so.
#[test]
fn command_words_are_never_targets() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("p.yaml", "items:\n  - from: file://a.txt\n");
    let o = run(&d.path, &["-f", "p.yaml", "extract"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Usage: oci-packer extract"),
        "{}",
        stderr(&o)
    );
    let o = run(&d.path, &["-f", "p.yaml", "proxy"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Usage: oci-packer proxy"),
        "{}",
        stderr(&o)
    );
    for word in ["push", "pull", "version"] {
        let o = run(&d.path, &["-f", "p.yaml", word], &[]);
        assert_eq!(o.status.code(), Some(2), "{word}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("\"{word}\" is a command, not a target")),
            "{word}: {}",
            stderr(&o)
        );
    }
    for word in ["Not A Ref", "latest", "out"] {
        let o = run(&d.path, &["-f", "p.yaml", word], &[]);
        assert_eq!(o.status.code(), Some(2), "{word}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("is neither a command nor a target"),
            "{word}"
        );
    }
    // Paths without oci:// and hosts with a bad port are reference errors, not requests.
    for target in ["./out", "../out", "oci://out:v1/x", "oci://R:/x"] {
        let o = run(&d.path, &["-f", "p.yaml", target], &[]);
        assert_eq!(o.status.code(), Some(2), "{target}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("invalid reference"),
            "{target}: {}",
            stderr(&o)
        );
    }
    assert!(!d.join("out").exists());
}

/// Help, docs and the README speak to users: no internal words, no spec clause numbers.
#[test]
fn user_facing_text_has_no_internal_words() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = vec![("--help".to_string(), stdout(&run(root, &["--help"], &[])))];
    for cmd in ["pack", "validate", "list", "copy", "login", "logout"] {
        texts.push((
            format!("{cmd} --help"),
            stdout(&run(root, &[cmd, "--help"], &[])),
        ));
    }
    let mut files = vec![root.join("README.md")];
    for dir in ["docs", "docs/man"] {
        for e in std::fs::read_dir(root.join(dir)).expect("docs") {
            let path = e.expect("entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    for f in files {
        texts.push((
            f.display().to_string(),
            std::fs::read_to_string(&f).expect("read"),
        ));
    }
    for (name, text) in texts {
        for word in ["seed", "SPEC §", "§"] {
            assert!(!text.contains(word), "{name} says {word:?}");
        }
        let lower = text.to_lowercase();
        assert!(
            !lower.contains("issue 1") && !lower.contains("issue 8") && !lower.contains("issue 9"),
            "{name} cites an issue number"
        );
    }
}

/// `oci://DIR:TAG@sha256:…` as a target: the content must have that digest (checked before
/// any tag) and is then tagged TAG — never a literal name with an `@`; as a source the
/// digest is what is read. `sha512:` pins are refused at validation.
#[test]
fn layout_references_with_a_tag_and_a_digest() {
    let d = TestDir::new();
    write_two_packs(&d);
    let a = pack_ok(&d, "a.yaml", "oci://out:a");
    let b = pack_ok(&d, "b.yaml", "oci://out:b");
    let o = run(
        &d.path,
        &["pack", "-f", "a.yaml", &format!("oci://out:v1@{b}")],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not the one in the reference"),
        "{}",
        stderr(&o)
    );
    assert_eq!(entry_names(&d.join("out")), ["a", "b"], "nothing tagged");
    let o = run(
        &d.path,
        &["pack", "-f", "a.yaml", &format!("oci://out:v1@{a}")],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(entry(&d.join("out"), "v1")["digest"], a.as_str());
    // As a source, the digest wins over the name.
    let o = run(
        &d.path,
        &["copy", &format!("oci://out:a@{b}"), "oci://copy:x"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(entry(&d.join("copy"), "x")["digest"], b.as_str());
    // sha512 pins.
    d.write(
        "pin.yaml",
        format!(
            "items:\n  - from: file://a.txt\n    digest: sha512:{}\n",
            "a".repeat(128)
        ),
    );
    let o = run(&d.path, &["validate", "-f", "pin.yaml"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).contains("items[0].digest") && stdout(&o).contains("sha256"),
        "{}",
        stdout(&o)
    );
}

/// Control characters from a registry's error text, a layout's tag names, titles and types
/// never reach the terminal raw: they are shown as escapes.
#[test]
fn control_characters_from_outside_are_escaped() {
    let srv = HttpServer::with_handler(|req| {
        if req.method == "HEAD" {
            return Response::status(404);
        }
        Response::status(400).body(
            "{\"errors\":[{\"code\":\"DENIED\",\"message\":\"\\u001b[2J\\r\\nerror: FAKE LINE\"}]}",
        )
    });
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("a.yaml", "items:\n  - from: file://a.txt\n");
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "pack",
            "-f",
            "a.yaml",
            &format!("{}/x/y:v1", srv.addr),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(!err.contains('\u{1b}') && !err.contains('\r'), "{err:?}");
    assert!(err.contains("\\x1b[2J\\r\\nerror: FAKE LINE"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // A layout whose tag and title carry escapes (a type with one is refused when packing).
    d.write(
        "evil.yaml",
        "items:\n  - from: file://a.txt\n    annotations:\n      org.opencontainers.image.title: \"t\\e]0;pwned\\a\"\n",
    );
    let o = run(&d.path, &["pack", "-f", "evil.yaml", "oci://out:v1"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let index = d.join("out/index.json");
    let text = std::fs::read_to_string(&index).expect("index");
    let tree_ref = format!(
        "oci://out@{}",
        read_json(&index)["manifests"][0]["digest"]
            .as_str()
            .expect("digest")
    );
    std::fs::write(&index, text.replace("\"v1\"", "\"v1\\u001b[2J\"")).expect("write");
    for args in [vec!["list", "oci://out"], vec!["list", &tree_ref]] {
        let o = run(&d.path, &args, &[]);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{7}'),
            "{args:?}: {out:?}"
        );
        assert!(out.contains("\\x1b"), "{args:?}: {out}");
    }
    // Names with control characters are refused as references; the error is escaped.
    for args in [
        vec!["list", "oci://out:v1\u{1b}[2J"],
        vec!["pack", "-f", "a.yaml", "oci://L:t\u{1b}[31m\r\nX\u{202e}"],
        vec!["list", "oci://L:nope\u{1b}[2J\nerror: fake"],
    ] {
        let o = run(&d.path, &args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            !err.contains('\u{1b}') && err.lines().count() == 1,
            "{args:?}: {err:?}"
        );
    }
}

/// A newcomer's slips are usage errors with a hint, never a request to Docker Hub: a bare
/// word or Docker Hub's short form as a written target (`pack`, `copy`), a host without a
/// repository, an archive file name, skopeo's `oci:DIR`, `oci://NAME/…` where NAME is also a
/// local directory, a target after a bare `--created`, a bad port or a host name that is
/// not ASCII; `-f FILE` before `validate` or `pack` works.
#[test]
fn newcomer_slips_get_hints() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.mkdir("build.d");
    d.write("p.yaml", "items:\n  - from: file://a.txt\n");
    pack_ok(&d, "p.yaml", "oci://out:v1");
    for (args, expect) in [
        (
            vec!["pack", "-f", "p.yaml", "out"],
            "for the local directory write oci://out:TAG",
        ),
        (
            vec!["copy", "oci://out:v1", "out2"],
            "\"out2\" is not a target",
        ),
        (vec!["pack", "-f", "p.yaml", "oci:out"], "write oci://out"),
        (vec!["list", "oci:out:v1"], "write oci://out:v1"),
        (
            vec!["pack", "-f", "p.yaml", "--created", "oci://out:c"],
            "--created \"oci://out:c\": give now or an RFC 3339 time",
        ),
        // Docker Hub's short form is never a place to write.
        (
            vec!["pack", "-f", "p.yaml", "out:v1"],
            "./out is an OCI layout here: write oci://out:v1 for the layout",
        ),
        // Read from a layout without its scheme.
        (
            vec!["list", "out:v1"],
            "./out is an OCI layout here: write oci://out:v1 for the layout",
        ),
        (
            vec!["copy", "oci://out:v1", "docker://out:v2"],
            "would be Docker Hub's library/out",
        ),
        (
            vec!["pack", "-f", "p.yaml", "localhost:5000"],
            "names a registry host, not a repository: write localhost:5000/REPO:TAG",
        ),
        (
            vec!["pack", "-f", "p.yaml", "out.tar"],
            "looks like an archive file",
        ),
        (
            vec!["pack", "-f", "p.yaml", "layout.oci"],
            "for a local layout write oci://layout.oci:latest",
        ),
        // oci://NAME/… where NAME is both a host and a local directory.
        (
            vec!["pack", "-f", "p.yaml", "oci://build.d/x:v1"],
            "write oci://./build.d/x:v1 for the layout, or docker://build.d/x:v1",
        ),
        (
            vec!["list", "oci://build.d/x"],
            "or the local directory ./build.d",
        ),
        // Hosts: DNS names in ASCII, ports 1 to 65535.
        (
            vec!["pack", "-f", "p.yaml", "localhost:99999/a:v1"],
            "is not a number from 1 to 65535",
        ),
        (
            vec!["pack", "-f", "p.yaml", "reg\u{200b}istry.example.com/a:v1"],
            "host names are ASCII",
        ),
        (vec!["list", "b\u{fc}cher.example/a"], "in its xn-- form"),
        // Credentials in a reference, IPv4 addresses in other notations.
        (
            vec!["pack", "-f", "p.yaml", "user@127.0.0.1:5000/r:v1"],
            "user names do not go in references; use -u/-p or `oci-packer login 127.0.0.1:5000`",
        ),
        (
            vec!["list", "127.1:5000/r"],
            "neither a host name nor an IPv4 address in four decimal parts",
        ),
        (
            vec!["list", "0x7f000001:5000/r"],
            "neither a host name nor an IPv4 address",
        ),
    ] {
        let o = run(&d.path, &args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
    }
    let o = run(&d.path, &["-f", "p.yaml", "validate"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("p.yaml: valid"));
    let o = run(&d.path, &["-f", "p.yaml", "pack", "oci://out:front"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&d.path, &["validate"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("validate needs a pack file: -f FILE"));
    // A listing (far more than a pipe buffer) piped into a reader that stops early ends
    // quietly.
    let o = std::process::Command::new("sh")
        .current_dir(&d.path)
        .arg("-c")
        .arg(format!(
            "for i in $(seq 1 2000); do echo \"  - from: file://a.txt\n    annotations: {{n: \\\"$i\\\"}}\"; done > items.txt; \
             (echo items:; cat items.txt) > many.yaml; {} pack -f many.yaml oci://out:many >/dev/null; \
             {} list oci://out:many | head -1",
            env!("CARGO_BIN_EXE_oci-packer"),
            env!("CARGO_BIN_EXE_oci-packer")
        ))
        .output()
        .expect("sh");
    assert!(!stderr(&o).contains("Broken pipe"), "{}", stderr(&o));
}

/// Text from outside that reaches a log line or JSON output is escaped too: a warning that
/// names a cache directory with a bidi override and an escape sequence in its name, and the
/// `--dry-run` manifest and `--format json` listing of a pack whose annotation holds C1
/// controls and bidi overrides (JSON escapes there: the same JSON value).
#[test]
fn logs_and_json_output_escape_what_could_drive_a_terminal() {
    use std::os::unix::fs::PermissionsExt;
    let d = TestDir::new();
    d.write("a.txt", "a");
    let evil = "cache\u{202e}\u{1b}[2J";
    let cache = d.mkdir(&format!("{evil}/oci-packer"));
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    d.write("p.yaml", "items:\n  - from: http://127.0.0.1:1/never.bin\n");
    let xdg = d.join(evil);
    let o = run(
        &d.path,
        &["pack", "-f", "p.yaml", "oci://out:v1"],
        &[("XDG_CACHE_HOME", xdg.to_str().expect("utf8"))],
    );
    let err = stderr(&o);
    assert!(err.contains("not a private directory"), "{err}");
    assert!(
        !err.contains('\u{202e}') && !err.contains("\u{1b}[2J"),
        "{err:?}"
    );
    assert!(err.contains("\\u{202e}"), "{err}");

    d.write(
        "q.yaml",
        "annotations:\n  note: \"x\\u009b31m\\u202ey\\u007f\"\nitems:\n  - from: file://a.txt\n    \
         annotations:\n      note: \"x\\u009b31m\\u202ey\"\n",
    );
    let o = run(&d.path, &["pack", "-f", "q.yaml", "--dry-run"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains(['\u{9b}', '\u{202e}', '\u{7f}']), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("still JSON");
    assert_eq!(v["annotations"]["note"], "x\u{9b}31m\u{202e}y\u{7f}");
    pack_ok(&d, "q.yaml", "oci://out:v1");
    let o = run(&d.path, &["--format", "json", "list", "oci://out:v1"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains(['\u{9b}', '\u{202e}']), "{out:?}");
    assert!(out.contains("\\u009b"), "{out}");
}

/// `completion bash`, sourced by bash, completes `oci-packer val<TAB>` to `validate` and
/// `oci-packer list --form<TAB>` to `--format`; the other shells get a script too; the
/// committed man pages render with `man -l` and name every command.
#[test]
fn shell_completion_and_man_pages() {
    let d = TestDir::new();
    let o = run(&d.path, &["completion", "bash"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    d.write("complete.bash", &o.stdout);
    let complete = |line: &str| -> Vec<String> {
        let words: Vec<&str> = line.split(' ').collect();
        let script = format!(
            "source ./complete.bash; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; \
             COMP_POINT=${{#COMP_LINE}}; f=$(complete -p oci-packer | sed -E 's/.* -F ([^ ]+) .*/\\1/'); \
             \"$f\" oci-packer '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            words.join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let o = std::process::Command::new("bash")
            .current_dir(&d.path)
            .args(["-c", &script])
            .output()
            .expect("bash");
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(complete("oci-packer val"), ["validate"]);
    assert!(complete("oci-packer list --form").contains(&"--format".to_string()));
    let commands = complete("oci-packer x");
    assert!(commands.is_empty(), "{commands:?}");
    let o = run(&d.path, &["completion", "bash"], &[]);
    assert!(
        !stdout(&o).contains("generate-man"),
        "generate-man is completed"
    );
    assert_eq!(complete("oci-packer prox"), ["proxy"]);
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let o = run(&d.path, &["completion", shell], &[]);
        assert!(
            o.status.success() && stdout(&o).contains("validate"),
            "{shell}"
        );
    }
    let man = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man");
    for page in [
        "oci-packer",
        "oci-packer-pack",
        "oci-packer-list",
        "oci-packer-completion",
    ] {
        let o = std::process::Command::new("man")
            .arg("-l")
            .arg(man.join(format!("{page}.1")))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .expect("man (man-db) must be installed (.ci/run installs it)");
        assert!(o.status.success(), "{page}: {}", stderr(&o));
        let text = stdout(&o);
        assert!(text.contains(page), "{page}: {text}");
    }
    let o = std::process::Command::new("man")
        .arg("-l")
        .arg(man.join("oci-packer.1"))
        .env("MANPAGER", "cat")
        .output()
        .expect("man");
    for command in [
        "pack",
        "validate",
        "list",
        "copy",
        "login",
        "logout",
        "completion",
    ] {
        assert!(
            stdout(&o).contains(command),
            "{command} missing from oci-packer(1)"
        );
    }
}

/// `--format json` on every command, one naming convention: pack and copy print the
/// descriptor object the bindings return, login/logout say what they did, and an error
/// carries the Python exception's fields (the registry's status and code, a problem's line).
#[test]
fn json_output_on_every_command_with_full_errors() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    d.write("p.yaml", "items:\n  - from: file://a.txt\n");
    let json = |args: &[&str]| -> (Option<i32>, serde_json::Value, serde_json::Value) {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let o = run(&d.path, &all, &[]);
        let parse = |t: &str| serde_json::from_str(t).unwrap_or(serde_json::Value::Null);
        (o.status.code(), parse(&stdout(&o)), parse(&stderr(&o)))
    };
    let (code, packed, _) = json(&["pack", "-f", "p.yaml", "oci://out:v1"]);
    assert_eq!(code, Some(0));
    assert_eq!(packed["stats"]["stored"], 3, "{packed}");
    assert_eq!(packed["reference"], "oci://out:v1");
    let (_, copied, _) = json(&["copy", "oci://out:v1", "oci://out:v2"]);
    assert_eq!(copied["digest"], packed["digest"]);
    assert_eq!(
        copied["stats"]["skipped"].as_u64().map(|n| n > 0),
        Some(true),
        "{copied}"
    );
    assert!(
        copied["annotations"]
            .get("org.opencontainers.image.ref.name")
            .is_none(),
        "the source's entry name is not the copy's: {copied}"
    );
    // A parser's usage error, and a target that cannot be created, as JSON.
    let (code, _, err) = json(&["list", "--bogus"]);
    assert_eq!(
        (code, &err["error"]["kind"]),
        (Some(2), &"invalid_argument".into()),
        "{err}"
    );
    let (code, _, err) = json(&["pack", "-f", "p.yaml", "oci:///proc/self/lay:v1"]);
    assert_eq!(
        (code, &err["error"]["kind"]),
        (Some(1), &"io".into()),
        "{err}"
    );
    let (_, valid, _) = json(&["validate", "-f", "p.yaml"]);
    assert_eq!(valid["valid"], true);
    let config = d.join("config.json");
    let (code, out, _) = json(&[
        "--registry-config",
        config.to_str().expect("utf8"),
        "logout",
        "r.example.com",
    ]);
    assert_eq!(
        (code, &out["host"], &out["removed"]),
        (Some(0), &"r.example.com".into(), &false.into())
    );
    // Errors: a pack file's problem, a registry's answer.
    d.write(
        "bad.yaml",
        "items:\n  - from: file://a.txt\n    platform: linux-amd64\n",
    );
    let (code, _, err) = json(&["pack", "-f", "bad.yaml", "oci://out:v3"]);
    assert_eq!(code, Some(2));
    let e = &err["error"];
    assert_eq!(
        (&e["kind"], &e["line"], &e["field"]),
        (&"pack_file".into(), &3.into(), &"items[0].platform".into()),
        "{err}"
    );
    let srv = HttpServer::with_handler(|req| match req.path.as_str() {
        "/v2/" => Response::status(200),
        _ => Response::status(401)
            .header("Content-Type", "application/json")
            .body(r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#),
    });
    let (code, _, err) = json(&["--plain-http", "list", &format!("{}/r", srv.addr)]);
    assert_eq!(code, Some(1));
    let e = &err["error"];
    assert_eq!(
        (&e["kind"], &e["status"], &e["code"]),
        (
            &"authentication".into(),
            &401.into(),
            &"UNAUTHORIZED".into()
        ),
        "{err}"
    );
    for key in [
        "path",
        "reference",
        "digest",
        "problems",
        "line",
        "column",
        "field",
        "message",
    ] {
        assert!(e.get(key).is_some(), "{key} missing: {err}");
    }
}

/// Ctrl-C stops a pack cleanly: the large file being spooled into the layout is removed, no
/// tag is written, and the exit status is 130.
#[test]
fn ctrl_c_cancels_a_pack_and_leaves_no_temp_file() {
    let d = TestDir::new();
    let big = std::fs::File::create(d.join("big.bin")).expect("big");
    big.set_len(4 << 30).expect("sparse 4 GiB");
    d.write("p.yaml", "items:\n  - from: file://big.bin\n");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_oci-packer"))
        .current_dir(&d.path)
        .args(["-q", "pack", "-f", "p.yaml", "oci://lay:v1"])
        .env("XDG_CACHE_HOME", d.join("xdg-cache"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let spooled = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().starts_with(".oci-packer-")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
    };
    // Bounded: the pack takes far longer.
    wait_while_running(&mut child, "a spooled copy being written", || {
        spooled(&d.join("lay"))
    });
    let out = interrupt(child);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("cancelled"), "{}", stderr(&out));
    assert!(!spooled(&d.join("lay")), "a temp file was left behind");
    assert!(
        !d.join("lay/index.json").exists()
            || !std::fs::read_to_string(d.join("lay/index.json"))
                .expect("index")
                .contains("v1")
    );
}
