//! The hook server's threads, on a loopback port of their own behind the front door
//! that listens on `--hook-addr` (`hook_front`): they read each request, have
//! [`Hooks::handle`] answer it, and count and log it.
//!
//! The transport: tiny_http reads a request's headers, and bodies of at most 1 KiB,
//! on its own connection threads; a larger or chunked body is read from the socket by
//! whoever handles (or drops) the request, and tiny_http 0.12 offers no socket timeout
//! (one set on the listener also times out `accept`, which ends its accept loop). So
//! [`WORKERS`] threads answer requests whose body is already in memory (the dimensions
//! and the `on_*` calls), and pass the others (a full bot state is often over 1 KiB)
//! to [`SLOW_WORKERS`] threads that read with an overall deadline ([`BODY_DEADLINE`])
//! against dribbling clients.
//! A connection reaches these threads only once `hook_front` has its first request in
//! full, so a client that stalls before that costs no thread here; one that stalls on
//! a later request of a kept-alive connection, or mid-way through a chunked body,
//! holds a connection thread, or one slow worker, until it goes away, and delays only
//! other large-body requests. Known limit: tiny_http drains an unread over-long
//! body when the request is dropped, with a buffer the size of what is left; the
//! server is loopback-only and the script never sends more than 1 MiB.
//!
//! This module must not block on anything but its own sockets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Instant, SystemTime};

use crate::serve::caller::BOT_HEADER;
use crate::serve::hooks::{Context, Hooks, Route};
use crate::serve::http::{body_is_buffered, read_body, send, BODY_DEADLINE};
use crate::state::metrics::HookRoute;

/// Threads answering requests. The bot calls one hook at a time; the rest is slack for
/// stalled clients and scrapers of the wrong port.
pub const WORKERS: usize = 4;
/// Threads reading bodies that tiny_http has not buffered (see [`body_is_buffered`]).
pub const SLOW_WORKERS: usize = 4;

/// Reads, answers, counts and logs one request.
fn serve_one(ctx: &Context, hooks: &Hooks, mut request: tiny_http::Request) {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let url = request.url().to_string();
    let route = Route::from_path(url.split('?').next().unwrap_or(&url));
    let body = match route {
        Some(r) if r.allows(&method) && r.reads_body() => {
            read_body(&mut request, started + BODY_DEADLINE)
        }
        _ => Ok(Vec::new()),
    };
    let reply = match body {
        Ok(body) => {
            let bot = request
                .headers()
                .iter()
                .find(|h| h.field.equiv(BOT_HEADER))
                .map(|h| h.value.as_str().to_string());
            let call = (method.as_str(), url.as_str(), bot.as_deref());
            hooks.handle(ctx, SystemTime::now(), call, &body)
        }
        Err(reply) => reply,
    };
    let label = route.map_or(HookRoute::Unknown, Route::label);
    let status = reply.status;
    ctx.metrics.hook_requests_total.inc((label, status));
    if status >= 400 {
        log::warn!("hook {method} {url}: {status} {}", reply.body);
    }
    // Dropping the request reads and discards any unread body (tiny_http does it).
    send(request, reply);
    let elapsed = started.elapsed();
    ctx.metrics
        .hook_request_duration_seconds
        .observe(label, elapsed);
    log::debug!(
        "hook {method} {url}: {status} in {:.3}ms",
        elapsed.as_secs_f64() * 1000.0
    );
}

/// The running hook server. Only the fast workers are joined on stop: a slow worker
/// may be blocked on a silent client, and the process is exiting anyway.
pub struct HookServer {
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    workers: Vec<thread::JoinHandle<()>>,
}

impl HookServer {
    /// Stops the fast workers, each after the request it is answering; the slow
    /// workers end once their queue closes.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        for _ in &self.workers {
            self.server.unblock();
        }
        for w in self.workers {
            let _ = w.join();
        }
    }
}

type SlowQueue = Arc<Mutex<mpsc::Receiver<tiny_http::Request>>>;

fn spawn_slow_worker(
    i: usize,
    queue: SlowQueue,
    ctx: Arc<Context>,
    hooks: Arc<Hooks>,
) -> std::io::Result<()> {
    thread::Builder::new()
        .name(format!("hooks-slow-{i}"))
        .spawn(move || loop {
            // The lock is only held while waiting for the next request, never while
            // serving one.
            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
            match next {
                Ok(request) => serve_one(&ctx, &hooks, request),
                Err(_) => return,
            }
        })
        .map(|_| ())
}

/// Serves the hooks on `server`: [`WORKERS`] threads answer requests whose body is
/// already in memory, and hand the others to
/// [`SLOW_WORKERS`] threads, so a client that stalls mid-body only delays other
/// clients with large bodies.
pub fn start(
    ctx: Arc<Context>,
    hooks: Hooks,
    server: tiny_http::Server,
) -> std::io::Result<HookServer> {
    let server = Arc::new(server);
    let hooks = Arc::new(hooks);
    let stopping = Arc::new(AtomicBool::new(false));
    let (slow_tx, slow_rx) = mpsc::channel::<tiny_http::Request>();
    let slow_rx: SlowQueue = Arc::new(Mutex::new(slow_rx));
    for i in 0..SLOW_WORKERS {
        spawn_slow_worker(i, slow_rx.clone(), ctx.clone(), hooks.clone())?;
    }
    let mut workers = Vec::with_capacity(WORKERS);
    for i in 0..WORKERS {
        let worker_server = server.clone();
        let worker_hooks = hooks.clone();
        let worker_ctx = ctx.clone();
        let worker_stopping = stopping.clone();
        let slow = slow_tx.clone();
        let worker = thread::Builder::new()
            .name(format!("hooks-{i}"))
            .spawn(move || loop {
                match worker_server.recv() {
                    Ok(request) if body_is_buffered(&request) => {
                        serve_one(&worker_ctx, &worker_hooks, request)
                    }
                    Ok(request) => {
                        if let Err(mpsc::SendError(request)) = slow.send(request) {
                            serve_one(&worker_ctx, &worker_hooks, request);
                        }
                    }
                    Err(e) => {
                        if !worker_stopping.load(Ordering::Acquire) {
                            log::error!("hook server stopped accepting connections: {e}");
                        }
                        return;
                    }
                }
            });
        match worker {
            Ok(w) => workers.push(w),
            Err(e) => {
                HookServer {
                    server,
                    stopping,
                    workers,
                }
                .stop();
                return Err(e);
            }
        }
    }
    Ok(HookServer {
        server,
        stopping,
        workers,
    })
}
