//! The reading of a request's stream once the adb server said `OKAY`: a shell
//! command's output (v1: the bytes until the phone closes; v2: packets until the exit
//! code), bounded by [`MAX_OUTPUT`], and the device list the tracker follows.

use tokio::io::{AsyncRead, AsyncWrite};

use super::proto::{self, Decode, PacketId};
use super::{Conn, Error, ErrorKind, ShellOutput, ShellProtocol, Wait, MAX_OUTPUT};

/// A shell command's output up to a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    pub output: ShellOutput,
    pub end: End,
}

/// What ended the reading of a shell command's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The command ended (V2: its exit code came; V1: the phone closed the stream).
    Finished,
    /// The caller's deadline came first.
    Deadline,
    /// It printed more than [`MAX_OUTPUT`](super::MAX_OUTPUT) bytes; the connection was dropped there.
    OverLimit,
}

/// A shell command's bytes so far.
#[derive(Default)]
pub(super) struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit_code: Option<u8>,
}

impl Collected {
    pub(super) fn len(&self) -> usize {
        self.stdout.len() + self.stderr.len()
    }

    pub(super) fn output(self, protocol: ShellProtocol) -> ShellOutput {
        let stdout = text(self.stdout);
        ShellOutput {
            stdout: match protocol {
                ShellProtocol::V2 => stdout,
                ShellProtocol::V1 => proto::normalise_crlf(&stdout),
            },
            stderr: text(self.stderr),
            exit_code: self.exit_code,
        }
    }
}

/// The bytes as text, invalid UTF-8 replaced; copied only when some is invalid.
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Reads a shell stream into `got` until it ends; on an error, `got` keeps what arrived.
pub(super) async fn collect<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    protocol: ShellProtocol,
    wait: Wait,
    got: &mut Collected,
) -> Result<(), Error> {
    match protocol {
        ShellProtocol::V2 => read_v2(conn, wait, got, None).await.map(drop),
        ShellProtocol::V1 => match conn.read_to_end(wait).await {
            Ok(bytes) => {
                got.stdout = bytes;
                Ok(())
            }
            Err(e) => {
                got.stdout = std::mem::take(&mut conn.buf);
                Err(e)
            }
        },
    }
}

/// How a shell v2 stream's reading stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// The exit code came: the shell is gone.
    Exit,
    /// Stdout ended with the line the caller waited for; the shell reads on.
    Line,
}

/// Reads shell v2 packets into `got` until the exit code, or until stdout ends with
/// `line` (which is then taken off it).
pub(super) async fn read_v2<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    wait: Wait,
    got: &mut Collected,
    line: Option<&[u8]>,
) -> Result<Stop, Error> {
    loop {
        match take_packets(&mut conn.buf, got, line) {
            Ok(Some(stop)) => return Ok(stop),
            Ok(None) => {}
            Err(why) => return Err(conn.err(ErrorKind::Protocol, why)),
        }
        if !conn.fill(wait).await? {
            // Closed without an exit packet: the phone went away mid-command.
            let why = if conn.buf.is_empty() {
                "stream closed before the exit code"
            } else {
                "connection closed in the middle of a shell v2 packet"
            };
            return Err(conn.err(ErrorKind::Io, why));
        }
    }
}

/// Moves the whole shell v2 packets at the start of `buf` into `got`, without
/// waiting; `Some` once the exit code came or stdout ends with `line` (taken off it).
/// An error says why the bytes are not a shell's output.
pub(super) fn take_packets(
    buf: &mut Vec<u8>,
    got: &mut Collected,
    line: Option<&[u8]>,
) -> Result<Option<Stop>, String> {
    let mut used = 0;
    let stop = loop {
        let (id, data, n) = match proto::decode_packet(&buf[used..]) {
            Ok(Decode::Done((id, data), n)) => (id, data, n),
            Ok(Decode::Incomplete) => break None,
            Err(e) => return Err(e.to_string()),
        };
        used += n;
        match id {
            PacketId::Stdout => {
                got.stdout.extend_from_slice(data);
                if let Some(line) = line.filter(|l| got.stdout.ends_with(l)) {
                    got.stdout.truncate(got.stdout.len() - line.len());
                    break Some(Stop::Line);
                }
            }
            PacketId::Stderr => got.stderr.extend_from_slice(data),
            PacketId::Exit => {
                got.exit_code = Some(data.first().copied().unwrap_or(0));
                break Some(Stop::Exit);
            }
            PacketId::Stdin | PacketId::CloseStdin | PacketId::WindowSize => {}
        }
        if got.len() > MAX_OUTPUT {
            return Err(format!("output larger than {MAX_OUTPUT} bytes"));
        }
    };
    buf.drain(..used);
    Ok(stop)
}

/// The open `host:track-devices-l` connection.
pub struct Tracker {
    pub(super) conn: Conn,
}

impl Tracker {
    /// The next full device list. Waits as long as nothing changes; an error means the
    /// server went away (or spoke nonsense) and the caller should track again.
    pub async fn next(&mut self) -> Result<String, Error> {
        self.conn.read_length_prefixed(Wait::Forever).await
    }
}
