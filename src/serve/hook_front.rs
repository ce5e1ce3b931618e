//! The hook port's front door: accepts the connections of `--hook-addr` on the runtime
//! (a task each, not a thread) and hands one to the hook server's threads (tiny_http,
//! behind a loopback port of their own) only once its first request has arrived
//! in full: the head, and a body of a declared length up to [`MAX_BODY`]. From then on
//! it relays the connection byte for byte. tiny_http listens on a loopback port of its
//! own (an abstract Unix socket would do, but tiny_http 0.12 panics when it drops one).
//!
//! Why: tiny_http gives every connection a thread and offers no socket timeout, so a
//! client that never finishes its headers held a thread (and about 16 KB) for as long
//! as it stayed connected: 600 stalled clients held 600 threads and 10 MB, of which the
//! allocator kept half after they left. Here a stalled client costs a task and the bytes
//! it sent, for at most [`BODY_DEADLINE`]; then it gets 408 and is closed. One that
//! goes away (or half-closes) before its request is complete gets 400 there.
//!
//! A head over [`MAX_HEAD`], a chunked body, `Expect: 100-continue` or a declared body
//! over the limit is handed on as soon as the head is in: tiny_http and the hook
//! server's slow workers answer those (413, or a body deadline of their own).

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;

use tokio::net::{TcpListener, TcpStream};

use crate::serve::http::{BODY_DEADLINE, MAX_BODY};
use crate::state::metrics::{HookRoute, Metrics};

/// The longest request head waited for; a longer one is handed on at once.
pub const MAX_HEAD: usize = 16 * 1024;
/// After a failed accept (out of descriptors), before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How much of `buf` (a connection's first bytes) must arrive before the first request
/// can be handed on: `None` while the head is incomplete; then the head, plus the body
/// when its length is declared and within [`MAX_BODY`] and no `Expect` waits for an
/// answer first. Pure.
pub fn first_request_len(buf: &[u8]) -> Option<usize> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (buf.len() >= MAX_HEAD).then_some(buf.len());
    };
    let head_len = end + 4;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut body = 0;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("expect") || name.eq_ignore_ascii_case("transfer-encoding") {
            return Some(head_len);
        }
        if name.eq_ignore_ascii_case("content-length") {
            match value.trim().parse::<usize>() {
                Ok(n) if n <= MAX_BODY => body = n,
                _ => return Some(head_len),
            }
        }
    }
    Some(head_len + body)
}

/// Accepts `listener`'s connections for the hook server listening at `inner` until the
/// runtime ends.
pub async fn run(listener: TcpListener, inner: SocketAddr, metrics: Arc<Metrics>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                let _ = client.set_nodelay(true);
                tokio::spawn(serve(client, inner, metrics.clone()));
            }
            Err(e) => {
                log::warn!("hook port: cannot accept a connection: {e}");
                tokio::time::sleep(ACCEPT_PAUSE).await;
            }
        }
    }
}

/// Waits for `client`'s first request, then relays it and the rest of the connection
/// to the hook server.
async fn serve(mut client: TcpStream, inner: SocketAddr, metrics: Arc<Metrics>) {
    let deadline = tokio::time::Instant::now() + BODY_DEADLINE;
    let mut buf = Vec::new();
    while first_request_len(&buf).is_none_or(|n| buf.len() < n) {
        match tokio::time::timeout_at(deadline, read_some(&client, &mut buf)).await {
            Err(_) => {
                let why = format!("request not received within {}s", BODY_DEADLINE.as_secs());
                log::warn!("hook connection: 408 {why}");
                return refuse(client, 408, "Request Timeout", &why, &metrics).await;
            }
            Ok(Ok(0)) | Ok(Err(_)) if buf.is_empty() => return,
            // Gone or half-closed: a thread of the hook server would only find out the same.
            Ok(Ok(0)) | Ok(Err(_)) => {
                let why = "the request ended before it was complete";
                log::debug!("hook connection: 400 {why}");
                return refuse(client, 400, "Bad Request", why, &metrics).await;
            }
            Ok(Ok(_)) => {}
        }
    }
    let mut hooks = match TcpStream::connect(inner).await {
        Ok(s) => s,
        Err(e) => {
            log::error!("hook port: cannot reach the hook server's threads at {inner}: {e}");
            return;
        }
    };
    let _ = hooks.set_nodelay(true);
    if hooks.write_all(&buf).await.is_err() {
        return;
    }
    drop(buf);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut hooks).await;
}

/// Appends what `client` sent next to `buf`; 0 at end of stream. The read buffer
/// lives only between two waits, so a waiting connection holds just what it sent.
async fn read_some(client: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    loop {
        client.readable().await?;
        let mut chunk = [0u8; 8192];
        match client.try_read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Answers `status` to a client whose first request did not arrive in full, counted
/// as the hook server counts its own errors (the caller logs it).
async fn refuse(mut client: TcpStream, status: u16, text: &str, why: &str, metrics: &Metrics) {
    metrics
        .hook_requests_total
        .inc((HookRoute::Unknown, status));
    let body = serde_json::json!({ "error": why }).to_string();
    let reply = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(BODY_DEADLINE, client.write_all(reply.as_bytes())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_complete_with_its_head_and_declared_body() {
        let head = b"POST /get_state HTTP/1.1\r\nHost: x\r\ncontent-length: 2\r\n\r\n";
        assert_eq!(first_request_len(&head[..20]), None);
        let mut full = head.to_vec();
        assert_eq!(first_request_len(&full), Some(head.len() + 2));
        full.extend_from_slice(b"{}");
        assert_eq!(first_request_len(&full), Some(full.len()));
        let get = b"GET /get_settings HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(first_request_len(get), Some(get.len()));
    }

    #[test]
    fn what_tiny_http_answers_itself_is_handed_on_with_the_head() {
        for extra in [
            "Transfer-Encoding: chunked",
            "Expect: 100-continue\r\nContent-Length: 5",
            "Content-Length: 99999999",
            "Content-Length: nonsense",
        ] {
            let head = format!("POST /get_state HTTP/1.1\r\n{extra}\r\n\r\n");
            assert_eq!(
                first_request_len(head.as_bytes()),
                Some(head.len()),
                "{extra}"
            );
        }
        let long = vec![b'a'; MAX_HEAD];
        assert_eq!(first_request_len(&long), Some(MAX_HEAD));
    }
}
