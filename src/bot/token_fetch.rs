//! Fetches the OAuth access token and keeps [`crate::state::token::TokenCache`] filled.
//!
//! The `--token-config` file (`{"url": "...", "headers": {...}}`) and the endpoint's answer
//! (`{"access_token": "...", "expires_in": N}`) are parsed by pure functions; the fetch is
//! one blocking ureq call on a detached thread, so a hung endpoint never stalls the runtime
//! or delays shutdown. The refresher never exits before shutdown: every failure (bad file,
//! refused, 5xx, bad JSON, an already-expired token) is logged and retried with backoff.
//!
//! The token must never reach a log line or an error message: errors describe the answer's
//! shape, never its content, and [`AccessToken`]'s `Debug` is redacted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::runtime::https;
use crate::runtime::retry::{run_detached, sleep_or_shutdown, Retry};
use crate::runtime::shutdown::Shutdown;
use crate::state::metrics::{Metrics, TokenFetchResult};
use crate::state::token::AccessToken;
use crate::state::token::TokenCache;

/// Refetch once less than this much validity remains.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(600);
/// The token endpoint is a local metadata server: answers are tiny and quick.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// Where to ask for a token and with which headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// Why a token could not be had. `Display` is one line and never contains the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub kind: TokenErrorKind,
    /// The file or URL concerned.
    pub source: String,
    pub problem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenErrorKind {
    /// The `--token-config` file is missing, unreadable or malformed.
    BadTokenConfig,
    /// The CA bundle (`--ca-bundle`) is missing, unreadable or holds no certificate.
    CaBundle,
    /// Refused, reset, timed out, or no such host.
    Network,
    /// The endpoint answered with a status other than 200.
    Http(u16),
    /// The answer was not the expected JSON, or its token had already expired.
    BadResponse,
}

impl TokenErrorKind {
    /// The `result` label of `token_fetches_total`.
    pub fn metric_label(self) -> TokenFetchResult {
        match self {
            TokenErrorKind::BadTokenConfig | TokenErrorKind::CaBundle => {
                TokenFetchResult::ConfigError
            }
            TokenErrorKind::Network => TokenFetchResult::NetworkError,
            TokenErrorKind::Http(_) => TokenFetchResult::HttpError,
            TokenErrorKind::BadResponse => TokenFetchResult::BadResponse,
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TokenErrorKind::BadTokenConfig => {
                write!(f, "token config {}: {}", self.source, self.problem)
            }
            TokenErrorKind::Http(status) => {
                write!(
                    f,
                    "token fetch from {}: HTTP {status}: {}",
                    self.source, self.problem
                )
            }
            _ => write!(f, "token fetch from {}: {}", self.source, self.problem),
        }
    }
}

impl std::error::Error for TokenError {}

fn config_error(path: &Path, problem: impl Into<String>) -> TokenError {
    TokenError {
        kind: TokenErrorKind::BadTokenConfig,
        source: path.display().to_string(),
        problem: problem.into(),
    }
}

/// Parses the text of the `--token-config` file named `path`.
pub fn parse_token_config(path: &Path, text: &str) -> Result<TokenConfig, TokenError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| config_error(path, format!("not JSON ({e})")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| config_error(path, "expected a JSON object {\"url\", \"headers\"}"))?;
    let url = match obj.get("url") {
        Some(serde_json::Value::String(u)) if !u.is_empty() => u.clone(),
        Some(_) => return Err(config_error(path, "\"url\" must be a non-empty string")),
        None => return Err(config_error(path, "no \"url\" key")),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(config_error(
            path,
            format!("\"url\" must start with http:// or https://, got {url:?}"),
        ));
    }
    let mut headers = Vec::new();
    match obj.get("headers") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            for (name, v) in map {
                match v.as_str() {
                    // Header values may be secret: name the header, never its value.
                    Some(s) => headers.push((name.clone(), s.to_string())),
                    None => {
                        return Err(config_error(
                            path,
                            format!("header {name:?} must have a string value"),
                        ))
                    }
                }
            }
        }
        Some(_) => {
            return Err(config_error(
                path,
                "\"headers\" must be an object of strings",
            ))
        }
    }
    Ok(TokenConfig { url, headers })
}

