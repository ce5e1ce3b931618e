//! The floor for the hook server benchmark (ci/bench-hooks): a bare tiny_http server
//! that answers every request with a constant JSON body, with the same number of
//! worker threads as the hook server. Whatever the hook server costs above this is
//! ours; whatever this costs is tiny_http's.
//!
//! Usage: hook_floor ADDR [THREADS]   (default 127.0.0.1:11999, 4 threads)

use std::sync::Arc;

const BODY: &str = r#"{"id":["pi-bench"],"os":["Linux"]}"#;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:11999".into());
    let threads: usize = match args.next().map(|t| t.parse()) {
        None => 4,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("hook_floor: THREADS must be a positive whole number");
            std::process::exit(2);
        }
    };
    let server = match tiny_http::Server::http(&addr) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("hook_floor: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
        .expect("a constant, valid header");
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let server = server.clone();
            let header = header.clone();
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    let response =
                        tiny_http::Response::from_string(BODY).with_header(header.clone());
                    let _ = request.respond(response);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}
