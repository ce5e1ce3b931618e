//! Makes sure `<bot dir>/swarming_bot.zip` is a usable bot, downloading it when needed.
//!
//! The bot overwrites its own zip when it updates, so we download only when the file is
//! missing or unusable (`zip_check` says which). A bad file is moved aside OUTSIDE the
//! bot directory (the bot deletes what it does not know there), never deleted.
//!
//! A download goes to a temporary file in the bot directory (same file system, so the
//! rename is atomic), is fsynced and checked, and only then renamed over the zip; the
//! directory is fsynced too. So no crash, fault or shutdown leaves a partial zip in place
//! of a good one, and an interrupted download removes its temporary file.
//!
//! Redirects: `/bot_code` answers 302 to a versioned URL that needs no authorization.
//! ureq is told never to carry the `Authorization` header across a redirect
//! (`RedirectAuthHeaders::Never`), so the token goes to `/bot_code` only.
//!
//! This module never logs the token: it is sent as a header and appears nowhere else.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bot::token_fetch::TokenWatch;
use crate::bot::zip_check::{check_zip_file, ZipFileError, ZipProblem};
use crate::runtime::https;
use crate::runtime::retry::{run_detached, Retry};
use crate::runtime::shutdown::Shutdown;
use crate::state::metrics::{Metrics, ZipDownloadResult};

pub const ZIP_NAME: &str = "swarming_bot.zip";
/// Prefix of our temporary download files in the bot directory.
const TEMP_PREFIX: &str = "swarming_bot.zip.download-";
/// Far above the real bot (about 10 MB): a runaway answer must not fill the SD card.
const MAX_ZIP_BYTES: u64 = 512 * 1024 * 1024;

/// Why one download attempt failed. `Display` names the URL and never the token.
#[derive(Debug)]
pub struct DownloadError {
    pub url: String,
    pub kind: DownloadErrorKind,
}

#[derive(Debug)]
pub enum DownloadErrorKind {
    /// 403: the server does not accept this bot id or these credentials.
    Forbidden,
    Http(u16),
    Network(String),
    /// The CA bundle could not be read (`runtime::https::read_roots`'s line).
    CaBundle(String),
    BadZip(ZipProblem),
    Io {
        path: PathBuf,
        error: io::Error,
    },
    /// Shutdown interrupted the download.
    Cancelled,
}

impl DownloadErrorKind {
    /// The `result` label of `bot_zip_downloads_total`.
    pub fn metric_label(&self) -> ZipDownloadResult {
        match self {
            DownloadErrorKind::Forbidden | DownloadErrorKind::Http(_) => {
                ZipDownloadResult::HttpError
            }
            DownloadErrorKind::Network(_) => ZipDownloadResult::NetworkError,
            DownloadErrorKind::BadZip(_) => ZipDownloadResult::BadZip,
            // As for the token: what the operator configured, not the disk.
            DownloadErrorKind::CaBundle(_) => ZipDownloadResult::ConfigError,
            DownloadErrorKind::Io { .. } | DownloadErrorKind::Cancelled => {
                ZipDownloadResult::IoError
            }
        }
    }
}

impl fmt::Display for DownloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.url;
        match &self.kind {
            DownloadErrorKind::Forbidden => write!(
                f,
                "bot code download from {url}: HTTP 403: the server does not allow this bot id or these credentials"
            ),
            DownloadErrorKind::Http(s) => write!(f, "bot code download from {url}: HTTP {s}"),
            DownloadErrorKind::Network(e) | DownloadErrorKind::CaBundle(e) => {
                write!(f, "bot code download from {url}: {e}")
            }
            DownloadErrorKind::BadZip(p) => {
                write!(f, "bot code download from {url}: HTTP 200 but {p}")
            }
            DownloadErrorKind::Io { path, error } => {
                write!(f, "bot code download from {url}: {}: {error}", path.display())?;
                match remedy(error) {
                    Some(r) => write!(f, " ({r})"),
                    None => Ok(()),
                }
            }
            DownloadErrorKind::Cancelled => write!(f, "bot code download from {url}: cancelled"),
        }
    }
}