/// Reads and parses the `--token-config` file.
pub fn read_token_config(path: &Path) -> Result<TokenConfig, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let problem = if e.kind() == std::io::ErrorKind::NotFound {
            "no such file".to_string()
        } else {
            format!("cannot read: {e}")
        };
        config_error(path, problem)
    })?;
    parse_token_config(path, &text)
}

/// Parses the token endpoint's answer, received at `now`, from `url`.
pub fn parse_token_answer(
    url: &str,
    body: &str,
    now: SystemTime,
) -> Result<AccessToken, TokenError> {
    let bad = |problem: &str| TokenError {
        kind: TokenErrorKind::BadResponse,
        source: url.to_string(),
        problem: problem.to_string(),
    };
    // serde_json's own messages can quote the input, which holds the token: our own words only.
    let value: serde_json::Value = serde_json::from_str(body).map_err(|e| {
        bad(&format!(
            "answer is not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let token = match value.get("access_token") {
        Some(serde_json::Value::String(t)) if !t.is_empty() => t.clone(),
        Some(_) => return Err(bad("\"access_token\" is not a non-empty string")),
        None => return Err(bad("answer has no \"access_token\"")),
    };
    if token.chars().any(|c| c.is_control() || c == ' ') {
        return Err(bad(
            "\"access_token\" contains spaces or control characters",
        ));
    }
    let expires_in = value
        .get("expires_in")
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| bad("answer has no numeric \"expires_in\""))?;
    if !expires_in.is_finite() || expires_in <= 0.0 {
        return Err(bad(&format!(
            "token already expired (expires_in {expires_in}); is the clock right?"
        )));
    }
    Ok(AccessToken {
        value: token,
        expires_at: now + Duration::from_secs_f64(expires_in.min(1e9)),
    })
}

/// When to fetch again: [`REFRESH_MARGIN`] before expiry, or half-way through a token
/// that lives less than twice the margin (else a short-lived token would be refetched
/// in a tight loop).
pub fn refresh_after(token: &AccessToken, now: SystemTime) -> Duration {
    let remaining = token.remaining(now);
    let margin = REFRESH_MARGIN.min(remaining / 2);
    remaining - margin
}

fn network_problem(e: &ureq::Error) -> (TokenErrorKind, String) {
    match e {
        ureq::Error::StatusCode(s) => (TokenErrorKind::Http(*s), "unexpected status".into()),
        // ureq says only "timeout: global": the operator needs to know that the endpoint
        // was reached and is what hung.
        ureq::Error::Timeout(_) => (
            TokenErrorKind::Network,
            format!(
                "no complete answer within {}s (the endpoint is reachable but hangs or dribbles)",
                TOKEN_TIMEOUT.as_secs()
            ),
        ),
        other => (TokenErrorKind::Network, other.to_string()),
    }
}

/// One blocking fetch.
pub fn fetch_token(config: &TokenConfig, ca_bundle: &Path) -> Result<AccessToken, TokenError> {
    let roots = https::read_roots(ca_bundle).map_err(|problem| TokenError {
        kind: TokenErrorKind::CaBundle,
        source: config.url.clone(),
        problem,
    })?;
    let builder = ureq::Agent::config_builder().timeout_global(Some(TOKEN_TIMEOUT));
    let agent = https::agent(builder, roots);
    let mut req = agent.get(&config.url);
    for (k, v) in &config.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let url = config.url.clone();
    let mut resp = req.call().map_err(|e| {
        let (kind, problem) = network_problem(&e);
        TokenError {
            kind,
            source: url.clone(),
            problem,
        }
    })?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .lossy_utf8(true)
        .read_to_string()
        .map_err(|e| TokenError {
            kind: TokenErrorKind::Network,
            source: url.clone(),
            problem: format!("reading the answer: {}", network_problem(&e).1),
        })?;
    if status != 200 {
        // Never quote the body: a 2xx other than 200 may carry the token itself, and an
        // error page may echo the request's (secret) headers back.
        return Err(TokenError {
            kind: TokenErrorKind::Http(status),
            source: url,
            problem: format!("answer of {} bytes, not shown", body.len()),
        });
    }
    parse_token_answer(&config.url, &body, SystemTime::now())
}

/// Tells waiters that the cache holds a new token. Cheap to clone.
#[derive(Clone)]
pub struct TokenWatch {
    cache: Arc<TokenCache>,
    rx: watch::Receiver<u64>,
}

impl TokenWatch {
    /// A valid token, waiting for the refresher if there is none yet; `None` on shutdown.
    pub async fn current(&mut self, shutdown: &mut Shutdown) -> Option<AccessToken> {
        loop {
            if let Some(t) = self.cache.get(SystemTime::now()) {
                return Some(t);
            }
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        // The refresher is gone (shutting down): nothing more will come.
                        shutdown.requested().await;
                        return None;
                    }
                }
                _ = shutdown.requested() => return None,
            }
        }
    }
}

