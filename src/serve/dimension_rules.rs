//! Swarming's dimension validation, applied before anything is sent to the bot.
//!
//! The server quarantines a bot whose dimensions break any rule, so this module drops
//! the offending items instead (one warning per dropped item, naming it) and keeps the
//! rest. The rules, from the Swarming server's validation:
//! - a key matches `^[a-zA-Z\-_.][0-9a-zA-Z\-_.]*$` and has at most 64 characters;
//! - a value is non-empty, at most 256 bytes (the Go server counts bytes), and has no
//!   surrounding whitespace; duplicates are removed (the first occurrence stays);
//! - `id` has exactly one value; `id` and `pool` values contain no `:`;
//! - a key left without values is dropped: an empty list is never sent.
//!
//! Pure: no I/O, no logging. The hook server logs the warnings.

use crate::state::snapshot::Dimensions;

pub const MAX_KEY_LEN: usize = 64;
pub const MAX_VALUE_LEN: usize = 256;

/// Dimensions that Swarming accepts, and what had to be dropped to get there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sanitized {
    pub dimensions: Dimensions,
    /// One line per dropped key or value, naming it and the rule it broke.
    pub warnings: Vec<String>,
}

fn key_is_valid(key: &str) -> bool {
    let mut chars = key.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let allowed_first = |c: char| c.is_ascii_alphabetic() || matches!(c, '-' | '_' | '.');
    allowed_first(first) && chars.all(|c| allowed_first(c) || c.is_ascii_digit())
}

/// Why one value breaks the rules for `key`, if it does.
fn value_problem(key: &str, value: &str) -> Option<&'static str> {
    if value.is_empty() {
        Some("empty value")
    } else if value.len() > MAX_VALUE_LEN {
        Some("value longer than 256 bytes")
    } else if value.trim() != value {
        Some("value with leading or trailing whitespace")
    } else if (key == "id" || key == "pool") && value.contains(':') {
        Some("':' is not allowed in id or pool")
    } else {
        None
    }
}

/// Shortens a value for a log line so that a huge value cannot flood the log.
fn shown(value: &str) -> String {
    const SHOWN: usize = 80;
    if value.len() <= SHOWN {
        return format!("{value:?}");
    }
    let mut end = SHOWN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &value[..end], value.len())
}