/// What the operator can do about an error writing in the bot directory, when the
/// error says.
fn remedy(error: &io::Error) -> Option<&'static str> {
    match error.raw_os_error()? {
        libc::ENOSPC | libc::EDQUOT => Some(
            "free space on the bot directory's file system or give it a larger volume: the bot needs several times its zip's size",
        ),
        libc::EROFS => Some(
            "the bot directory is on a read-only file system: mount it (the pod's volume) read-write",
        ),
        libc::EACCES | libc::EPERM => {
            Some("make the bot directory writable by the monitor's user")
        }
        _ => None,
    }
}

/// A temporary file that removes itself unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    kept: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn temp_path(dir: &Path) -> PathBuf {
    dir.join(format!("{TEMP_PREFIX}{}", std::process::id()))
}

/// Removes temporary files left by an earlier run that was killed mid-download.
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            match fs::remove_file(e.path()) {
                Ok(()) => log::info!("removed a stale partial download {}", e.path().display()),
                Err(err) => log::warn!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What one download needs; moved to the download thread.
struct Request {
    url: String,
    token: String,
    bot_id: String,
    dir: PathBuf,
    ca_bundle: PathBuf,
    cancel: Arc<AtomicBool>,
}

/// One blocking download into place. Returns the zip's size and entry count.
fn download_once(req: &Request) -> Result<(u64, usize), DownloadError> {
    let err = |url: &str, kind| DownloadError {
        url: url.to_string(),
        kind,
    };
    // Read on every attempt: a fixed or updated bundle is picked up without a restart.
    let roots = https::read_roots(&req.ca_bundle)
        .map_err(|e| err(&req.url, DownloadErrorKind::CaBundle(e)))?;
    let builder = ureq::Agent::config_builder()
        .max_redirects(5)
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        // No global timeout: a 10 MB zip over a slow link may take minutes; a stalled one
        // is caught by the per-read timeout.
        .timeout_per_read(Some(Duration::from_secs(60)));
    let agent = https::agent(builder, roots);
    let resp = agent
        .get(&req.url)
        .header("Authorization", format!("Bearer {}", req.token))
        .header("X-Luci-Swarming-Bot-ID", req.bot_id.as_str())
        .call()
        .map_err(|e| err(&req.url, DownloadErrorKind::Network(e.to_string())))?;
    // The URL that answered, after redirects: failures name the one that failed.
    let final_url = ureq::ResponseExt::get_uri(&resp).to_string();
    match resp.status().as_u16() {
        200 => {}
        403 => return Err(err(&final_url, DownloadErrorKind::Forbidden)),
        s => return Err(err(&final_url, DownloadErrorKind::Http(s))),
    }
    let path = temp_path(&req.dir);
    let io_err = |error: io::Error| {
        err(
            &final_url,
            DownloadErrorKind::Io {
                path: path.clone(),
                error,
            },
        )
    };
    let mut temp = TempFile {
        path: path.clone(),
        kept: false,
    };
    let mut file = File::create(&path).map_err(io_err)?;
    let mut body = resp
        .into_body()
        .into_with_config()
        .limit(MAX_ZIP_BYTES)
        .reader();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        if req.cancel.load(Ordering::Relaxed) {
            return Err(err(&final_url, DownloadErrorKind::Cancelled));
        }
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(err(&final_url, DownloadErrorKind::Network(e.to_string()))),
        };
        file.write_all(&buf[..n]).map_err(io_err)?;
        size += n as u64;
    }
    file.sync_all().map_err(io_err)?;
    drop(file);
    let entries = match check_zip_file(&path) {
        Ok(n) => n,
        Err(ZipFileError::Bad(p)) => return Err(err(&final_url, DownloadErrorKind::BadZip(p))),
        Err(ZipFileError::Io(_, kind)) => return Err(io_err(kind.into())),
    };
    if req.cancel.load(Ordering::Relaxed) {
        return Err(err(&final_url, DownloadErrorKind::Cancelled));
    }
    let target = req.dir.join(ZIP_NAME);
    fs::rename(&path, &target).map_err(io_err)?;
    temp.kept = true;
    fsync_dir(&req.dir).map_err(io_err)?;
    Ok((size, entries))
}