/// Starts the refresher task, the one writer of `cache`, reading the token config at
/// `path` and trusting the roots of `ca_bundle`; the returned watch wakes token waiters.
pub fn spawn_refresher(
    cache: Arc<TokenCache>,
    metrics: Arc<Metrics>,
    path: PathBuf,
    ca_bundle: PathBuf,
    shutdown: Shutdown,
) -> TokenWatch {
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(refresh_loop(
        cache.clone(),
        metrics,
        path,
        ca_bundle,
        tx,
        shutdown,
    ));
    TokenWatch { cache, rx }
}

async fn refresh_loop(
    cache: Arc<TokenCache>,
    metrics: Arc<Metrics>,
    path: PathBuf,
    ca_bundle: PathBuf,
    tx: watch::Sender<u64>,
    mut shutdown: Shutdown,
) {
    let mut retry = Retry::slow();
    loop {
        // Read the file on every attempt: a fixed or rotated file is picked up without a restart.
        let result = match read_token_config(&path) {
            Ok(config) => {
                let ca_bundle = ca_bundle.clone();
                let attempt = run_detached("token-fetch", move || fetch_token(&config, &ca_bundle));
                let rx = match attempt {
                    Ok(rx) => rx,
                    Err(e) => {
                        log::error!("cannot start a thread for the token fetch: {e}");
                        if retry.wait(&mut shutdown).await {
                            return;
                        }
                        continue;
                    }
                };
                tokio::select! {
                    r = rx => r.unwrap_or_else(|_| Err(TokenError {
                        kind: TokenErrorKind::Network,
                        source: path.display().to_string(),
                        problem: "the fetch thread ended without an answer".into(),
                    })),
                    _ = shutdown.requested() => return,
                }
            }
            Err(e) => Err(e),
        };
        let stop = match result {
            Ok(token) => {
                let now = SystemTime::now();
                let valid = token.remaining(now);
                let next = refresh_after(&token, now);
                cache.set(token);
                tx.send_modify(|g| *g += 1);
                metrics.token_fetches_total.inc(TokenFetchResult::Ok);
                retry.succeeded();
                log::info!(
                    "access token fetched: valid for {}s, next fetch in {}s",
                    valid.as_secs(),
                    next.as_secs()
                );
                sleep_or_shutdown(next, &mut shutdown).await
            }
            Err(e) => {
                metrics.token_fetches_total.inc(e.kind.metric_label());
                retry
                    .failed(module_path!(), log::Level::Warn, e, &mut shutdown)
                    .await
            }
        };
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "ya29.a0AfB_byC-SECRET-TOKEN";

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn config_with_headers() {
        let c = parse_token_config(
            Path::new("/etc/t.json"),
            r#"{"url": "http://169.254.169.254/token", "headers": {"Metadata-Flavor": "Google"}}"#,
        )
        .unwrap();
        assert_eq!(c.url, "http://169.254.169.254/token");
        assert_eq!(c.headers, vec![("Metadata-Flavor".into(), "Google".into())]);
    }

    #[test]
    fn config_without_headers() {
        let c = parse_token_config(Path::new("t"), r#"{"url": "https://h/t"}"#).unwrap();
        assert!(c.headers.is_empty());
    }

    #[test]
    fn malformed_configs_name_the_file_and_the_problem() {
        for (text, needle) in [
            ("{", "not JSON"),
            ("[]", "expected a JSON object"),
            (r#"{"headers": {}}"#, "no \"url\""),
            (r#"{"url": 3}"#, "\"url\" must be"),
            (r#"{"url": "ftp://x"}"#, "http://"),
            (
                r#"{"url": "http://x", "headers": {"A": 1}}"#,
                "header \"A\"",
            ),
            (r#"{"url": "http://x", "headers": []}"#, "\"headers\" must"),
        ] {
            let e = parse_token_config(Path::new("/etc/t.json"), text).unwrap_err();
            assert_eq!(e.kind, TokenErrorKind::BadTokenConfig);
            let line = e.to_string();
            assert!(line.starts_with("token config /etc/t.json: "), "{line}");
            assert!(line.contains(needle), "{line} lacks {needle}");
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn missing_config_file_is_one_line() {
        let e = read_token_config(Path::new("/nonexistent/t.json")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "token config /nonexistent/t.json: no such file"
        );
    }

    #[test]
    fn answer_gives_token_and_expiry() {
        let body = format!(
            r#"{{"access_token": "{SECRET}", "expires_in": 3599, "token_type": "Bearer"}}"#
        );
        let t = parse_token_answer("http://m/t", &body, t0()).unwrap();
        assert_eq!(t.value, SECRET);
        assert_eq!(t.expires_at, t0() + Duration::from_secs(3599));
    }

    #[test]
    fn bad_answers_never_quote_the_token() {
        for body in [
            format!(r#"{{"access_token": "{SECRET}"}}"#),
            format!(r#"{{"access_token": "{SECRET}", "expires_in": "3599"}}"#),
            format!(r#"{{"access_token": "{SECRET}", "expires_in": 0}}"#),
            format!(r#"{{"access_token": "{SECRET}", "expires_in": -5}}"#),
            format!(r#"{{"access_token": "{SECRET} x", "expires_in": 10}}"#),
            format!(r#"{{"access_token": "{SECRET}", "#),
            format!(r#"{{"token": "{SECRET}"}}"#),
            format!(r#""{SECRET}""#),
            "<html>500</html>".to_string(),
        ] {
            let e = parse_token_answer("http://m/t", &body, t0()).unwrap_err();
            assert_eq!(e.kind, TokenErrorKind::BadResponse, "{body}");
            let line = format!("{e} {e:?}");
            assert!(!line.contains("SECRET"), "{line}");
        }
    }

    #[test]
    fn a_timeout_says_the_endpoint_hung_and_for_how_long() {
        let (kind, problem) = network_problem(&ureq::Error::Timeout(ureq::Timeout::Global));
        assert_eq!(kind, TokenErrorKind::Network);
        assert_eq!(
            problem,
            "no complete answer within 20s (the endpoint is reachable but hangs or dribbles)"
        );
    }

    #[test]
    fn expired_token_blames_the_clock() {
        let e =
            parse_token_answer("u", r#"{"access_token": "x", "expires_in": 0}"#, t0()).unwrap_err();
        assert!(e.to_string().contains("is the clock right?"));
    }

    #[test]
    fn refresh_ten_minutes_before_expiry() {
        let t = AccessToken {
            value: "x".into(),
            expires_at: t0() + Duration::from_secs(3600),
        };
        assert_eq!(refresh_after(&t, t0()), Duration::from_secs(3000));
    }

    #[test]
    fn short_tokens_refresh_half_way() {
        let t = AccessToken {
            value: "x".into(),
            expires_at: t0() + Duration::from_secs(300),
        };
        assert_eq!(refresh_after(&t, t0()), Duration::from_secs(150));
    }
}
