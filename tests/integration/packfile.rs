//! SPEC §2.1: strict pack files, every problem at once with file, line, column and field.

use oci_packer::{PackInput, Problem};

use crate::util::*;

fn problems(yaml: &str) -> Vec<Problem> {
    let d = TestDir::new();
    let f = d.write("pack.yaml", yaml);
    oci_packer::validate(PackInput::File(f)).expect("readable")
}

fn has(ps: &[Problem], field: &str, line: usize, column: usize, text: &str) {
    assert!(
        ps.iter().any(|p| p.field == field
            && p.line == line
            && p.column == column
            && p.message.contains(text)),
        "no problem {field} at {line}:{column} containing {text:?} in {ps:#?}"
    );
}

#[test]
fn every_problem_is_reported_at_once_with_position_and_field() {
    let ps = problems(
        "type: application/vnd.example\n\
         bogus: 1\n\
         items:\n\
         \x20 - from: file://a.txt\n\
         \x20   platform: linux-amd64\n\
         \x20 - from: ftp://host/x\n\
         \x20   extra: y\n\
         \x20 - type: text/plain\n\
         \x20 - from: file://${OCI_PACKER_TEST_UNSET_VAR}/x\n\
         \x20 - from: \"\"\n\
         \x20 - from: dir://d/\n\
         \x20   archive: zip\n\
         \x20 - from: file://a.txt\n\
         \x20   digest: sha256:1234\n",
    );
    has(&ps, "bogus", 2, 1, "unknown key \"bogus\"");
    has(
        &ps,
        "items[0].platform",
        5,
        15,
        "\"linux-amd64\": expected os/arch",
    );
    has(&ps, "items[1].from", 6, 11, "unknown scheme \"ftp://\"");
    has(&ps, "items[1].extra", 7, 5, "unknown key \"extra\"");
    has(&ps, "items[2].from", 8, 5, "missing required key \"from\"");
    has(
        &ps,
        "items[3].from",
        9,
        11,
        "environment variable OCI_PACKER_TEST_UNSET_VAR is not set",
    );
    has(&ps, "items[4].from", 10, 11, "empty \"from\"");
    has(&ps, "items[5].archive", 12, 14, "unknown archive \"zip\"");
    has(&ps, "items[6].digest", 14, 13, "invalid digest");
    assert_eq!(ps.len(), 9, "{ps:#?}");
    assert!(ps
        .iter()
        .all(|p| p.file.as_ref().is_some_and(|f| f.ends_with("pack.yaml"))));
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let ps = problems("items:\n  - from: file://a\n    type: [unclosed\n");
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert!(
        ps[0].message.starts_with("YAML syntax error"),
        "{}",
        ps[0].message
    );
    assert!(ps[0].line >= 3, "{:?}", ps[0]);
    assert!(ps[0].to_string().contains("pack.yaml:"), "{}", ps[0]);
}

#[test]
fn structural_rules() {
    has(&problems(""), "", 0, 0, "the pack file is empty");
    has(
        &problems("type: a/b\n"),
        "items",
        1,
        1,
        "missing required key \"items\"",
    );
    has(&problems("items: []\n"), "items", 1, 8, "at least one item");
    has(
        &problems("items: file://x\n"),
        "items",
        1,
        8,
        "expected a list of items",
    );
    has(
        &problems("items:\n  - from: [a]\n"),
        "items[0].from",
        2,
        11,
        "expected a string",
    );
    has(
        &problems("items:\n  - from: file://a\n    type: nonsense\n"),
        "items[0].type",
        3,
        11,
        "invalid media type",
    );
    has(
        &problems("items:\n  - from: file://a\n    archive: tar\n"),
        "items[0].archive",
        3,
        14,
        "only to dir://",
    );
    has(
        &problems("items:\n  - from: dir://d\n    digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\n"),
        "items[0].digest",
        3,
        13,
        "add archive: to pin",
    );
    has(
        &problems("config:\n  from: dir://d\nitems:\n  - from: file://a\n"),
        "config.from",
        2,
        9,
        "single blob",
    );
    has(
        &problems("items:\n  - from: file://a\n    config: {from: file://c}\n"),
        "items[0].config",
        3,
        14,
        "only in index mode",
    );
    has(
        &problems("items:\n  - from: file://a\n    platform: linux\n"),
        "items[0].platform",
        3,
        15,
        "expected os/arch",
    );
    has(
        &problems(&format!(
            "items:\n  - from: oci://localhost:5000/app:v1\n    digest: sha256:{}\n",
            "0".repeat(64)
        )),
        "items[0].digest",
        3,
        13,
        "pin an image by its reference",
    );
    has(
        &problems("items:\n  - from: s3://bucket\n"),
        "items[0].from",
        2,
        11,
        "add the key after the bucket",
    );
    has(
        &problems("items:\n  - from: file://a\n    from: file://b\n"),
        "items[0].from",
        3,
        5,
        "duplicate key",
    );
}