/// Applies Swarming's rules to `raw`, dropping what breaks them.
pub fn sanitize(raw: Dimensions) -> Sanitized {
    let mut dimensions = Dimensions::new();
    let mut warnings = Vec::new();
    for (key, values) in raw {
        if key.len() > MAX_KEY_LEN {
            warnings.push(format!(
                "dropped dimension key {}: longer than {MAX_KEY_LEN} characters",
                shown(&key)
            ));
            continue;
        }
        if !key_is_valid(&key) {
            warnings.push(format!(
                "dropped dimension key {}: must match ^[a-zA-Z\\-_.][0-9a-zA-Z\\-_.]*$",
                shown(&key)
            ));
            continue;
        }
        let mut kept: Vec<String> = Vec::with_capacity(values.len());
        for value in values {
            if let Some(problem) = value_problem(&key, &value) {
                warnings.push(format!(
                    "dropped value {} of dimension {key:?}: {problem}",
                    shown(&value)
                ));
            } else if kept.contains(&value) {
                warnings.push(format!(
                    "dropped duplicate value {} of dimension {key:?}",
                    shown(&value)
                ));
            } else {
                kept.push(value);
            }
        }
        if key == "id" && kept.len() > 1 {
            warnings.push(format!(
                "dropped dimension \"id\": it must have exactly one value, got {}",
                kept.len()
            ));
            continue;
        }
        if kept.is_empty() {
            warnings.push(format!(
                "dropped dimension {key:?}: no valid value left (an empty list is invalid)"
            ));
            continue;
        }
        dimensions.insert(key, kept);
    }
    Sanitized {
        dimensions,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(items: &[(&str, &[&str])]) -> Dimensions {
        items
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect()
    }

    #[test]
    fn valid_dimensions_pass_untouched() {
        let d = dims(&[
            ("id", &["skia-rpi2-rack4-shelf1-002"]),
            ("pool", &["Skia"]),
            ("device_type", &["sargo", "sargo.2"]),
            ("_private-key.x", &["a b"]),
        ]);
        let s = sanitize(d.clone());
        assert_eq!(s.dimensions, d);
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn keys_must_match_the_pattern() {
        let d = dims(&[
            ("9lives", &["x"]),
            ("has space", &["x"]),
            ("colon:key", &["x"]),
            ("", &["x"]),
            ("é", &["x"]),
            ("ok9", &["x"]),
        ]);
        let s = sanitize(d.clone());
        assert_eq!(s.dimensions, dims(&[("ok9", &["x"])]));
        assert_eq!(s.warnings.len(), 5);
        assert!(s.warnings.iter().any(|w| w.contains("\"9lives\"")));
    }

    #[test]
    fn keys_longer_than_64_are_dropped() {
        let k64 = "k".repeat(64);
        let k65 = "k".repeat(65);
        let s = sanitize(dims(&[(&k64, &["x"]), (&k65, &["x"])]));
        assert!(s.dimensions.contains_key(&k64));
        assert!(!s.dimensions.contains_key(&k65));
        assert!(s.warnings[0].contains("longer than 64"));
    }

    #[test]
    fn bad_values_are_dropped_and_named() {
        let v256 = "v".repeat(256);
        let v257 = "v".repeat(257);
        let s = sanitize(dims(&[(
            "os",
            &["", " Linux", "Linux ", &v256, &v257, "Debian"],
        )]));
        assert_eq!(s.dimensions["os"], vec![v256.clone(), "Debian".to_string()]);
        assert_eq!(s.warnings.len(), 4);
        assert!(s.warnings.iter().any(|w| w.contains("\" Linux\"")));
        assert!(s.warnings.iter().any(|w| w.contains("(257 bytes)")));
    }

    #[test]
    fn value_length_counts_bytes() {
        // 128 two-byte characters: 256 bytes, kept; one more is over.
        let ok = "é".repeat(128);
        let over = "é".repeat(129);
        let s = sanitize(dims(&[("a", &[&ok]), ("b", &[&over])]));
        assert!(s.dimensions.contains_key("a"));
        assert!(!s.dimensions.contains_key("b"));
    }

    #[test]
    fn duplicates_are_removed_keeping_the_key() {
        let s = sanitize(dims(&[("gpu", &["none", "none", "x", "none"])]));
        assert_eq!(s.dimensions["gpu"], vec!["none", "x"]);
        assert_eq!(s.warnings.len(), 2);
        assert!(s.warnings[0].contains("duplicate"));
    }

    #[test]
    fn empty_lists_are_never_kept() {
        let s = sanitize(dims(&[("gpu", &[]), ("os", &[""])]));
        assert!(s.dimensions.is_empty());
        assert_eq!(s.warnings.len(), 3);
        assert!(s.warnings.iter().any(|w| w.contains("\"gpu\"")));
    }

    #[test]
    fn id_needs_exactly_one_value() {
        let s = sanitize(dims(&[("id", &["a", "b"])]));
        assert!(s.dimensions.is_empty());
        assert!(s.warnings[0].contains("exactly one value"));
        let s = sanitize(dims(&[("id", &["a", "a"])]));
        assert_eq!(s.dimensions["id"], vec!["a"]);
    }

    #[test]
    fn id_and_pool_reject_colons_but_others_allow_them() {
        let s = sanitize(dims(&[
            ("id", &["host:1"]),
            ("pool", &["a:b", "Skia"]),
            ("os", &["Android:10"]),
        ]));
        assert!(!s.dimensions.contains_key("id"));
        assert_eq!(s.dimensions["pool"], vec!["Skia"]);
        assert_eq!(s.dimensions["os"], vec!["Android:10"]);
    }

    #[test]
    fn huge_values_are_shortened_in_warnings() {
        let huge = "x".repeat(10_000);
        let s = sanitize(dims(&[("k", &[&huge])]));
        assert!(s.warnings.iter().all(|w| w.len() < 300));
    }
}
