//! The Kubernetes API over HTTPS, the in-cluster way: the API server from the pod's
//! service variables, verified against the service account's `ca.crt` and nothing else,
//! with the account's bearer token. Projected tokens rotate, so the token is read again
//! from its file every [`TOKEN_REREAD`] and at once after a 401.
//!
//! Blocking (ureq): it runs on the client's own threads, never on the runtime.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// client-go reads the token file again every 5 minutes: half the shortest validity
/// (10 minutes) a projected token can have.
pub const TOKEN_REREAD: Duration = Duration::from_secs(300);

/// A request other than a watch: connecting, sending and the whole answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The API server ends a watch after this (`timeoutSeconds`), so a quiet watch is
/// renewed rather than mistaken for a stalled one.
pub const WATCH_SECONDS: u64 = 240;

/// The largest answer read (a Node with its annotations is far smaller: all of an
/// object's annotations together are at most 256 KiB).
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// Where the RBAC that the pod needs is granted, for the 403 lines.
pub const RBAC_MANIFEST: &str = "manifests/base/rbac.yaml";

/// What went wrong, for the caller to branch on and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeErrorKind {
    /// No answer: connection refused, TLS, a timeout.
    Unreachable,
    /// 401 even with the token just read again.
    Unauthorized,
    /// 403: the RBAC lacks a permission.
    Forbidden,
    /// 410: a watch's resource version is too old.
    Gone,
    /// 404.
    NotFound,
    /// Any other status.
    Http(u16),
    /// A 2xx answer that is not what the API returns.
    BadAnswer,
    /// The service account's files cannot be read.
    Files,
}

/// One line: the request, then what went wrong and, where there is one, the remedy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeError {
    pub kind: KubeErrorKind,
    /// `GET https://10.43.0.1:443/api/v1/nodes/pi-1`, or the file concerned.
    pub what: String,
    pub problem: String,
}

impl fmt::Display for KubeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.problem)
    }
}

impl std::error::Error for KubeError {}

fn file_error(path: &Path, e: impl fmt::Display) -> KubeError {
    KubeError {
        kind: KubeErrorKind::Files,
        what: path.display().to_string(),
        problem: format!("cannot read the service account's file: {e}"),
    }
}

/// The permission a request needs, named in the line of a 403.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    pub verb: &'static str,
    pub resource: &'static str,
}

/// A verified HTTPS agent whose only roots are the cluster's CA (`roots`), with the
/// crate's TLS setup (`runtime::https`).
fn agent(roots: ureq::tls::RootCerts, watch: bool) -> ureq::Agent {
    let config = ureq::Agent::config_builder();
    let config = if watch {
        // A watch lasts minutes: only connecting and a silence longer than the watch's
        // own end are failures.
        config
            .timeout_connect(Some(REQUEST_TIMEOUT))
            .timeout_recv_response(Some(REQUEST_TIMEOUT))
            .timeout_per_read(Some(Duration::from_secs(WATCH_SECONDS + 30)))
    } else {
        config.timeout_global(Some(REQUEST_TIMEOUT))
    };
    crate::runtime::https::agent(config, roots)
}

/// The bearer token and when it was read.
struct Token {
    value: String,
    read_at: Instant,
}

/// The service account's token file, read again when older than [`TOKEN_REREAD`] or
/// when asked (after a 401).
pub struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<Token>>,
}

impl TokenFile {
    pub fn new(path: PathBuf) -> TokenFile {
        TokenFile {
            path,
            cached: Mutex::new(None),
        }
    }

    /// The token as of `now`; `fresh` reads the file whatever its age.
    pub fn get(&self, fresh: bool, now: Instant) -> Result<String, KubeError> {
        let mut slot = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some(t) if !fresh && now.saturating_duration_since(t.read_at) < TOKEN_REREAD => {
                Ok(t.value.clone())
            }
            _ => {
                let value = std::fs::read_to_string(&self.path)
                    .map_err(|e| file_error(&self.path, e))?
                    .trim()
                    .to_string();
                if value.is_empty() {
                    return Err(file_error(&self.path, "it is empty"));
                }
                *slot = Some(Token {
                    value: value.clone(),
                    read_at: now,
                });
                Ok(value)
            }
        }
    }
}

/// The in-cluster client: the API server, the node, the namespace, the token.
pub struct Client {
    pub api: String,
    pub node: String,
    pub namespace: String,
    token: TokenFile,
    agent: ureq::Agent,
    watch_agent: ureq::Agent,
}

