//! What the commands print: text for people, JSON (`--format json`) for programs.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use super::Format;
use crate::list::TreeNode;
use crate::mediatype::TITLE;
use crate::text::{json_printable, printable};
use crate::{Error, ErrorKind, Listing, Packed, Problem};

fn io(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // The reader went away (`| head`): nothing is wrong, and every operation has ended
        // by the time its result is printed, so there is nothing left to wait for.
        std::process::exit(0);
    }
    Error::new(ErrorKind::Io, format!("writing to stdout: {e}"))
}

/// Prints `v` as pretty JSON, with characters that could drive a terminal escaped.
fn print_json(out: &mut dyn Write, v: &serde_json::Value) -> Result<(), Error> {
    let text =
        serde_json::to_string_pretty(v).map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
    writeln!(out, "{}", json_printable(&text)).map_err(io)
}

/// The JSON of a pack or copy result (the same object the library's bindings return).
fn result_value(json: crate::Result<String>) -> Result<serde_json::Value, Error> {
    serde_json::from_str(&json?).map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))
}

/// Errors go to stderr; with `--format json` as one JSON object.
pub fn error(format: Format, e: &Error) {
    let mut err = std::io::stderr().lock();
    let _ = match format {
        // Anything that could drive the terminal or start a line is shown as an escape,
        // whatever part of the message it came from; a pack file's problems get a line each.
        Format::Text if e.problems().len() > 1 => {
            let _ = writeln!(
                err,
                "error: invalid pack file ({} problems):",
                e.problems().len()
            );
            e.problems()
                .iter()
                .try_for_each(|p| writeln!(err, "  {}", printable(&p.to_string())))
        }
        Format::Text => writeln!(err, "error: {}", printable(&e.to_string())),
        Format::Json => {
            // The fields of the Python exception: what the error is about, when known.
            let first = e.problems().first();
            let v = json!({"error": {
                "kind": e.kind().as_str(),
                "message": e.message(),
                "problems": e.problems(),
                "path": e.path(),
                "reference": e.reference(),
                "digest": e.digest(),
                "status": e.http_status(),
                "code": e.code(),
                "line": first.map(|p| p.line),
                "column": first.map(|p| p.column),
                "field": first.map(|p| p.field.as_str()),
            }});
            writeln!(err, "{}", json_printable(&v.to_string()))
        }
    };
}

pub fn packed(
    out: &mut dyn Write,
    format: Format,
    p: &Packed,
    dry_run: bool,
) -> Result<i32, Error> {
    if dry_run {
        // The bytes that would be written; characters that could drive the terminal (only
        // ever inside strings) shown as JSON escapes: the same JSON value.
        match std::str::from_utf8(&p.manifest) {
            Ok(text) => out.write_all(json_printable(text).as_bytes()),
            Err(_) => out.write_all(&p.manifest),
        }
        .map_err(io)?;
        writeln!(out).map_err(io)?;
        return Ok(0);
    }
    match format {
        Format::Text => {
            writeln!(out, "Pushed {}", printable(&p.reference)).map_err(io)?;
            writeln!(out, "Digest: {}", p.descriptor.digest()).map_err(io)?;
        }
        Format::Json => print_json(out, &result_value(p.to_json())?)?,
    }
    Ok(0)
}

pub fn validated(
    out: &mut dyn Write,
    format: Format,
    file: &Path,
    problems: &[Problem],
) -> Result<(), Error> {
    match format {
        Format::Text if problems.is_empty() => {
            writeln!(out, "{}: valid", printable(&file.display().to_string())).map_err(io)
        }
        Format::Text => {
            for p in problems {
                writeln!(out, "{}", printable(&p.to_string())).map_err(io)?;
            }
            writeln!(
                out,
                "{}: {} problem(s)",
                printable(&file.display().to_string()),
                problems.len()
            )
            .map_err(io)
        }
        Format::Json => print_json(
            out,
            &json!({"file": file, "valid": problems.is_empty(), "problems": problems}),
        ),
    }
}

/// Sizes for people: 1536 → "1.5 KiB".
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// One node of an artifact's tree: what a manifest says, so every field is escaped.
fn tree_line(n: &TreeNode) -> String {
    let d = &n.descriptor;
    let mut s = format!(
        "{} {} ({})",
        printable(d.media_type()),
        d.digest(),
        human(d.size())
    );
    if let Some(p) = d.platform() {
        s.push_str(&format!(" [{}]", printable(&p.to_string())));
    }
    if let Some(t) = d.artifact_type() {
        s.push_str(&format!(" type={}", printable(t)));
    }
    if let Some(t) = d.annotations().get(TITLE) {
        s.push_str(&format!(" {}", printable(t)));
    }
    s
}

