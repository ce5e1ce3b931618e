//! Pure parsers for what adb and the phones print: the device list, `getprop`,
//! `dumpsys battery`, `dumpsys thermalservice` (or the sysfs thermal zones),
//! `/proc/uptime`, the package versions (`packages`) and the free space of `/data`
//! (`data_free`); and `batch`, the one script a round runs on a phone and the split of
//! its output into those commands' outputs.
//!
//! Each parser is a function of text to a value or a [`ParseError`]; none of them does
//! I/O, logs, or knows which phone the text came from (the caller adds the serial when it
//! reports the error). Each parser's doc states the format it reads; the fixtures under
//! `tests/fixtures/adb/` are whole outputs in those formats.

use std::fmt;

pub mod batch;
pub mod battery;
pub mod data_free;
pub mod devices_l;
pub mod getprop;
pub mod packages;
pub mod thermal;
pub mod uptime;

/// Text that does not have the expected shape.
///
/// There is a single kind: callers only need to know that the output could not be read,
/// and the message says which output and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Which output was being read (`devices-l`, `getprop`, `dumpsys battery`...).
    pub what: &'static str,
    /// What was expected and the offending text.
    pub detail: String,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, detail: impl Into<String>) -> ParseError {
        ParseError {
            what,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.detail)
    }
}

impl std::error::Error for ParseError {}

/// Quotes a piece of offending text for an error message, cut short so that a megabyte
/// of garbage does not end up in one log line.
pub(crate) fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut out: String = text.chars().take(MAX_CHARS).collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    format!("{out:?}")
}

/// Hostile inputs that every parser's tests feed in: each must give a value or an
/// error, never a panic.
#[cfg(test)]
pub(crate) mod tests_support {
    /// The hand-written cases, then pseudo-random mixes of the characters the formats
    /// care about (a fixed seed, so a failure reproduces).
    pub(crate) fn hostile() -> Vec<String> {
        const PIECES: &[&str] = &[
            "[",
            "]",
            ": ",
            "]: [",
            "\n",
            "\r\n",
            "\t",
            "  ",
            " ",
            "=",
            ", ",
            "{",
            "}",
            "-",
            ".",
            "1000",
            "-99.9",
            "0",
            "é",
            "💥",
            "no permissions (",
            "; see [",
            "transport_id:",
            "device:",
            "product:",
            "model:",
            "level",
            "scale",
            "temperature",
            "mValue=",
            "mType=",
            "TYPE_BCL",
            "Temperature{",
            "Current Battery Service state:",
            "Current temperatures from HAL:",
            "(UPDATES STOPPED",
            "package ",
            "versionName=",
        ];
        let mut out: Vec<String> = HOSTILE.iter().map(|s| s.to_string()).collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2000 {
            let mut text = String::new();
            for _ in 0..(seed % 24) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push_str(PIECES[(seed % PIECES.len() as u64) as usize]);
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            out.push(text);
        }
        out
    }

    const HOSTILE: &[&str] = &[
        "",
        "\0\0\0",
        "\r\n\r\n",
        "[",
        "]",
        "[]: [",
        "[a]: [b",
        "[é]: [ü]\n[",
        "]]]: [[[",
        "no permissions (",
        "é no permissions (ü]",
        "x transport_id:",
        "x y transport_id:18446744073709551616",
        "Current Battery Service state:\n  level: \n  scale: 0",
        "Current Battery Service state:\n  level: 99999999999999999999",
        "Current temperatures from HAL:\n\tTemperature{",
        "Current temperatures from HAL:\n\tTemperature{mValue=, mType=, mName=}",
        "Current temperatures from HAL:\n\tTemperature{mValue=NaN, mType=TYPE_, mName=}",
        "\u{feff}\u{202e}💥 1 2 3",
        "-1 -1",
        "NaN inf",
        "1e309 0",
        ":::::",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_what_then_detail() {
        let e = ParseError::new("dumpsys battery", "no level line");
        assert_eq!(e.to_string(), "dumpsys battery: no level line");
    }

    #[test]
    fn excerpt_quotes_and_cuts_long_text() {
        assert_eq!(excerpt("a\tb"), "\"a\\tb\"");
        let long = "x".repeat(200);
        let e = excerpt(&long);
        assert!(e.len() < 100, "{e}");
        assert!(e.ends_with("…\""), "{e}");
    }
}
