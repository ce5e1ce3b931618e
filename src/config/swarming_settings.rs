//! The bot settings that `/get_settings` hands to the bot: defaults fit for a Pi's SD
//! card, with the `--settings` file deep-merged over them.
//!
//! The bot deep-merges what `get_settings` returns over its own defaults and
//! quarantines itself when a partition has less free space than
//! `max(total * min_percent, min(size, total * max_percent))`. Its own defaults
//! (`bot`: 4 GiB, 15 %, 7 %) ask for about 2.2 GiB free on a 16 GB card (14.8 GiB
//! usable), which a card that also holds the OS and the container images often lacks.
//! Ours, for a 16 GB card:
//! - `free_partition.bot`: `size` 512 MiB, `max_percent` 5, `min_percent` 2: keep
//!   512 MiB free (5 % would be 0.74 GiB, 2 % is 0.3 GiB); `wiggle` 100 MiB of slack
//!   when the isolated cache is trimmed, so log growth while idle does not cross it.
//! - `free_partition.root`: `size` 256 MiB, `max_percent` 3, `min_percent` 1: only
//!   used when the bot directory is on its own partition; root then keeps 256 MiB.
//! - `caches.isolated`: at most 2 GiB and 10240 items (the bot's 50 GiB default is
//!   three SD cards); it is trimmed further whenever `free_partition` demands it.
//!
//! A 0 disables a check, as for the bot. The file is read and validated once, at
//! start-up: unknown keys are refused (a typo such as `free_partitions` would
//! otherwise be silently ignored and the bot would quarantine itself), and so are
//! negative numbers and percentages over 100. Only [`load`] does I/O.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;

/// The defaults described in the module doc.
pub fn defaults() -> Value {
    json!({
        "free_partition": {
            "root": {"size": 256 * MIB, "max_percent": 3.0, "min_percent": 1.0},
            "bot": {
                "size": 512 * MIB,
                "max_percent": 5.0,
                "min_percent": 2.0,
                "wiggle": 100 * MIB,
            },
        },
        "caches": {
            "isolated": {"size": 2048 * MIB, "items": 10240},
        },
    })
}

/// Merges `overlay` into `base`: objects key by key, anything else replaced whole.
pub fn deep_merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// What a leaf of the settings must hold.
#[derive(Clone, Copy)]
enum Leaf {
    /// A whole number of bytes or items, 0 or more.
    Count,
    /// A percentage from 0 to 100.
    Percent,
}

/// The settings the bot understands: every other key is refused.
fn schema(path: &[&str]) -> Option<Leaf> {
    match path {
        ["free_partition", "root" | "bot", "size" | "wiggle"] => Some(Leaf::Count),
        ["free_partition", "root" | "bot", "max_percent" | "min_percent"] => Some(Leaf::Percent),
        ["caches", "isolated", "size" | "items"] => Some(Leaf::Count),
        _ => None,
    }
}

/// Whether `path` names an object in the schema (a prefix of some leaf).
fn is_section(path: &[&str]) -> bool {
    matches!(
        path,
        [] | ["free_partition"]
            | ["free_partition", "root" | "bot"]
            | ["caches"]
            | ["caches", "isolated"]
    )
}

/// Checks `value` (at `path`) against the schema; the error names the dotted key.
fn validate_at(path: &mut Vec<String>, value: &Value) -> Result<(), String> {
    let keys: Vec<&str> = path.iter().map(String::as_str).collect();
    let dotted = || {
        if keys.is_empty() {
            "the top level".to_string()
        } else {
            keys.join(".")
        }
    };
    if is_section(&keys) {
        let Value::Object(map) = value else {
            return Err(format!("{}: expected an object", dotted()));
        };
        for (k, v) in map {
            path.push(k.clone());
            let result = validate_at(path, v);
            path.pop();
            result?;
        }
        return Ok(());
    }
    match schema(&keys) {
        None => Err(format!(
            "unknown setting {:?} (known: free_partition.{{root,bot}}.{{size,max_percent,min_percent,wiggle}}, caches.isolated.{{size,items}})",
            keys.join(".")
        )),
        Some(Leaf::Count) => match value.as_u64() {
            Some(_) => Ok(()),
            None => Err(format!(
                "{}: expected a whole number 0 or more, got {value}",
                dotted()
            )),
        },
        Some(Leaf::Percent) => match value.as_f64() {
            Some(p) if (0.0..=100.0).contains(&p) => Ok(()),
            _ => Err(format!(
                "{}: expected a percentage from 0 to 100, got {value}",
                dotted()
            )),
        },
    }
}