/// Moves a bad zip next to the bot directory as `swarming_bot.zip.bad.<unix time>`.
fn set_aside(dir: &Path, zip: &Path) -> io::Result<PathBuf> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut aside = parent.join(format!("{ZIP_NAME}.bad.{secs}"));
    let mut n = 1;
    while aside.exists() {
        aside = parent.join(format!("{ZIP_NAME}.bad.{secs}.{n}"));
        n += 1;
    }
    match fs::rename(zip, &aside) {
        Ok(()) => Ok(aside),
        // Another file system (the bot dir a mount of its own): copy, then remove.
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            fs::copy(zip, &aside)?;
            fs::remove_file(zip)?;
            Ok(aside)
        }
        Err(e) => Err(e),
    }
}

/// Creates the bot directory and returns its absolute path.
pub fn prepare_dir(dir: &Path) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    fs::canonicalize(dir)
}

/// Where and as which bot the zip is downloaded, and where the attempts are counted.
pub struct Source<'a> {
    /// The Swarming server's base URL.
    pub server: &'a str,
    pub bot_id: &'a str,
    pub metrics: &'a Metrics,
    /// The roots trusted for HTTPS to the server (`--ca-bundle`).
    pub ca_bundle: &'a Path,
    /// A directory whose subdirectories may hold a good zip to copy instead of a
    /// download (the other bots' directories, `--bots per-device`).
    pub seed: Option<&'a Path>,
}

/// Copies the first good zip found in a subdirectory of `seed` other than `dir` into
/// `dir` (through a temporary file, renamed into place); the zip it copied, if any.
pub fn copy_from_siblings(seed: &Path, dir: &Path) -> io::Result<Option<PathBuf>> {
    let mut candidates: Vec<PathBuf> = fs::read_dir(seed)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.as_path() != dir)
        .map(|p| p.join(ZIP_NAME))
        .collect();
    candidates.sort();
    for zip in candidates {
        if check_zip_file(&zip).is_err() {
            continue;
        }
        // A copy cut short (a full disk) must not leave its partial file behind.
        let mut temp = TempFile {
            path: temp_path(dir),
            kept: false,
        };
        fs::copy(&zip, &temp.path)?;
        fs::rename(&temp.path, dir.join(ZIP_NAME))?;
        temp.kept = true;
        fsync_dir(dir)?;
        return Ok(Some(zip));
    }
    Ok(None)
}