#[test]
fn two_configs_in_one_platform_group_are_an_error() {
    let ps = problems(
        "items:\n\
         \x20 - from: file://a\n\
         \x20   platform: linux/amd64\n\
         \x20   config: {from: file://c1.json}\n\
         \x20 - from: file://b\n\
         \x20   platform: linux/x86_64\n\
         \x20   config: {from: file://c2.json}\n",
    );
    has(
        &ps,
        "items[1].config",
        7,
        14,
        "items[0] and items[1] land in one member manifest (linux/amd64)",
    );
}

#[test]
fn variables_defaults_and_dollar_escape() {
    let d = TestDir::new();
    let f = d.write(
        "pack.yaml",
        "type: ${OCI_PACKER_T:-application/vnd.default}\n\
         annotations: {price: \"$$5\", who: \"${OCI_PACKER_WHO}\"}\n\
         items:\n  - from: file://a.txt\n",
    );
    d.write("a.txt", "a");
    let o = run(
        &d.path,
        &["pack", "--dry-run", "-f", f.to_str().expect("utf8")],
        &[("OCI_PACKER_WHO", "me")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(m["artifactType"], "application/vnd.default");
    assert_eq!(m["annotations"]["price"], "$5");
    assert_eq!(m["annotations"]["who"], "me");
    let o = run(
        &d.path,
        &["pack", "--dry-run", "-f", "pack.yaml"],
        &[
            ("OCI_PACKER_WHO", "me"),
            ("OCI_PACKER_T", "application/vnd.set"),
        ],
    );
    let m: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(m["artifactType"], "application/vnd.set");
}

#[test]
fn a_dict_pack_is_read_with_the_same_rules() {
    let v = serde_json::json!({"items": [{"from": "file://a", "colour": "red"}], "extra": 1});
    let ps = oci_packer::validate(PackInput::Json {
        text: v.to_string(),
        base_dir: ".".into(),
    })
    .expect("ok");
    let fields: Vec<&str> = ps.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["extra", "items[0].colour"], "{ps:#?}");
    assert!(ps.iter().all(|p| p.line == 0 && p.file.is_none()));
}

#[test]
fn the_model_round_trips_through_yaml() {
    let d = TestDir::new();
    d.write("a.txt", "a");
    let pack = oci_packer::PackFile {
        artifact_type: Some("application/vnd.x".into()),
        items: vec![oci_packer::ItemSpec {
            from: "file://a.txt".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let text = serde_yaml_ng::to_string(&pack).expect("yaml");
    let ps = oci_packer::validate(PackInput::Yaml {
        text,
        base_dir: d.path.clone(),
    })
    .expect("ok");
    assert!(ps.is_empty(), "{ps:#?}");
    let input = PackInput::model(&pack, &d.path).expect("model");
    let out = d.join("layout");
    let packed = oci_packer::pack(
        input,
        &format!("oci://{}:v1", out.display()),
        &Default::default(),
    )
    .expect("pack");
    assert_eq!(
        packed
            .descriptor
            .artifact_type()
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("application/vnd.x")
    );
}

/// Peak RSS a hostile pack file may cost `validate` (KiB).
const PARSE_RSS_KIB: u64 = 256 << 10;

/// `validate -f pack.yaml` on `text`: exit code, what it printed (stdout and stderr), peak
/// RSS in KiB.
fn validate_measured(text: impl AsRef<[u8]>) -> (Option<i32>, String, u64) {
    let d = TestDir::new();
    d.write("pack.yaml", text.as_ref());
    d.write("a.txt", "a");
    let (o, rss) = run_measured(&d.path, &["validate", "-f", "pack.yaml"], &[]);
    (o.status.code(), stdout(&o) + &stderr(&o), rss)
}

/// A large valid pack file — 160,000 items, 7 MB, as many as fit the node budget — is
/// valid, read in the same bounded memory as a hostile one.
#[test]
fn a_pack_file_of_160_000_items_validates_in_bounded_memory() {
    let mut text = String::from("items:\n");
    for i in 0..160_000 {
        text += &format!("  - from: file://dir/file-number-{i:08}.txt\n");
    }
    let (code, out, rss) = validate_measured(text);
    assert_eq!(code, Some(0), "{out}");
    assert!(rss < PARSE_RSS_KIB, "{rss} KiB");
}

/// Nested aliases (10 per level, 9 levels: 533 bytes that expand to 10^9 nodes) are refused
/// at the alias that passes the node budget, in bounded memory; so is the same bomb in flow
/// style, and one hidden in an annotation map.
#[test]
fn alias_bombs_are_pack_file_problems_in_bounded_memory() {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..9 {
        let prev = format!("*a{}", level - 1);
        bomb += &format!("a{level}: &a{level} [{}]\n", vec![prev; 10].join(", "));
    }
    bomb += "items: *a8\n";
    assert!(bomb.len() < 600, "{}", bomb.len());
    let mut block = String::from("x0: &b0\n  k: v\n");
    for level in 1..9 {
        block += &format!("x{level}: &b{level}\n");
        for i in 0..10 {
            block += &format!("  k{i}: *b{}\n", level - 1);
        }
    }
    block += "items:\n  - from: file://a.txt\n    annotations: *b8\n";
    for (name, text) in [("flow", bomb), ("block", block)] {
        let (code, err, rss) = validate_measured(&text);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(
            err.contains("pack.yaml:") && err.contains("this alias expands the document past"),
            "{name}: {err}"
        );
        assert!(rss < PARSE_RSS_KIB, "{name}: peak RSS {rss} KiB");
    }
    // Aliases that stay small are fine.
    let (code, err, _) = validate_measured(
        "annotations: &common {team: a, tier: b}\nitems:\n  - from: file://a.txt\n    annotations: *common\n",
    );
    assert_eq!(code, Some(0), "{err}");
}

/// One depth limit for every form: 40,000 nested block sequences (`- - - …`), flow
/// sequences and flow mappings are refused with a position, never a stack overflow.
#[test]
fn deep_nesting_is_a_pack_file_problem_in_every_form() {
    let block = format!("items:\n{}x\n", "- ".repeat(40_000));
    let flow = format!("items: {}{}\n", "[".repeat(40_000), "]".repeat(40_000));
    let mapping = format!("items: {}{}\n", "{a: ".repeat(40_000), "}".repeat(40_000));
    let nested_block: String = (0..200)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect();
    for (name, text) in [
        ("block", block),
        ("flow", flow),
        ("mapping", mapping),
        ("nested mappings", nested_block),
    ] {
        let (code, err, rss) = validate_measured(&text);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(
            err.contains("pack.yaml:")
                && (err.contains("nesting deeper than") || err.contains("recursion limit")),
            "{name}: {err}"
        );
        assert!(rss < PARSE_RSS_KIB, "{name}: peak RSS {rss} KiB");
    }
}

/// 80,000 annotation keys validate (the duplicate-key check is linear); 80,000 duplicates
/// of one key and 20,000 items without `from` are found in linear time too (the first
/// 1,000 reported).
#[test]
fn large_pack_files_validate_in_linear_time() {
    let mut text = String::from("items:\n  - from: file://a.txt\n    annotations:\n");
    for i in 0..80_000 {
        text += &format!("      key{i}: v\n");
    }
    let (code, err, rss) = validate_measured(&text);
    assert_eq!(code, Some(0), "{err}");
    assert!(rss < PARSE_RSS_KIB, "peak RSS {rss} KiB");
    let mut dup = String::from("items:\n  - from: file://a.txt\n    annotations:\n");
    for _ in 0..80_000 {
        dup += "      same: v\n";
    }
    let (code, err, _) = validate_measured(&dup);
    assert_eq!(code, Some(2));
    assert_eq!(err.matches("duplicate key \"same\"").count(), 1000);
    assert!(
        err.contains("and 78999 more problem(s)"),
        "{}",
        &err[err.len() - 200..]
    );
    let mut nofrom = String::from("items:\n");
    for _ in 0..20_000 {
        nofrom += "  - type: text/plain\n";
    }
    let (code, err, _) = validate_measured(&nofrom);
    assert_eq!(code, Some(2));
    assert_eq!(err.matches("missing required key \"from\"").count(), 1000);
    assert!(err.contains("and 19000 more problem(s)"));
}

/// A UTF-8 byte-order mark is skipped; bytes that are not UTF-8 are a pack-file problem with
/// the line and column of the first bad byte (exit 2), not an I/O error.
#[test]
fn byte_order_marks_and_invalid_utf8() {
    let (code, err, _) = validate_measured("\u{feff}items:\n  - from: file://a.txt\n");
    assert_eq!(code, Some(0), "{err}");
    for (text, at) in [
        (
            &b"items:\n  - from: file://a\xff.txt\n"[..],
            "pack.yaml:2:19:",
        ),
        (&b"\xc3(items: []\n"[..], "pack.yaml:1:1:"),
        (&b"type: caf\xc3\xa9\xe9\n"[..], "pack.yaml:1:11:"),
    ] {
        let (code, err, _) = validate_measured(text);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(at) && err.contains("not valid UTF-8"), "{err}");
    }
}

/// A value that alone (or annotations that together) cannot fit in a 4 MiB manifest are
/// pack-file problems naming the field, found by `validate` before anything is read.
#[test]
fn values_that_can_never_fit_a_manifest_are_refused() {
    let big = "v".repeat(50 << 20);
    let text = format!("items:\n  - from: file://a.txt\n    annotations:\n      note: {big}\n");
    let (code, err, rss) = validate_measured(&text);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("items[0].annotations.note: this value is 52428800 bytes"),
        "{err}"
    );
    assert!(rss < PARSE_RSS_KIB, "peak RSS {rss} KiB");
    // 5,000 values of 1 KiB: each fits, together they cannot.
    let mut many = String::from("items:\n  - from: file://a.txt\n    annotations:\n");
    for i in 0..5_000 {
        many += &format!("      k{i}: {}\n", "x".repeat(1024));
    }
    let (code, err, _) = validate_measured(&many);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("items[0].annotations: the annotations of one manifest add up to"),
        "{err}"
    );
    let (code, err, _) = validate_measured(format!(
        "type: {}\nitems:\n  - from: file://a.txt\n",
        "t".repeat(5 << 20)
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("type: this value is"), "{err}");
}

/// Aliases of large scalars, and `${VAR}` expansions, are bounded by the bytes they copy,
/// not only by the nodes they make; a NUL byte or another control character is a problem at
/// its position (the parser would take a NUL for the end of the text and drop the rest).
#[test]
fn aliased_text_expansions_and_control_characters_are_bounded() {
    let big = "y".repeat(1_000_000);
    let aliased = format!(
        "items:\n  - from: file://a.txt\nx: &s {big}\nz: [{}]\n",
        vec!["*s"; 2000].join(",")
    );
    let typed = format!(
        "t: &t {big}\nitems:\n{}",
        "  - from: file://a.txt\n    type: *t\n".repeat(1000)
    );
    for (name, text) in [("list", aliased), ("types", typed)] {
        let (code, out, rss) = validate_measured(&text);
        assert_eq!(code, Some(2), "{name}: {out}");
        assert!(out.contains("aliases copy more than"), "{name}: {out}");
        assert!(rss < PARSE_RSS_KIB, "{name}: peak RSS {rss} KiB");
    }
    let d = TestDir::new();
    d.write("a.txt", "a");
    let mut text = String::from("items:\n  - from: file://a.txt\n    annotations:\n");
    for i in 0..5000 {
        text += &format!("      k{i}: ${{BIG}}\n");
    }
    d.write("pack.yaml", &text);
    let big_env = "v".repeat(120_000);
    let (o, rss) = run_measured(
        &d.path,
        &["validate", "-f", "pack.yaml"],
        &[("BIG", &big_env)],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).contains("environment variables expand to more than"));
    assert!(rss < PARSE_RSS_KIB, "peak RSS {rss} KiB");
    for (text, at) in [
        (&b"items:\n  - from: file://a.txt\n    annotations:\n      k: a\0b\n  - from: file://b.txt\n"[..], "pack.yaml:4:11:"),
        (&b"\0items: []\n"[..], "pack.yaml:1:1:"),
        (&b"type: a\x1bb\nitems: []\n"[..], "pack.yaml:1:8:"),
    ] {
        let (code, out, _) = validate_measured(text);
        assert_eq!(code, Some(2), "{out}");
        assert!(out.contains(at) && out.contains("control character"), "{out}");
    }
}

/// However many problems a pack file has, at most 1,000 are reported (and a line says how
/// many more), each message cut to a readable length: output and memory stay bounded.
#[test]
fn problems_are_capped_in_number_and_length() {
    let text = format!("items:\n{}", "  - 1\n".repeat(300_000));
    let (code, out, rss) = validate_measured(&text);
    assert_eq!(code, Some(2));
    assert!(out.lines().count() <= 1002, "{} lines", out.lines().count());
    assert!(
        out.contains("and 299000 more problem(s) not shown"),
        "{}",
        &out[out.len() - 300..]
    );
    assert!(rss < PARSE_RSS_KIB, "peak RSS {rss} KiB");
    let long = format!(
        "items:\n{}",
        format!(
            "  - from: file://a.txt\n    platform: {}\n",
            "x".repeat(3 << 20)
        )
        .repeat(5)
    );
    let (code, out, _) = validate_measured(&long);
    assert_eq!(code, Some(2));
    assert!(out.len() < 20_000, "{} bytes of output", out.len());
}

/// Anchors keep a copy of their tree, so nested anchors count against the same budget as
/// aliases; a huge key makes huge field paths, which problems cut; unset variables are
/// named a few at a time.
#[test]
fn anchors_field_paths_and_unset_variables_are_bounded() {
    let mut nested = String::from("x: ");
    for i in 0..20 {
        nested += &format!("&a{i} [");
    }
    nested += &"y".repeat(3 << 20);
    nested += &"]".repeat(20);
    nested += "\nitems:\n  - from: file://a.txt\n";
    let (code, out, rss) = validate_measured(&nested);
    assert_eq!(code, Some(2), "{}", &out[..out.len().min(500)]);
    assert!(
        out.contains("anchors and aliases copy more than"),
        "{}",
        &out[..out.len().min(500)]
    );
    assert!(rss < PARSE_RSS_KIB, "peak RSS {rss} KiB");
    let key = "k".repeat(1000);
    let mut text = format!("items:\n  - from: file://a.txt\n    annotations:\n      {key}: \"");
    text += &"${U}".repeat(1000);
    text += "\"\n";
    let (code, out, rss) = validate_measured(&text);
    assert_eq!(code, Some(2));
    assert_eq!(out.matches("environment variable U is not set").count(), 1);
    assert!(out.len() < 4096, "{} bytes of output", out.len());
    assert!(rss < PARSE_RSS_KIB, "peak RSS {rss} KiB");
    let many_unset = format!(
        "type: \"{}\"\nitems:\n  - from: file://a.txt\n",
        "${X}".repeat(1_000_000)
    );
    let (code, out, rss) = validate_measured(&many_unset);
    assert_eq!(code, Some(2));
    assert_eq!(
        out.matches("environment variable X is not set").count(),
        1,
        "{}",
        &out[..out.len().min(500)]
    );
    assert!(rss < PARSE_RSS_KIB, "peak RSS {rss} KiB");
}
