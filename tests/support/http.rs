//! The tests' one HTTP client (ureq, which the binary itself uses): every request to
//! the monitor's ports and to the stand-ins goes through [`try_request`]. The only
//! other way is [`raw_reply`], for a test that writes a malformed or stalled request
//! on a socket of its own on purpose.

use std::time::Duration;

/// A whole answer, whatever its status.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The header lines, `name: value` each.
    pub headers: String,
    /// The body as text (lossy: the status page and the stand-ins may send bytes that
    /// are not UTF-8), and as it came.
    pub body: String,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One request to `127.0.0.1:port` with `body` (sent with its length, even when
/// empty), on a connection of its own, with a generous deadline against hangs.
pub fn try_request(port: u16, method: &str, path: &str, body: &[u8]) -> Result<Reply, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(Duration::from_secs(20)))
        // No connection is kept for the next request: a test counts threads and
        // connections, and each request stands alone as a hook script's does.
        .max_idle_connections(0)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{path}");
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(&url)
        .header("Content-Type", "application/json")
        .body(body)
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let mut response = agent
        .run(request)
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(100 << 20)
        .read_to_vec()
        .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
    Ok(Reply {
        status: response.status().as_u16(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        bytes: body,
    })
}

/// [`try_request`] that fails the test when no answer comes.
pub fn request(port: u16, method: &str, path: &str, body: &str) -> Reply {
    try_request(port, method, path, body.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

pub fn get(port: u16, path: &str) -> Reply {
    request(port, "GET", path, "")
}

/// Polls until `path` answers `status`, for up to 30 s (slow machines, qemu); the body.
pub fn wait_for_status(port: u16, path: &str, status: u16) -> String {
    super::wait_for(
        Duration::from_secs(30),
        &format!("{path} on port {port} to answer {status}"),
        || {
            try_request(port, "GET", path, b"")
                .ok()
                .filter(|r| r.status == status)
                .map(|r| r.body)
        },
    )
}

/// Parses what a server answered on a raw socket to a request the test wrote itself
/// (malformed, oversized or stalled on purpose): the whole answer, up to the close.
pub fn raw_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status: {head:?}"));
    Reply {
        status,
        headers: head.to_string(),
        body: body.to_string(),
        bytes: body.as_bytes().to_vec(),
    }
}