/// Makes sure the bot directory holds a good zip; downloads one if needed, retrying for
/// ever. `false` when shutdown came first.
pub async fn ensure(
    source: &Source<'_>,
    dir: &Path,
    tokens: &mut TokenWatch,
    shutdown: &mut Shutdown,
) -> bool {
    let zip = dir.join(ZIP_NAME);
    let mut retry = Retry::slow();
    loop {
        if shutdown.is_requested() {
            return false;
        }
        let checked = {
            let path = zip.clone();
            match run_detached("zip-check", move || check_zip_file(&path)) {
                Ok(rx) => rx.await.unwrap_or(Err(ZipFileError::Io(
                    PathBuf::new(),
                    io::ErrorKind::Interrupted,
                ))),
                Err(e) => Err(ZipFileError::Io(zip.clone(), e.kind())),
            }
        };
        match checked {
            Ok(entries) => {
                log::info!("{} is usable ({entries} entries)", zip.display());
                return true;
            }
            Err(ZipFileError::Io(_, io::ErrorKind::NotFound)) => {
                if let Some(seed) = source.seed {
                    let (seed, to) = (seed.to_path_buf(), dir.to_path_buf());
                    let copied =
                        match run_detached("zip-copy", move || copy_from_siblings(&seed, &to)) {
                            Ok(rx) => rx.await.unwrap_or_else(|_| {
                                Err(io::Error::other("the copy thread ended without an answer"))
                            }),
                            Err(e) => Err(e),
                        };
                    match copied {
                        Ok(Some(from)) => {
                            log::info!(
                                "{} is missing: copied the good zip of {}",
                                zip.display(),
                                from.display()
                            );
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => log::warn!(
                            "{} is missing and no other bot's zip could be copied ({e})",
                            zip.display()
                        ),
                    }
                }
                log::info!("{} is missing: downloading it", zip.display());
            }
            Err(problem) => {
                let why = match &problem {
                    ZipFileError::Bad(p) => p.to_string(),
                    ZipFileError::Io(_, k) => io::Error::from(*k).to_string(),
                };
                // Off the runtime: across file systems this is a copy of the whole zip.
                let moved = {
                    // Next to the directory the bot cleans: with one bot per phone, next to
                    // --bot-dir, which holds only the bots' directories.
                    let beside = source.seed.unwrap_or(dir);
                    let (dir, path) = (beside.to_path_buf(), zip.clone());
                    match run_detached("zip-set-aside", move || set_aside(&dir, &path)) {
                        Ok(rx) => rx.await.unwrap_or_else(|_| {
                            Err(io::Error::other(
                                "the set-aside thread ended without an answer",
                            ))
                        }),
                        Err(e) => Err(e),
                    }
                };
                match moved {
                    Ok(aside) => log::warn!(
                        "{} is unusable ({why}): moved aside to {}; downloading it again",
                        zip.display(),
                        aside.display()
                    ),
                    Err(e) => {
                        // Never download over a file we could not keep: try again later.
                        let failure = format!(
                            "{} is unusable ({why}) and cannot be moved aside ({e})",
                            zip.display()
                        );
                        if retry
                            .failed(module_path!(), log::Level::Error, failure, shutdown)
                            .await
                        {
                            return false;
                        }
                        continue;
                    }
                }
            }
        }
        // A download is checked before it is renamed into place.
        return download(source, dir, tokens, shutdown, &mut retry).await;
    }
}

/// Downloads until one attempt succeeds. `false` on shutdown.
async fn download(
    source: &Source<'_>,
    dir: &Path,
    tokens: &mut TokenWatch,
    shutdown: &mut Shutdown,
    retry: &mut Retry,
) -> bool {
    remove_stale_temps(dir);
    let url = format!("{}/bot_code", source.server);
    loop {
        let Some(token) = tokens.current(shutdown).await else {
            return false;
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let req = Request {
            url: url.clone(),
            token: token.value,
            bot_id: source.bot_id.to_string(),
            dir: dir.to_path_buf(),
            ca_bundle: source.ca_bundle.to_path_buf(),
            cancel: cancel.clone(),
        };
        let result = match run_detached("bot-download", move || download_once(&req)) {
            Ok(rx) => tokio::select! {
                r = rx => r.unwrap_or_else(|_| Err(DownloadError {
                    url: url.clone(),
                    kind: DownloadErrorKind::Network("the download thread ended without an answer".into()),
                })),
                _ = shutdown.requested() => {
                    cancel.store(true, Ordering::Relaxed);
                    // The thread may be blocked in a read: remove its file now rather
                    // than wait for it; it notices the flag and gives up.
                    let _ = fs::remove_file(temp_path(dir));
                    log::info!("bot code download from {url} interrupted by shutdown");
                    return false;
                }
            },
            Err(e) => Err(DownloadError {
                url: url.clone(),
                kind: DownloadErrorKind::Io {
                    path: dir.to_path_buf(),
                    error: e,
                },
            }),
        };
        match result {
            Ok((size, entries)) => {
                source
                    .metrics
                    .bot_zip_downloads_total
                    .inc(ZipDownloadResult::Ok);
                retry.succeeded();
                log::info!(
                    "downloaded {} from {url}: {size} bytes, {entries} entries",
                    dir.join(ZIP_NAME).display()
                );
                return true;
            }
            Err(e) => {
                source
                    .metrics
                    .bot_zip_downloads_total
                    .inc(e.kind.metric_label());
                if retry
                    .failed(module_path!(), log::Level::Warn, e, shutdown)
                    .await
                {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::zip_check::tests::build;

    #[test]
    fn write_errors_in_the_bot_dir_say_what_to_do() {
        let text = |errno| {
            DownloadError {
                url: "https://s/v".into(),
                kind: DownloadErrorKind::Io {
                    path: "/b/s/swarming_bot.zip.download-7".into(),
                    error: io::Error::from_raw_os_error(errno),
                },
            }
            .to_string()
        };
        let full = text(libc::ENOSPC);
        assert!(
            full.starts_with("bot code download from https://s/v: /b/s/swarming_bot.zip.download-7: No space left on device"),
            "{full}"
        );
        assert!(full.contains("give it a larger volume"), "{full}");
        assert!(text(libc::EROFS).contains("mount it (the pod's volume) read-write"));
        assert!(text(libc::EACCES).contains("writable by the monitor's user"));
        assert!(text(libc::EIO).ends_with("Input/output error (os error 5)"));
    }

    #[test]
    fn a_bad_zip_is_moved_outside_the_bot_dir() {
        let base = std::env::temp_dir().join(format!("tmm-aside-{}", std::process::id()));
        let dir = base.join("s");
        fs::create_dir_all(&dir).unwrap();
        let zip = dir.join(ZIP_NAME);
        fs::write(&zip, b"junk").unwrap();
        let aside = set_aside(&dir, &zip).unwrap();
        assert_eq!(aside.parent(), Some(base.as_path()));
        assert!(!zip.exists());
        assert_eq!(fs::read(&aside).unwrap(), b"junk");
        fs::write(&zip, b"junk2").unwrap();
        let second = set_aside(&dir, &zip).unwrap();
        assert_ne!(second, aside);
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_sibling_copy_that_fails_leaves_no_partial_file() {
        let seed = std::env::temp_dir().join(format!("tmm-siblings-{}", std::process::id()));
        let (from, to) = (seed.join("a"), seed.join("b"));
        fs::create_dir_all(&from).unwrap();
        let good = build(&[("__main__.py", b"x"), ("config/config.json", b"{}")]);
        fs::write(from.join(ZIP_NAME), good).unwrap();
        // The copy lands, then the rename onto a non-empty directory fails.
        fs::create_dir_all(to.join(ZIP_NAME).join("x")).unwrap();
        assert!(copy_from_siblings(&seed, &to).is_err());
        let left: Vec<_> = fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [ZIP_NAME], "{left:?}");
        fs::remove_dir_all(&seed).unwrap();
    }

    #[test]
    fn forbidden_says_who_is_not_allowed() {
        let e = DownloadError {
            url: "https://s/bot_code".into(),
            kind: DownloadErrorKind::Forbidden,
        };
        assert!(e
            .to_string()
            .contains("does not allow this bot id or these credentials"));
        assert_eq!(e.kind.metric_label().as_str(), "http_error");
    }

    #[test]
    fn an_unusable_ca_bundle_is_a_config_error_as_for_the_token() {
        let bundle = DownloadErrorKind::CaBundle("CA bundle /x.pem: no such file".into());
        assert_eq!(bundle.metric_label().as_str(), "config_error");
        let token = crate::bot::token_fetch::TokenErrorKind::CaBundle;
        assert_eq!(
            bundle.metric_label().as_str(),
            token.metric_label().as_str()
        );
    }
}