/// A request's method, with its JSON body.
#[derive(Debug, Clone, Copy)]
pub enum Method<'a> {
    Get,
    Post(&'a str),
    /// A strategic merge patch, as `kubectl` and the kubelet send.
    Patch(&'a str),
}

impl Method<'_> {
    fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post(_) => "POST",
            Method::Patch(_) => "PATCH",
        }
    }
}

impl Client {
    /// Reads the service account's directory (`ca.crt`, `namespace`; the token is read
    /// on first use).
    pub fn new(api: &str, node: &str, dir: &Path) -> Result<Arc<Client>, KubeError> {
        let ca_path = dir.join("ca.crt");
        let ca = std::fs::read(&ca_path).map_err(|e| file_error(&ca_path, e))?;
        let roots = crate::runtime::https::parse_roots(&ca).map_err(|e| file_error(&ca_path, e))?;
        let ns_path = dir.join("namespace");
        let namespace = std::fs::read_to_string(&ns_path)
            .map_err(|e| file_error(&ns_path, e))?
            .trim()
            .to_string();
        if namespace.is_empty() {
            return Err(file_error(&ns_path, "it is empty"));
        }
        Ok(Arc::new(Client {
            api: api.trim_end_matches('/').to_string(),
            node: node.to_string(),
            namespace,
            token: TokenFile::new(dir.join("token")),
            agent: agent(roots.clone(), false),
            watch_agent: agent(roots, true),
        }))
    }

    /// One request; a 401 reads the token again and tries once more. Statuses other
    /// than 2xx become errors named after the request, a 403 with the permission
    /// `needs` and the manifest that grants it.
    pub fn call(&self, path: &str, method: Method, needs: Needs) -> Result<String, KubeError> {
        let url = format!("{}{path}", self.api);
        let what = format!("{} {url}", method.name());
        let resp = self.send(&self.agent, &url, &what, method)?;
        let status = resp.status().as_u16();
        check(&what, status, read_text(resp, &what)?, needs)
    }

    /// Opens a watch of this node from `resource_version`; the answer's lines are the
    /// watch events. A 401 reads the token again and tries once more.
    pub fn watch_node(
        &self,
        resource_version: &str,
    ) -> Result<impl std::io::BufRead + use<>, KubeError> {
        let url = format!(
            "{}/api/v1/nodes?fieldSelector=metadata.name%3D{}&watch=true&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds={WATCH_SECONDS}",
            self.api, self.node, resource_version
        );
        let what = format!("GET {url}");
        let resp = self.send(&self.watch_agent, &url, &what, Method::Get)?;
        let status = resp.status().as_u16();
        if status != 200 {
            let needs = Needs {
                verb: "watch",
                resource: "nodes",
            };
            return check(&what, status, read_text(resp, &what)?, needs).and_then(|_| {
                Err(KubeError {
                    kind: KubeErrorKind::BadAnswer,
                    what,
                    problem: format!("a watch answered {status}, expected 200"),
                })
            });
        }
        let reader = resp.into_body().into_with_config().reader();
        Ok(std::io::BufReader::new(reader))
    }

    /// Sends `method` to `url` with the token; after a 401 the token is read again and
    /// the request sent once more. Judging the status is the caller's.
    fn send(
        &self,
        agent: &ureq::Agent,
        url: &str,
        what: &str,
        method: Method,
    ) -> Result<ureq::http::Response<ureq::Body>, KubeError> {
        let mut fresh = false;
        loop {
            let token = self.token.get(fresh, Instant::now())?;
            let auth = format!("Bearer {token}");
            let sent = match method {
                Method::Get => agent
                    .get(url)
                    .header("Authorization", &auth)
                    .header("Accept", "application/json")
                    .call(),
                Method::Post(body) => agent
                    .post(url)
                    .header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(body),
                Method::Patch(body) => agent
                    .patch(url)
                    .header("Authorization", &auth)
                    .header("Content-Type", "application/strategic-merge-patch+json")
                    .send(body),
            };
            let resp = sent.map_err(|e| unreachable_error(what, &e))?;
            if resp.status().as_u16() == 401 && !fresh {
                fresh = true;
                continue;
            }
            return Ok(resp);
        }
    }
}

/// An answer's body as text, at most [`MAX_ANSWER_BYTES`].
fn read_text(mut resp: ureq::http::Response<ureq::Body>, what: &str) -> Result<String, KubeError> {
    resp.body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .lossy_utf8(true)
        .read_to_string()
        .map_err(|e| unreachable_error(what, &e))
}

fn unreachable_error(what: &str, e: &ureq::Error) -> KubeError {
    KubeError {
        kind: KubeErrorKind::Unreachable,
        what: what.to_string(),
        problem: format!("no answer: {e}"),
    }
}