fn print_tree(out: &mut dyn Write, n: &TreeNode, prefix: &str) -> Result<(), Error> {
    for (i, c) in n.children.iter().enumerate() {
        let last = i + 1 == n.children.len();
        writeln!(
            out,
            "{prefix}{}{}",
            if last { "└── " } else { "├── " },
            tree_line(c)
        )
        .map_err(io)?;
        print_tree(
            out,
            c,
            &format!("{prefix}{}", if last { "    " } else { "│   " }),
        )?;
    }
    Ok(())
}

/// Prints a listing; exit status 1 when an entry could not be read (each such entry is
/// listed with what is known, and its problem goes to stderr), like `ls` with an unreadable
/// file.
pub fn listing(out: &mut dyn Write, format: Format, l: &Listing) -> Result<i32, Error> {
    let problems: Vec<(&str, &str)> = match l {
        Listing::Layout { entries, .. } | Listing::Repository { entries, .. } => entries
            .iter()
            .filter_map(|e| Some((e.reference.as_str(), e.problem.as_deref()?)))
            .collect(),
        Listing::Artifact { .. } => Vec::new(),
    };
    let status = i32::from(!problems.is_empty());
    if format == Format::Json {
        print_json(out, &crate::json::to_value(l)?)?;
        return Ok(status);
    }
    let mut err = std::io::stderr().lock();
    for (reference, problem) in &problems {
        let name = if reference.is_empty() {
            "(untagged)"
        } else {
            reference
        };
        let _ = writeln!(err, "error: {}: {}", printable(name), printable(problem));
    }
    match l {
        Listing::Layout { entries, .. } | Listing::Repository { entries, .. } => {
            let rows: Vec<[String; 6]> = entries
                .iter()
                .map(|e| {
                    // Tag names, platforms and types come from the layout or registry.
                    [
                        printable(&e.reference).into_owned(),
                        e.kind.clone(),
                        e.digest.clone(),
                        if e.platforms.is_empty() {
                            "-".into()
                        } else {
                            printable(&e.platforms.join(",")).into_owned()
                        },
                        e.artifact_type
                            .as_deref()
                            .map_or_else(|| "-".into(), |t| printable(t).into_owned()),
                        match e.problem {
                            Some(_) => "?".into(),
                            None => human(e.size),
                        },
                    ]
                })
                .collect();
            let header =
                ["REF", "KIND", "DIGEST", "PLATFORM", "ARTIFACT-TYPE", "SIZE"].map(String::from);
            let mut widths = header.clone().map(|h| h.len());
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.chars().count());
                }
            }
            for r in std::iter::once(&header).chain(&rows) {
                let cells: Vec<String> = r
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                writeln!(out, "{}", cells.join("  ").trim_end()).map_err(io)?;
            }
        }
        Listing::Artifact { reference, tree } => {
            writeln!(out, "{}: {}", printable(reference), tree_line(tree)).map_err(io)?;
            print_tree(out, tree, "")?;
        }
    }
    Ok(status)
}

/// Prints what `verify` found: a line per problem and a summary, or the JSON object;
/// exit status 1 when anything is wrong.
pub fn verified(
    out: &mut dyn Write,
    format: Format,
    v: &crate::Verification,
) -> Result<i32, Error> {
    let status = i32::from(!v.is_ok());
    if format == Format::Json {
        print_json(out, &crate::json::to_value(v)?)?;
        return Ok(status);
    }
    for p in &v.problems {
        let mut at = vec![v.digest.as_str()];
        at.extend(p.path.iter().skip(1).map(String::as_str));
        let below = match p.path.is_empty() {
            true => "the root".to_string(),
            false => format!("below {}", at.join(" > ")),
        };
        writeln!(
            out,
            "{}: {} ({below}): {}",
            p.kind,
            p.digest,
            printable(&p.message)
        )
        .map_err(io)?;
    }
    let what = match v.problems.len() {
        0 => "every blob is what its descriptor says".to_string(),
        n => format!("{n} problem(s)"),
    };
    writeln!(
        out,
        "{}: {} blob(s), {} checked: {what}",
        printable(&v.reference),
        v.blobs,
        human(v.bytes)
    )
    .map_err(io)?;
    Ok(status)
}

