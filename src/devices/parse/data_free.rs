//! Parses the phone's `df /data`: the free space of the partition tasks write to.
//!
//! Two layouts exist. toybox (Android 6 and later) prints POSIX-like columns,
//! `Filesystem 1K-blocks Used Available Use% Mounted on`, with the mount point last;
//! the old toolbox prints `Filesystem Size Used Free Blksize` with the mount point first
//! and sizes such as `11.3G`. The free column is found by its title, so a column more or
//! less does not matter.
//!
//! Pure: no shell, no knowledge of the phone.

use super::{excerpt, ParseError};

const WHAT: &str = "df /data";

/// Free bytes on `/data`.
pub fn parse(text: &str) -> Result<u64, ParseError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let header = lines
        .next()
        .ok_or_else(|| ParseError::new(WHAT, "no output"))?;
    let titles: Vec<&str> = header.split_whitespace().collect();
    let (free_at, kib) = if let Some(i) = titles.iter().position(|t| *t == "Available") {
        let kib = titles.iter().any(|t| t.eq_ignore_ascii_case("1K-blocks"));
        (i, kib)
    } else if let Some(i) = titles.iter().position(|t| *t == "Free") {
        (i, false)
    } else {
        return Err(ParseError::new(
            WHAT,
            format!(
                "no Available or Free column in the header {}",
                excerpt(header)
            ),
        ));
    };
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_data = fields.last() == Some(&"/data") || fields.first() == Some(&"/data");
        if !is_data {
            continue;
        }
        let value = fields
            .get(free_at)
            .ok_or_else(|| ParseError::new(WHAT, format!("no free column in {}", excerpt(line))))?;
        return size(value, kib).ok_or_else(|| {
            ParseError::new(WHAT, format!("free {} is not a size", excerpt(value)))
        });
    }
    Err(ParseError::new(
        WHAT,
        format!("no line for /data in {}", excerpt(text)),
    ))
}

/// `1234` (KiB when `kib`, else bytes) or `11.3G`, `512M`, `100K` (powers of 1024).
fn size(value: &str, kib: bool) -> Option<u64> {
    let (number, scale) = match value.chars().last()? {
        'K' | 'k' => (&value[..value.len() - 1], 1u64 << 10),
        'M' => (&value[..value.len() - 1], 1 << 20),
        'G' => (&value[..value.len() - 1], 1 << 30),
        'T' => (&value[..value.len() - 1], 1 << 40),
        _ if kib => (value, 1 << 10),
        _ => (value, 1),
    };
    let n: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let bytes = n * scale as f64;
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toybox_columns() {
        let text = "Filesystem      1K-blocks    Used Available Use% Mounted on\n\
                    /dev/block/dm-8 115043800 8264588 106648140   8% /data\n";
        assert_eq!(parse(text).unwrap(), 106_648_140 * 1024);
    }

    #[test]
    fn old_toolbox_with_units() {
        let text = "Filesystem               Size     Used     Free   Blksize\n\
                    /data                   12.5G     1.2G    11.3G   4096\n";
        assert_eq!(parse(text).unwrap(), (11.3 * 1073741824.0) as u64);
        let text = "Filesystem Size Used Free Blksize\n/data 800M 780M 20.5M 4096\n";
        assert_eq!(parse(text).unwrap(), (20.5 * 1048576.0) as u64);
    }

    #[test]
    fn errors_name_what_is_missing() {
        assert!(parse("").unwrap_err().to_string().contains("no output"));
        let e = parse("Filesystem Size\n/data 1\n").unwrap_err();
        assert!(e.to_string().contains("Available or Free"), "{e}");
        let e =
            parse("Filesystem 1K-blocks Used Available Use% Mounted on\n/dev/x 1 1 1 1% /system\n")
                .unwrap_err();
        assert!(e.to_string().contains("no line for /data"), "{e}");
        let e = parse(
            "Filesystem 1K-blocks Used Available Use% Mounted on\n/dev/x 1 1 lots 1% /data\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a size"), "{e}");
    }

    #[test]
    fn hostile_inputs_give_a_value_or_an_error() {
        for text in crate::devices::parse::tests_support::hostile() {
            let _ = parse(&text);
        }
    }
}