/// The defaults with the text of a `--settings` file merged over them, validated.
pub fn merged(text: &str) -> Result<Value, String> {
    let overlay: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    if !overlay.is_object() {
        return Err("expected a JSON object at the top level".to_string());
    }
    validate_at(&mut Vec::new(), &overlay)?;
    let mut settings = defaults();
    deep_merge(&mut settings, &overlay);
    Ok(settings)
}

/// A `--settings` file that cannot be used: which file and why.
#[derive(Debug)]
pub struct SettingsError {
    pub path: PathBuf,
    pub kind: SettingsErrorKind,
}

#[derive(Debug)]
pub enum SettingsErrorKind {
    Read(std::io::Error),
    Invalid(String),
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SettingsErrorKind::Read(e) => {
                write!(f, "--settings {}: cannot read: {e}", self.path.display())
            }
            SettingsErrorKind::Invalid(why) => {
                write!(f, "--settings {}: {why}", self.path.display())
            }
        }
    }
}

impl std::error::Error for SettingsError {}

/// The settings to serve: the defaults, or the defaults merged with the file at `path`.
pub fn load(path: Option<&Path>) -> Result<Value, SettingsError> {
    let Some(path) = path else {
        return Ok(defaults());
    };
    let error = |kind| SettingsError {
        path: path.to_path_buf(),
        kind,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(SettingsErrorKind::Read(e)))?;
    merged(&text).map_err(|why| error(SettingsErrorKind::Invalid(why)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_fit_a_16_gb_card() {
        let d = defaults();
        validate_at(&mut Vec::new(), &d).unwrap();
        // The bot's formula on a 16 GB card (14.8 GiB usable) must ask for at most
        // 1 GiB free.
        let total = 14.8 * 1024.0 * 1024.0 * 1024.0;
        let bot = &d["free_partition"]["bot"];
        let size = bot["size"].as_f64().unwrap();
        let max_p = bot["max_percent"].as_f64().unwrap() / 100.0;
        let min_p = bot["min_percent"].as_f64().unwrap() / 100.0;
        let required = (total * min_p).max(size.min(total * max_p));
        assert!(required <= 1024.0 * 1024.0 * 1024.0, "{required}");
    }

    #[test]
    fn merge_overrides_leaves_and_keeps_siblings() {
        let s = merged(
            r#"{"free_partition": {"bot": {"size": 0}}, "caches": {"isolated": {"items": 5}}}"#,
        )
        .unwrap();
        assert_eq!(s["free_partition"]["bot"]["size"], 0);
        assert_eq!(s["free_partition"]["bot"]["max_percent"], 5.0);
        assert_eq!(
            s["free_partition"]["root"],
            defaults()["free_partition"]["root"]
        );
        assert_eq!(s["caches"]["isolated"]["items"], 5);
        assert_eq!(s["caches"]["isolated"]["size"], 2048 * MIB);
    }

    #[test]
    fn empty_object_gives_the_defaults() {
        assert_eq!(merged("{}").unwrap(), defaults());
    }

    #[test]
    fn deep_merge_replaces_non_objects_whole() {
        let mut base = json!({"a": {"b": 1, "c": [1, 2]}});
        deep_merge(&mut base, &json!({"a": {"c": [3]}, "d": true}));
        assert_eq!(base, json!({"a": {"b": 1, "c": [3]}, "d": true}));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = merged(r#"{"free_partitions": {}}"#).unwrap_err();
        assert!(e.contains("\"free_partitions\""), "{e}");
        let e = merged(r#"{"free_partition": {"bot": {"sise": 1}}}"#).unwrap_err();
        assert!(e.contains("free_partition.bot.sise"), "{e}");
    }

    #[test]
    fn wrong_types_and_ranges_are_refused() {
        for (text, needle) in [
            (r#"[]"#, "top level"),
            (r#"nope"#, "not valid JSON"),
            (r#"{"caches": 3}"#, "caches: expected an object"),
            (
                r#"{"caches": {"isolated": {"size": -1}}}"#,
                "caches.isolated.size",
            ),
            (r#"{"caches": {"isolated": {"size": 1.5}}}"#, "whole number"),
            (
                r#"{"free_partition": {"root": {"max_percent": 101}}}"#,
                "from 0 to 100",
            ),
            (
                r#"{"free_partition": {"root": {"min_percent": "5"}}}"#,
                "percentage",
            ),
        ] {
            let e = merged(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("tmm-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("settings.json");
        std::fs::write(&path, "{\"caches\": 1}").unwrap();
        let e = load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        let missing = dir.join("missing.json");
        let e = load(Some(&missing)).unwrap_err();
        assert!(matches!(e.kind, SettingsErrorKind::Read(_)));
        assert_eq!(load(None).unwrap(), defaults());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