/// Prints what `delete` or `gc` did (or, in a dry run, would do): a line per entry and
/// blob, then a summary; or the JSON object.
pub fn deleted(out: &mut dyn Write, format: Format, d: &crate::Deleted) -> Result<i32, Error> {
    if format == Format::Json {
        print_json(out, &crate::json::to_value(d)?)?;
        return Ok(0);
    }
    let (untag, remove) = match d.dry_run {
        true => ("would untag", "would remove"),
        false => ("untagged", "removed"),
    };
    for name in &d.untagged {
        writeln!(out, "{untag} {}", printable(name)).map_err(io)?;
    }
    if let Some(m) = &d.manifest {
        let what = if d.dry_run { "would delete" } else { "deleted" };
        writeln!(out, "{what} manifest {m} of {}", printable(&d.reference)).map_err(io)?;
    }
    for b in &d.removed {
        writeln!(out, "{remove} {} ({})", b.digest, human(b.size)).map_err(io)?;
    }
    for u in &d.unpacked {
        writeln!(out, "{remove} unpacked layer {u}").map_err(io)?;
    }
    if d.manifest.is_none() {
        writeln!(
            out,
            "{}: {remove} {} blob(s), {}{}",
            printable(&d.reference),
            d.removed.len(),
            human(d.bytes),
            match d.temp_files {
                0 => String::new(),
                n => format!(", and {n} old temp file(s)"),
            }
        )
        .map_err(io)?;
    }
    Ok(0)
}

pub fn copied(out: &mut dyn Write, format: Format, c: &crate::Copied) -> Result<i32, Error> {
    match format {
        Format::Text => {
            writeln!(out, "Copied {}", printable(&c.reference)).map_err(io)?;
            writeln!(out, "Digest: {}", c.descriptor.digest()).map_err(io)?;
        }
        Format::Json => print_json(out, &result_value(c.to_json())?)?,
    }
    Ok(0)
}

/// A one-line result: `text` as text, `value` as JSON.
pub fn message(
    out: &mut dyn Write,
    format: Format,
    text: &str,
    value: serde_json::Value,
) -> Result<i32, Error> {
    match format {
        Format::Text => writeln!(out, "{}", printable(text)).map_err(io)?,
        Format::Json => print_json(out, &value)?,
    }
    Ok(0)
}

pub fn extracted(out: &mut dyn Write, format: Format, x: &crate::Extracted) -> Result<i32, Error> {
    if format == Format::Json {
        print_json(out, &crate::json::to_value(x)?)?;
        return Ok(0);
    }
    writeln!(
        out,
        "Extracted {} ({}) into {}: {} file(s), {}",
        printable(&x.reference),
        x.digest,
        printable(&x.out_dir.display().to_string()),
        x.files,
        human(x.bytes)
    )
    .map_err(io)?;
    let pack = printable(&x.pack_file.display().to_string()).into_owned();
    match x.source_date_epoch {
        Some(e) => writeln!(
            out,
            "Pack it again: SOURCE_DATE_EPOCH={e} oci-packer pack -f {pack} TARGET"
        ),
        None => writeln!(out, "Pack it again: oci-packer pack -f {pack} TARGET"),
    }
    .map_err(io)?;
    for n in &x.notes {
        writeln!(out, "Note: {}", printable(n)).map_err(io)?;
    }
    Ok(0)
}

pub fn mounted(out: &mut dyn Write, format: Format, m: &crate::Mounted) -> Result<i32, Error> {
    if format == Format::Json {
        print_json(out, &crate::json::to_value(m)?)?;
        return Ok(0);
    }
    let dir = printable(&m.dir.display().to_string()).into_owned();
    if !m.units.is_empty() {
        for u in &m.units {
            writeln!(out, "wrote {}", printable(&u.display().to_string())).map_err(io)?;
        }
        return Ok(0);
    }
    writeln!(
        out,
        "Mounted {} ({}, {} layer(s)) at {dir}",
        printable(&m.reference),
        m.digest,
        m.layers.len()
    )
    .map_err(io)?;
    for p in m.mounts.iter().skip(1) {
        writeln!(out, "  and {}", printable(&p.display().to_string())).map_err(io)?;
    }
    let word = crate::text::shell_word(&m.dir.to_string_lossy()).into_owned();
    writeln!(out, "Unmount with: oci-packer umount {}", printable(&word)).map_err(io)?;
    Ok(0)
}

pub fn unmounted(out: &mut dyn Write, format: Format, u: &crate::Unmounted) -> Result<i32, Error> {
    if format == Format::Json {
        print_json(out, &crate::json::to_value(u)?)?;
        return Ok(0);
    }
    if u.unmounted.is_empty() {
        writeln!(
            out,
            "nothing mounted at or below {}",
            printable(&u.dir.display().to_string())
        )
        .map_err(io)?;
    }
    for p in &u.unmounted {
        writeln!(out, "unmounted {}", printable(&p.display().to_string())).map_err(io)?;
    }
    Ok(0)
}
