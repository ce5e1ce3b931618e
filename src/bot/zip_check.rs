//! Whether a bot zip is usable, checked with the zip crate: the central directory
//! reads, every entry inflates to its recorded CRC, no entry's name is absolute or has a
//! `..` component (the bot unpacks parts of its zip; such a name would write outside the
//! bot directory), and `__main__.py` and `config/config.json` are there. Pure but for
//! the reading of the file; `bot_zip` decides what to do with a bad one.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

/// Entries without which the bot cannot start.
const REQUIRED: &[&str] = &["__main__.py", "config/config.json"];
/// What is wrong with a zip. The words are for the log; callers branch on the variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZipProblem {
    /// No central directory, or not a zip at all (an HTML page, a truncated file).
    Unreadable(String),
    /// An entry does not inflate to its recorded size and CRC.
    BadEntry {
        name: String,
        reason: String,
    },
    Missing(&'static str),
    /// An absolute name or one with a `..` component.
    UnsafeName(String),
}

impl fmt::Display for ZipProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZipProblem::Unreadable(r) => write!(f, "not a readable zip: {r}"),
            ZipProblem::BadEntry { name, reason } => {
                write!(f, "entry {name:?} is corrupt: {reason}")
            }
            ZipProblem::Missing(name) => write!(f, "no {name} in the zip"),
            ZipProblem::UnsafeName(name) => write!(
                f,
                "entry {name:?} would unpack outside the bot directory (an absolute name or a `..` component)"
            ),
        }
    }
}

/// Whether an entry named `name` unpacks inside the directory it is unpacked in.
fn enclosed(name: &str) -> bool {
    Path::new(name).components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    })
}

/// Checks a whole zip; returns its number of entries.
pub fn check_zip<R: Read + Seek>(reader: R) -> Result<usize, ZipProblem> {
    let mut archive =
        zip::ZipArchive::new(reader).map_err(|e| ZipProblem::Unreadable(e.to_string()))?;
    for name in REQUIRED {
        if archive.index_for_name(name).is_none() {
            return Err(ZipProblem::Missing(name));
        }
    }
    let mut sink = [0u8; 64 * 1024];
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| ZipProblem::BadEntry {
            name: format!("#{i}"),
            reason: e.to_string(),
        })?;
        let name = match entry.name() {
            Ok(n) => n.into_owned(),
            Err(_) => String::from_utf8_lossy(entry.name_raw()).into_owned(),
        };
        if !enclosed(&name) {
            return Err(ZipProblem::UnsafeName(name));
        }
        // Reading to the end is what makes the zip crate compare the CRC.
        loop {
            match entry.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    return Err(ZipProblem::BadEntry {
                        name,
                        reason: e.to_string(),
                    })
                }
            }
        }
    }
    Ok(archive.len())
}

/// Checks the zip file at `path`.
pub fn check_zip_file(path: &Path) -> Result<usize, ZipFileError> {
    let file = File::open(path).map_err(|e| ZipFileError::Io(path.to_path_buf(), e.kind()))?;
    check_zip(io::BufReader::new(file)).map_err(ZipFileError::Bad)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZipFileError {
    Io(PathBuf, io::ErrorKind),
    Bad(ZipProblem),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Cursor, Write};
    use zip::write::SimpleFileOptions;

    pub(crate) fn build(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, data) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn good() -> Vec<u8> {
        build(&[
            ("__main__.py", b"print('bot')\n"),
            ("config/config.json", br#"{"server": "http://x"}"#),
            ("bot_code/bot_main.py", b"MARKER-0123456789"),
        ])
    }

    #[test]
    fn a_good_zip_passes() {
        assert_eq!(check_zip(Cursor::new(good())), Ok(3));
    }

    #[test]
    fn a_truncated_zip_is_unreadable() {
        let z = good();
        let cut = &z[..z.len() / 2];
        assert!(matches!(
            check_zip(Cursor::new(cut)),
            Err(ZipProblem::Unreadable(_))
        ));
    }

    #[test]
    fn an_html_page_is_unreadable() {
        let page = b"<html><body>502 Bad Gateway</body></html>".to_vec();
        assert!(matches!(
            check_zip(Cursor::new(page)),
            Err(ZipProblem::Unreadable(_))
        ));
        assert!(matches!(
            check_zip(Cursor::new(Vec::new())),
            Err(ZipProblem::Unreadable(_))
        ));
    }

    #[test]
    fn a_flipped_byte_fails_the_crc() {
        let mut z = good();
        let at = z.windows(6).position(|w| w == b"MARKER").unwrap();
        z[at] = b'X';
        match check_zip(Cursor::new(z)) {
            Err(ZipProblem::BadEntry { name, .. }) => assert_eq!(name, "bot_code/bot_main.py"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn required_entries_are_checked() {
        let z = build(&[("__main__.py", b"x")]);
        assert_eq!(
            check_zip(Cursor::new(z)),
            Err(ZipProblem::Missing("config/config.json"))
        );
        let z = build(&[("config/config.json", b"{}")]);
        assert_eq!(
            check_zip(Cursor::new(z)),
            Err(ZipProblem::Missing("__main__.py"))
        );
    }

    #[test]
    fn names_that_unpack_outside_are_refused() {
        for name in ["../../x", "/etc/x", "bot_code/../../x"] {
            let z = build(&[
                ("__main__.py", b"x"),
                ("config/config.json", b"{}"),
                (name, b"x"),
            ]);
            assert_eq!(
                check_zip(Cursor::new(z)),
                Err(ZipProblem::UnsafeName(name.to_string())),
                "{name}"
            );
        }
        let z = build(&[
            ("__main__.py", b"x"),
            ("config/config.json", b"{}"),
            ("./bot_code/x..y", b"x"),
        ]);
        assert_eq!(check_zip(Cursor::new(z)), Ok(3));
    }
}
