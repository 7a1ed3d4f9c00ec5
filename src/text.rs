//! Text from outside (registry error bodies, layout tag names, titles, media types, helper
//! output) made safe to print: control characters shown as escapes, so an ESC sequence
//! cannot clear or recolour the terminal and a CR or LF cannot fake a line of output.

use std::borrow::Cow;

/// True for what must not reach a terminal raw: C0 and C1 controls, DEL, the Unicode line
/// and paragraph separators, the bidirectional overrides, isolates and marks (which reorder
/// what a line appears to say), and the invisible formatting characters (zero-width space,
/// joiners, word joiner, byte-order mark: `missing\u{200b}` looks like `missing`).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// `s` with every unsafe character written as an escape (`\x1b`, `\n`, `\u{202e}`);
/// borrowed unchanged when there is none.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// JSON text (as serde_json writes it) with every unsafe character that it leaves raw —
/// DEL, C1 controls, the line separators, the bidirectional controls; all inside strings —
/// written as a `\uXXXX` escape: the same JSON value, safe to print.
pub fn json_printable(json: &str) -> Cow<'_, str> {
    let raw = |c: char| is_unsafe(c) && c as u32 >= 0x7f;
    if !json.chars().any(raw) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        match c {
            c if raw(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `s` as one word for a POSIX shell: unchanged when it has only safe characters, else in
/// single quotes (a `'` inside written `'\''`), so a printed command can be pasted as it is.
pub fn shell_word(s: &str) -> Cow<'_, str> {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b));
    if safe {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', "'\\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::{json_printable, printable, shell_word};

    #[test]
    fn json_keeps_its_value_and_loses_raw_controls() {
        let v = serde_json::json!({"a": "x\u{9b}y\u{202e}z\u{7f}", "b": "plain ✓\n"});
        let text = serde_json::to_string_pretty(&v).expect("json");
        let safe = json_printable(&text);
        assert!(
            !safe.chars().any(|c| super::is_unsafe(c) && c != '\n'),
            "{safe}"
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&safe).expect("valid"),
            v
        );
        assert_eq!(json_printable("{\"a\": 1}"), "{\"a\": 1}");
    }

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("plain text, ünïcode ✓"), "plain text, ünïcode ✓");
        assert_eq!(printable("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(printable("ok\r\nFAKE"), "ok\\r\\nFAKE");
        assert_eq!(printable("x\u{7f}\u{9b}y"), "x\\x7f\\x9by");
        assert_eq!(printable("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(printable("a\u{2028}b"), "a\\u{2028}b");
        assert_eq!(printable("missing\u{200b}"), "missing\\u{200b}");
        assert_eq!(
            printable("\u{feff}x\u{200f}\u{61c}"),
            "\\u{feff}x\\u{200f}\\u{61c}"
        );
    }

    #[test]
    fn shell_words_paste_as_one() {
        assert_eq!(shell_word("/mnt/app"), "/mnt/app");
        assert_eq!(shell_word("my dir"), "'my dir'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word("$(x)"), "'$(x)'");
        assert_eq!(shell_word(""), "''");
    }
}
