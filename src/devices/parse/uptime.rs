//! Parses `/proc/uptime`: `<seconds since boot> <idle seconds>`; only the first field
//! is used. Pure.

use super::{excerpt, ParseError};

const WHAT: &str = "/proc/uptime";

/// Seconds since the phone booted: finite and not negative.
pub fn parse(text: &str) -> Result<f64, ParseError> {
    let first = text
        .split_whitespace()
        .next()
        .ok_or_else(|| ParseError::new(WHAT, "empty output"))?;
    first
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| {
            ParseError::new(
                WHAT,
                format!("{} is not a number of seconds", excerpt(first)),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_fields() {
        assert_eq!(parse("12345.67 45678.90\n").unwrap(), 12345.67);
    }

    #[test]
    fn surrounding_whitespace_and_crlf() {
        assert_eq!(parse("  350.10 1200.00\r\n").unwrap(), 350.1);
    }

    #[test]
    fn single_field() {
        assert_eq!(parse("7.5").unwrap(), 7.5);
    }

    #[test]
    fn empty_is_an_error() {
        assert_eq!(
            parse(" \n").unwrap_err().to_string(),
            "/proc/uptime: empty output"
        );
    }

    #[test]
    fn not_a_number_is_an_error() {
        let e = parse("cat: /proc/uptime: Permission denied").unwrap_err();
        assert_eq!(e.detail, "\"cat:\" is not a number of seconds");
    }

    #[test]
    fn negative_and_infinite_are_errors() {
        assert!(parse("-1 0").is_err());
        assert!(parse("inf 0").is_err());
        assert!(parse("NaN 0").is_err());
    }

    #[test]
    fn garbage_never_panics() {
        for text in &crate::devices::parse::tests_support::hostile() {
            let _ = parse(text);
        }
    }
}
