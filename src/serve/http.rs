//! HTTP plumbing shared by the hook server and the status server: a [`Reply`] that the
//! routing functions return (so that routing is tested without sockets), sending it,
//! a tiny_http server on its own thread, and reading a request body within a size and a
//! time limit. tiny_http blocks, so all of this runs on plain threads, never inside the
//! runtime.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY: usize = 1024 * 1024;
/// How long a request body may take to arrive in full.
pub const BODY_DEADLINE: Duration = Duration::from_secs(5);

/// A response before it meets the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

pub fn json_reply(status: u16, body: &serde_json::Value) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: body.to_string(),
    }
}

pub fn error_reply(status: u16, error: impl Into<String>) -> Reply {
    json_reply(status, &serde_json::json!({ "error": error.into() }))
}

/// A bound tiny_http server on its own thread. Dropping the handle does not stop it;
/// call [`ServerHandle::stop`].
pub struct ServerHandle {
    server: Arc<tiny_http::Server>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ServerHandle {
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `handler` on `server` from a new thread named `name`.
pub fn serve(
    name: &str,
    server: tiny_http::Server,
    handler: impl Fn(tiny_http::Request) + Send + 'static,
) -> std::io::Result<ServerHandle> {
    let server = Arc::new(server);
    let accept = server.clone();
    let thread = thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            for request in accept.incoming_requests() {
                handler(request);
            }
        })?;
    Ok(ServerHandle {
        server,
        thread: Some(thread),
    })
}

/// Sends `reply`; a client that went away is only worth a debug line.
pub fn send(request: tiny_http::Request, reply: Reply) {
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], reply.content_type.as_bytes());
    let mut response = tiny_http::Response::from_string(reply.body).with_status_code(reply.status);
    if let Ok(h) = header {
        response.add_header(h);
    }
    if let Err(e) = request.respond(response) {
        log::debug!("client went away before the reply was sent: {e}");
    }
}

/// Whether tiny_http has already read the whole body into memory, so that reading it
/// cannot block. tiny_http (0.12) does so for a declared length of at most 1024 bytes
/// without `Expect: 100-continue`; an absent length without `Transfer-Encoding` means no
/// body. Anything else is read from the socket by whoever reads (or drops) the request.
pub fn body_is_buffered(request: &tiny_http::Request) -> bool {
    let has = |name: &'static str| request.headers().iter().any(|h| h.field.equiv(name));
    match request.body_length() {
        Some(len) => len <= 1024 && !has("Expect"),
        None => !has("Transfer-Encoding"),
    }
}

/// Reads the body: at most [`MAX_BODY`] + 1 bytes (so that `handle` sees it is too
/// long). A declared length over the limit is refused unread. `deadline` bounds a
/// client that dribbles; one that sends nothing at all blocks this thread until it
/// goes away, which is why only the slow workers call this on unbuffered bodies.
pub fn read_body(request: &mut tiny_http::Request, deadline: Instant) -> Result<Vec<u8>, Reply> {
    if let Some(len) = request.body_length() {
        if len > MAX_BODY {
            return Err(error_reply(
                413,
                format!("request body of {len} bytes is over the 1 MiB limit"),
            ));
        }
    }
    let cap = MAX_BODY + 1;
    let mut body = Vec::with_capacity(request.body_length().unwrap_or(0).min(cap));
    let reader = request.as_reader();
    let mut chunk = [0u8; 16 * 1024];
    while body.len() < cap {
        if Instant::now() > deadline {
            return Err(error_reply(
                408,
                format!(
                    "request body not received within {}s",
                    BODY_DEADLINE.as_secs()
                ),
            ));
        }
        let room = (cap - body.len()).min(chunk.len());
        match reader.read(&mut chunk[..room]) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(error_reply(400, format!("cannot read the body: {e}"))),
        }
    }
    Ok(body)
}
