//! Parses `getprop` output: `[key]: [value]` per line, into a sorted map.
//!
//! Values can span lines (a boot-reason history, for instance), so this is not a
//! line-by-line regex: a line that starts a property but does not end in `]` continues on
//! the following lines, up to the first line that does end in `]`. (A value with an
//! inner line ending in `]` is therefore cut there, and the rest is an error: getprop's
//! format is ambiguous, and known multi-line values do not do that.) CRLF line ends
//! (Android 6's PTY) become `\n` first. Outside a value, a line that does not start with
//! `[` is an error: the text was not getprop output (or the shell merged an error
//! message into it), and a map with silently missing keys would be worse than a failed
//! round.
//!
//! Pure: no shell, no knowledge of the phone.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::{excerpt, ParseError};

const WHAT: &str = "getprop";

/// Reads the properties whose key `keep` accepts: a phone prints hundreds and a round
/// uses a few, so only those are copied out (every line is still checked). Empty text
/// gives an empty map; a later duplicate key wins.
pub fn parse(
    text: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, String>, ParseError> {
    let text = if text.contains('\r') {
        Cow::Owned(text.replace("\r\n", "\n"))
    } else {
        Cow::Borrowed(text)
    };
    let mut props = BTreeMap::new();
    let mut lines = text.split('\n');
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| ParseError::new(WHAT, format!("{why} in line {}", excerpt(line)));
        let (key, first) = split_property(
            line.strip_prefix('[')
                .ok_or_else(|| bad("expected `[key]: [value]`"))?,
        )
        .ok_or_else(|| bad("no `]: [` after the key"))?;
        let kept = keep(key);
        let mut value = String::new();
        let mut part = first;
        loop {
            if kept {
                value.push_str(part);
            }
            if part.ends_with(']') {
                break;
            }
            part = lines.next().ok_or_else(|| bad("unterminated value"))?;
            if kept {
                value.push('\n');
            }
        }
        if kept {
            value.pop();
            props.insert(key.to_string(), value);
        }
    }
    Ok(props)
}

/// `key]: [value...` at its first `]: [`; found by its `]`, which is quicker than a
/// substring search set up anew for each of hundreds of lines.
fn split_property(line: &str) -> Option<(&str, &str)> {
    let mut from = 0;
    while let Some(at) = line[from..].find(']').map(|i| from + i) {
        if line[at..].starts_with("]: [") {
            return Some((&line[..at], &line[at + 4..]));
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Result<BTreeMap<String, String>, ParseError> {
        parse(text, |_| true)
    }

    #[test]
    fn simple_lines() {
        let p = all("[ro.build.id]: [UQ1A.240205.004]\n[sys.boot_completed]: [1]\n").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p["ro.build.id"], "UQ1A.240205.004");
        assert_eq!(p["sys.boot_completed"], "1");
    }

    #[test]
    fn empty_value() {
        let p = all("[ro.boot.serialno]: []\n[x]: [y]").unwrap();
        assert_eq!(p["ro.boot.serialno"], "");
        assert_eq!(p["x"], "y");
    }

    #[test]
    fn empty_text_is_an_empty_map() {
        assert!(all("").unwrap().is_empty());
        assert!(all(" \n\n").unwrap().is_empty());
    }

    #[test]
    fn value_spanning_lines() {
        let text = "[a]: [1]\n[persist.sys.boot.reason.history]: [reboot,shell,1700000000\nreboot,ota,1690000000\n]\n[z]: [2]\n";
        let p = all(text).unwrap();
        assert_eq!(
            p["persist.sys.boot.reason.history"],
            "reboot,shell,1700000000\nreboot,ota,1690000000\n"
        );
        assert_eq!(p["a"], "1");
        assert_eq!(p["z"], "2");
    }

    #[test]
    fn inner_line_ending_in_a_bracket_ends_the_value() {
        let e = all("[k]: [first]\nsecond]\n[n]: [v]").unwrap_err();
        assert!(e.detail.contains("\"second]\""), "{e}");
    }

    #[test]
    fn value_with_blank_lines_inside() {
        let p = all("[k]: [a\n\nb]\n[n]: [v]").unwrap();
        assert_eq!(p["k"], "a\n\nb");
        assert_eq!(p["n"], "v");
    }

    #[test]
    fn value_with_brackets_inside_one_line() {
        let p = all("[k]: [a [b] c]\n").unwrap();
        assert_eq!(p["k"], "a [b] c");
    }

    #[test]
    fn crlf_output_from_android_6() {
        let p = all(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/adb/getprop_android6.txt"
        )))
        .unwrap();
        assert_eq!(p["ro.build.version.release"], "6.0.1");
        assert_eq!(p["ro.build.id"], "MMB29K");
        assert!(p.values().all(|v| !v.contains('\r')), "{p:?}");
    }

    #[test]
    fn modern_phone_fixture() {
        let p = all(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/adb/getprop_pixel_android14.txt"
        )))
        .unwrap();
        assert_eq!(p["ro.product.device"], "husky");
        assert_eq!(p["ro.build.version.release"], "14");
        assert!(p["persist.sys.boot.reason.history"].contains('\n'));
        assert_eq!(p["sys.boot_completed"], "1");
    }

    #[test]
    fn a_line_that_is_not_a_property_is_an_error_naming_it() {
        let e = all("[a]: [1]\nWARNING: linker: something\n[b]: [2]").unwrap_err();
        assert_eq!(e.what, "getprop");
        assert!(e.detail.contains("WARNING: linker"), "{e}");
    }

    #[test]
    fn only_the_kept_keys_are_read_and_every_line_is_still_checked() {
        let text = "[a]: [1]\n[history]: [x\ny]\n[b]: [2 ]: [3]\n";
        let p = parse(text, |k| k != "a" && k != "history").unwrap();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p["b"], "2 ]: [3");
        let e = parse("[a]: [1]\n[skipped]: [open\n", |k| k == "a").unwrap_err();
        assert!(e.detail.contains("unterminated"), "{e}");
        let e = parse("[a]: [1]\nnot a property\n", |k| k == "a").unwrap_err();
        assert!(e.detail.contains("not a property"), "{e}");
    }

    #[test]
    fn unterminated_value_is_an_error() {
        let e = all("[a]: [1").unwrap_err();
        assert!(e.detail.contains("unterminated"), "{e}");
    }

    #[test]
    fn key_without_separator_is_an_error() {
        let e = all("[a] = [1]\n").unwrap_err();
        assert!(e.detail.contains("no `]: [`"), "{e}");
    }

    #[test]
    fn garbage_never_panics() {
        for text in &crate::devices::parse::tests_support::hostile() {
            let _ = all(text);
        }
    }
}