/// The message of a `Status` answer, if the body is one.
fn status_message(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("message")?.as_str().map(str::to_string)
}

/// A status other than 2xx, as the error a person can act on.
fn check(what: &str, status: u16, body: String, needs: Needs) -> Result<String, KubeError> {
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let said = status_message(&body).unwrap_or_else(|| format!("{} bytes", body.len()));
    let (kind, problem) = match status {
        401 => (
            KubeErrorKind::Unauthorized,
            format!(
                "401 Unauthorized even with the token read again: the service account token \
                 is expired or not the pod's (automountServiceAccountToken in \
                 manifests/base/serviceaccount.yaml); the API server said: {said}"
            ),
        ),
        403 => (
            KubeErrorKind::Forbidden,
            format!(
                "403 Forbidden: the service account lacks \"{}\" on {} (granted by {RBAC_MANIFEST}); \
                 the API server said: {said}",
                needs.verb, needs.resource
            ),
        ),
        404 => (KubeErrorKind::NotFound, format!("404 Not Found: {said}")),
        410 => (KubeErrorKind::Gone, format!("410 Gone: {said}")),
        s => (KubeErrorKind::Http(s), format!("answered {s}: {said}")),
    };
    Err(KubeError {
        kind,
        what: what.to_string(),
        problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEEDS: Needs = Needs {
        verb: "create",
        resource: "events",
    };

    #[test]
    fn a_403_names_the_permission_and_the_manifest() {
        let body = r#"{"kind":"Status","status":"Failure","message":"events is forbidden: User \"system:serviceaccount:lab:tmm\" cannot create resource \"events\"","reason":"Forbidden","code":403}"#;
        let e = check(
            "POST https://k/api/v1/namespaces/lab/events",
            403,
            body.into(),
            NEEDS,
        )
        .err()
        .unwrap();
        assert_eq!(e.kind, KubeErrorKind::Forbidden);
        let line = e.to_string();
        assert!(line.starts_with("POST https://k/api/v1/namespaces/lab/events: 403 Forbidden: the service account lacks \"create\" on events (granted by manifests/base/rbac.yaml)"), "{line}");
        assert!(line.contains("cannot create resource"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn statuses_map_to_kinds_and_a_body_that_is_not_a_status_is_not_quoted() {
        let kind = |s| {
            check("GET u", s, "<html>".into(), NEEDS)
                .err()
                .map(|e| e.kind)
        };
        assert_eq!(kind(401), Some(KubeErrorKind::Unauthorized));
        assert_eq!(kind(404), Some(KubeErrorKind::NotFound));
        assert_eq!(kind(410), Some(KubeErrorKind::Gone));
        assert_eq!(kind(500), Some(KubeErrorKind::Http(500)));
        assert_eq!(kind(201), None);
        let e = check("GET u", 500, "<html>".into(), NEEDS).err().unwrap();
        assert_eq!(e.to_string(), "GET u: answered 500: 6 bytes");
    }

    #[test]
    fn the_token_is_read_again_when_old_or_after_a_401() {
        let dir = std::env::temp_dir().join(format!("tmm-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "one\n").unwrap();
        let file = TokenFile::new(path.clone());
        let t0 = Instant::now();
        assert_eq!(file.get(false, t0).unwrap(), "one");
        // The kubelet rotates it: kept until it is old, or a 401 asks for it again.
        std::fs::write(&path, "two").unwrap();
        assert_eq!(file.get(false, t0 + TOKEN_REREAD / 2).unwrap(), "one");
        assert_eq!(file.get(true, t0 + TOKEN_REREAD / 2).unwrap(), "two");
        std::fs::write(&path, "three").unwrap();
        assert_eq!(file.get(false, t0 + TOKEN_REREAD * 2).unwrap(), "three");
        std::fs::write(&path, "").unwrap();
        let e = file.get(true, t0).err().unwrap();
        assert_eq!(e.kind, KubeErrorKind::Files);
        assert!(
            e.to_string()
                .ends_with("token: cannot read the service account's file: it is empty"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_one_line() {
        let dir = std::env::temp_dir().join(format!("tmm-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), "not a pem").unwrap();
        let e = Client::new("https://10.43.0.1:443", "pi", &dir)
            .err()
            .unwrap();
        assert_eq!(e.kind, KubeErrorKind::Files);
        let ca = dir.join("ca.crt").display().to_string();
        assert!(
            e.to_string().starts_with(&format!("{ca}: cannot read")),
            "{e}"
        );
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
