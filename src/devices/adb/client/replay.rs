//! A request's reading over any byte stream instead of a socket, for the fuzz targets
//! (`crate::fuzzing`): in-memory bytes go through exactly the decoding, the limits and
//! the errors that a server's bytes go through. The deadlines are the client's usual
//! ones; a stream that is always ready never meets them.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::reading::{collect, Collected};
use super::{Client, Conn, Error, ShellOutput, ShellProtocol, Wait};

fn client() -> Client {
    Client::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Duration::from_secs(5),
    )
}

fn conn<S>(client: &Client, stream: S, request: &str) -> Conn<S> {
    Conn {
        stream,
        buf: Vec::new(),
        io_timeout: client.io_timeout,
        request: request.to_string(),
        serial: None,
        heard: false,
    }
}

/// A host request's reply, read as a query reads it (`OKAY` or `FAIL`, then a
/// length-prefixed string) and then as the tracker goes on reading (one
/// length-prefixed device list after another): each read's outcome in order, up to
/// and with the first error (the end of the stream is one).
pub(crate) async fn host<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
) -> Vec<Result<String, Error>> {
    let client = client();
    let mut conn = conn(&client, stream, "host:track-devices-l");
    if let Err(e) = conn.expect_okay().await {
        return vec![Err(e)];
    }
    let mut out = Vec::new();
    loop {
        let wait = match out.len() {
            0 => Wait::Each(client.io_timeout),
            _ => Wait::Forever,
        };
        let read = conn.read_length_prefixed(wait).await;
        let end = read.is_err();
        out.push(read);
        if end {
            return out;
        }
    }
}

/// A shell service's stream after its `OKAY`, collected as [`Client::shell`]
/// collects it: how the collection ended, and the output as the caller gets it.
pub(crate) async fn shell<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    protocol: ShellProtocol,
) -> (Result<(), Error>, ShellOutput) {
    let client = client();
    let mut conn = conn(&client, stream, "shell,v2,raw:script");
    let mut got = Collected::default();
    let ended = collect(&mut conn, protocol, Wait::Each(client.io_timeout), &mut got).await;
    (ended, got.output(protocol))
}
