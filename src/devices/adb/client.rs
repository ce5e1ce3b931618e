//! An async client of the adb server's host protocol: one TCP connection per request,
//! no adb process per query.
//!
//! It owns the sockets and the deadlines (every connect and every read has one) and
//! nothing else: framing lives in `proto`, and what the replies mean lives in `parse`.
//! A `FAIL` from the server becomes [`ErrorKind::Fail`] with the server's message and
//! the serial it was about, so callers branch on the kind and never on text.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::proto::{self, Decode, Status};
use crate::state::metrics::InterrogationErrorKind;

#[cfg(test)]
pub(crate) mod fake;
mod reading;
pub(crate) mod replay;
mod session;

use reading::{collect, Collected};
pub use reading::{End, Partial, Tracker};
pub use session::Session;

/// The most a shell command may print (stdout and stderr together). A phone that
/// floods us costs a bounded amount of memory: a few times this while its output is
/// collected and split. A round's whole script prints about 60 KB on a phone with a
/// thousand properties, so this is room for any real phone, and sixteen phones that
/// flood at once cost tens of MB of a Pi's memory, not hundreds.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// The least free room a read offers. `Vec::reserve` doubles past it, so a long
/// output takes few reads.
const READ_ROOM: usize = 4096;

/// What went wrong, for callers to branch on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server could not be reached (not listening, refused).
    Connect,
    /// A connect or read took longer than its deadline.
    Timeout,
    /// The server answered `FAIL` with this message.
    Fail { message: String },
    /// The bytes made no sense, or a reply was larger than allowed.
    Protocol,
    /// The connection broke mid-reply.
    Io,
}

/// A failed request, with what was asked and of which phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    /// The service requested (`host:version`, `shell,v2,raw:getprop`, ...).
    pub request: String,
    pub serial: Option<String>,
    /// Details for the log (the OS error, the protocol problem).
    pub detail: String,
    /// The server had sent bytes on this request's connection before it failed: it
    /// answers, whatever went wrong after (the phone, the deadline).
    pub server_spoke: bool,
}

impl Error {
    fn new(
        kind: ErrorKind,
        request: &str,
        serial: Option<&str>,
        detail: impl Into<String>,
    ) -> Self {
        Error {
            kind,
            request: request.to_string(),
            serial: serial.map(str::to_string),
            detail: detail.into(),
            server_spoke: false,
        }
    }

    /// A caller's own deadline ran out on `request` (the client's per-read deadlines
    /// report themselves).
    pub fn timed_out(request: &str, serial: &str) -> Self {
        Error::new(
            ErrorKind::Timeout,
            request,
            Some(serial),
            "(the caller's deadline)",
        )
    }

    /// The `kind` label of `interrogation_errors_total`.
    pub fn metric_kind(&self) -> InterrogationErrorKind {
        match self.kind {
            ErrorKind::Connect => InterrogationErrorKind::AdbConnect,
            ErrorKind::Timeout => InterrogationErrorKind::Timeout,
            ErrorKind::Fail { .. } => InterrogationErrorKind::AdbFail,
            ErrorKind::Protocol => InterrogationErrorKind::AdbProtocol,
            ErrorKind::Io => InterrogationErrorKind::AdbIo,
        }
    }
}

impl Error {
    /// What went wrong, without the request and the serial: short enough for a reason
    /// that Swarming shows (a round's request is its whole script).
    pub fn what_happened(&self) -> String {
        match &self.kind {
            ErrorKind::Connect => format!("cannot reach the adb server: {}", self.detail),
            ErrorKind::Timeout => format!("timed out {}", self.detail),
            ErrorKind::Fail { message } => format!("the server said FAIL: {message}"),
            ErrorKind::Protocol => format!("bad reply: {}", self.detail),
            ErrorKind::Io => self.detail.clone(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let serial = self
            .serial
            .as_deref()
            .map(|s| format!(" on {s}"))
            .unwrap_or_default();
        match &self.kind {
            ErrorKind::Connect => write!(
                f,
                "adb {}{serial}: cannot reach the adb server: {}",
                self.request, self.detail
            ),
            ErrorKind::Timeout => {
                write!(f, "adb {}{serial}: timed out {}", self.request, self.detail)
            }
            ErrorKind::Fail { message } => {
                write!(
                    f,
                    "adb {}{serial}: server said FAIL: {message}",
                    self.request
                )
            }
            ErrorKind::Protocol => {
                write!(
                    f,
                    "adb {}{serial}: bad reply: {}",
                    self.request, self.detail
                )
            }
            ErrorKind::Io => write!(f, "adb {}{serial}: {}", self.request, self.detail),
        }
    }
}

impl std::error::Error for Error {}

/// How to run a shell command on a phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShellProtocol {
    /// `shell,v2,raw:`: separate stdout and stderr, and an exit code (Android 7+).
    V2,
    /// `shell:`: merged output, no exit code, CRLF line ends on Android 6 and older.
    V1,
}

impl ShellProtocol {
    /// V2 when the phone's features list `shell_v2`.
    pub fn from_features(features: &str) -> ShellProtocol {
        if features.split(',').any(|f| f.trim() == "shell_v2") {
            ShellProtocol::V2
        } else {
            ShellProtocol::V1
        }
    }
}

/// A finished shell command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellOutput {
    /// Stdout (for V1, everything the command printed), with CRLF normalised for V1.
    pub stdout: String,
    /// Empty for V1, where stderr is merged into stdout.
    pub stderr: String,
    /// `None` for V1, which has no exit code.
    pub exit_code: Option<u8>,
}

/// Talks to one adb server. Cheap to clone; holds no connection between requests.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    /// Deadline of each connect and each read.
    io_timeout: Duration,
}

/// How long a read may wait.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// Each read, this long (the client's I/O deadline).
    Each(Duration),
    /// Until this instant, however many reads that takes (a caller's deadline).
    Until(tokio::time::Instant),
    /// As long as it takes: the device list only speaks when something changes.
    Forever,
}

/// One request's connection, with the bytes read but not yet used. The stream is a
/// socket, except in [`replay`], where it is in-memory bytes.
struct Conn<S = TcpStream> {
    stream: S,
    buf: Vec<u8>,
    /// The client's deadline of each read and write.
    io_timeout: Duration,
    request: String,
    serial: Option<String>,
    /// Whether any byte has come back yet (see [`Error::server_spoke`]).
    heard: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn err(&self, kind: ErrorKind, detail: impl Into<String>) -> Error {
        Error {
            server_spoke: self.heard,
            ..Error::new(kind, &self.request, self.serial.as_deref(), detail)
        }
    }

    async fn send(&mut self, payload: &str) -> Result<(), Error> {
        self.request = payload.to_string();
        let frame = proto::encode_request(payload)
            .map_err(|e| self.err(ErrorKind::Protocol, e.to_string()))?;
        let written = timeout(self.io_timeout, self.stream.write_all(&frame)).await;
        match written {
            Err(_) => Err(self.err(ErrorKind::Timeout, "sending the request")),
            Ok(Err(e)) => Err(self.err(ErrorKind::Io, format!("sending the request: {e}"))),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self, wait: Wait) -> Result<bool, Error> {
        if self.buf.len() > MAX_OUTPUT + 64 {
            return Err(self.err(
                ErrorKind::Protocol,
                format!("reply larger than {MAX_OUTPUT} bytes"),
            ));
        }
        // Straight into the buffer's spare room: a zeroed array per read cost a
        // round more than its parsing, and, held across the await, made every
        // shell future 16 KiB larger (an allocation per phone per round).
        self.buf.reserve(READ_ROOM);
        let read = self.stream.read_buf(&mut self.buf);
        let n = match wait {
            Wait::Each(d) => match timeout(d, read).await {
                Err(_) => {
                    return Err(self.err(
                        ErrorKind::Timeout,
                        format!("after {d:?} waiting for the reply"),
                    ))
                }
                Ok(r) => r,
            },
            Wait::Until(t) => match tokio::time::timeout_at(t, read).await {
                Err(_) => return Err(self.err(ErrorKind::Timeout, "(the caller's deadline)")),
                Ok(r) => r,
            },
            Wait::Forever => read.await,
        }
        .map_err(|e| self.err(ErrorKind::Io, format!("reading the reply: {e}")))?;
        self.heard |= n > 0;
        Ok(n > 0)
    }

    async fn decode<T>(
        &mut self,
        wait: Wait,
        what: &str,
        f: impl Fn(&[u8]) -> Result<Decode<T>, proto::ProtoError>,
    ) -> Result<T, Error> {
        loop {
            match f(&self.buf) {
                Ok(Decode::Done(v, used)) => {
                    self.buf.drain(..used);
                    return Ok(v);
                }
                Ok(Decode::Incomplete) => {
                    if !self.fill(wait).await? {
                        return Err(self.err(
                            ErrorKind::Io,
                            format!("connection closed in the middle of {what}"),
                        ));
                    }
                }
                Err(e) => return Err(self.err(ErrorKind::Protocol, e.to_string())),
            }
        }
    }

    /// `OKAY`, or the server's `FAIL` as an error.
    async fn expect_okay(&mut self) -> Result<(), Error> {
        match self
            .decode(
                Wait::Each(self.io_timeout),
                "the status",
                proto::decode_status,
            )
            .await?
        {
            Status::Okay => Ok(()),
            Status::Fail(message) => Err(self.err(ErrorKind::Fail { message }, "")),
        }
    }

    async fn read_length_prefixed(&mut self, wait: Wait) -> Result<String, Error> {
        let data = self
            .decode(wait, "a length-prefixed reply", |b| {
                proto::decode_length_prefixed(b).map(|d| match d {
                    Decode::Done(v, n) => Decode::Done(v.to_vec(), n),
                    Decode::Incomplete => Decode::Incomplete,
                })
            })
            .await?;
        Ok(String::from_utf8_lossy(&data).into_owned())
    }

    /// Everything until the other side closes, bounded by [`MAX_OUTPUT`]. On an error
    /// what arrived stays in `buf`.
    async fn read_to_end(&mut self, wait: Wait) -> Result<Vec<u8>, Error> {
        while self.fill(wait).await? {}
        Ok(std::mem::take(&mut self.buf))
    }
}

impl Client {
    pub fn new(addr: SocketAddr, io_timeout: Duration) -> Client {
        Client { addr, io_timeout }
    }

    async fn connect(&self, serial: Option<&str>, first: &str) -> Result<Conn, Error> {
        let stream = match timeout(self.io_timeout, TcpStream::connect(self.addr)).await {
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    first,
                    serial,
                    format!("connecting to {}", self.addr),
                ))
            }
            Ok(Err(e)) => {
                return Err(Error::new(
                    ErrorKind::Connect,
                    first,
                    serial,
                    format!("{}: {e}", self.addr),
                ))
            }
            Ok(Ok(s)) => s,
        };
        // Requests are small and replies are awaited: Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: Vec::new(),
            io_timeout: self.io_timeout,
            request: first.to_string(),
            serial: serial.map(str::to_string),
            heard: false,
        })
    }

    /// A host request whose `OKAY` is followed by one length-prefixed string.
    async fn host_query(&self, serial: Option<&str>, request: &str) -> Result<String, Error> {
        let mut conn = self.connect(serial, request).await?;
        conn.send(request).await?;
        conn.expect_okay().await?;
        conn.read_length_prefixed(Wait::Each(self.io_timeout)).await
    }

    /// A host request whose `OKAY` may be followed by a message we do not need.
    async fn host_command(&self, serial: Option<&str>, request: &str) -> Result<(), Error> {
        let mut conn = self.connect(serial, request).await?;
        conn.send(request).await?;
        conn.expect_okay().await?;
        conn.read_to_end(Wait::Each(self.io_timeout))
            .await
            .map(drop)
    }

    /// `host:version`: the server's protocol version (41 for adb 29).
    pub async fn version(&self) -> Result<u32, Error> {
        let text = self.host_query(None, "host:version").await?;
        u32::from_str_radix(text.trim(), 16).map_err(|_| {
            Error::new(
                ErrorKind::Protocol,
                "host:version",
                None,
                format!("expected a hex version, got {text:?}"),
            )
        })
    }

    /// `host:devices-l`: the device list once, for a one-shot look. A list that does not
    /// parse is a protocol error.
    pub async fn devices(&self) -> Result<Vec<crate::devices::parse::devices_l::Listed>, Error> {
        let text = self.devices_text().await?;
        crate::devices::parse::devices_l::parse(&text)
            .map_err(|e| Error::new(ErrorKind::Protocol, "host:devices-l", None, e.to_string()))
    }

    /// `host:devices-l` as the server wrote it, in the tracker's format.
    pub async fn devices_text(&self) -> Result<String, Error> {
        self.host_query(None, "host:devices-l").await
    }

    /// `host:track-devices-l`: the full list now and again on every change.
    pub async fn track_devices(&self) -> Result<Tracker, Error> {
        let request = "host:track-devices-l";
        let mut conn = self.connect(None, request).await?;
        conn.send(request).await?;
        conn.expect_okay().await?;
        Ok(Tracker { conn })
    }

    /// `host-serial:<serial>:features`: the phone's comma list of features.
    pub async fn features(&self, serial: &str) -> Result<String, Error> {
        self.host_query(Some(serial), &format!("host-serial:{serial}:features"))
            .await
    }

    /// `host:reconnect-offline`: resets every transport that is not online.
    pub async fn reconnect_offline(&self) -> Result<(), Error> {
        self.host_command(None, "host:reconnect-offline").await
    }

    /// `host:connect:<host:port>` (`adb connect`): the server's own words, which say
    /// whether it connected (`connected to ...`, `already connected to ...`) or not.
    pub async fn connect_device(&self, serial: &str) -> Result<String, Error> {
        self.host_query(Some(serial), &format!("host:connect:{serial}"))
            .await
    }

    /// `host:kill`: the server exits (its supervisor starts it again).
    pub async fn kill_server(&self) -> Result<(), Error> {
        self.host_command(None, "host:kill").await
    }

    /// `host-serial:<serial>:reconnect`: kicks one phone's transport.
    pub async fn reconnect(&self, serial: &str) -> Result<(), Error> {
        self.host_command(Some(serial), &format!("host-serial:{serial}:reconnect"))
            .await
    }

    /// Switches a new connection to `serial` and opens `service` on it.
    async fn open(&self, serial: &str, service: &str) -> Result<Conn, Error> {
        let transport = format!("host:transport:{serial}");
        let mut conn = self.connect(Some(serial), &transport).await?;
        conn.send(&transport).await?;
        conn.expect_okay().await?;
        conn.send(service).await?;
        conn.expect_okay().await?;
        Ok(conn)
    }

    /// `reboot:` on `serial`. Returns once the phone accepted; the link drops after.
    pub async fn reboot(&self, serial: &str) -> Result<(), Error> {
        self.open(serial, "reboot:").await.map(drop)
    }

    /// Runs `cmd` on `serial` and collects its output (at most [`MAX_OUTPUT`]).
    pub async fn shell(
        &self,
        serial: &str,
        cmd: &str,
        protocol: ShellProtocol,
    ) -> Result<ShellOutput, Error> {
        let mut conn = self.start_shell(serial, cmd, protocol).await?;
        let mut got = Collected::default();
        collect(&mut conn, protocol, Wait::Each(self.io_timeout), &mut got).await?;
        Ok(got.output(protocol))
    }

    /// Like [`Client::shell`], but reads only until `until`, or until the output is
    /// over [`MAX_OUTPUT`], and then returns what the command printed so far and which
    /// of those ended it. For a script whose output is useful in part (see
    /// `parse::batch`).
    pub async fn shell_until(
        &self,
        serial: &str,
        cmd: &str,
        protocol: ShellProtocol,
        until: tokio::time::Instant,
    ) -> Result<Partial, Error> {
        let mut conn = self.start_shell(serial, cmd, protocol).await?;
        let mut got = Collected::default();
        let end = match collect(&mut conn, protocol, Wait::Until(until), &mut got).await {
            Ok(()) => End::Finished,
            Err(e) if e.kind == ErrorKind::Timeout => End::Deadline,
            Err(_) if got.len() > MAX_OUTPUT => End::OverLimit,
            Err(e) => return Err(e),
        };
        Ok(Partial {
            output: got.output(protocol),
            end,
        })
    }

    /// Opens the shell service for `cmd`; for V2, also closes its stdin (no command of
    /// ours reads input, and some wait for it).
    async fn start_shell(
        &self,
        serial: &str,
        cmd: &str,
        protocol: ShellProtocol,
    ) -> Result<Conn, Error> {
        match protocol {
            ShellProtocol::V2 => {
                let mut conn = self.open(serial, &format!("shell,v2,raw:{cmd}")).await?;
                let sent =
                    timeout(self.io_timeout, conn.stream.write_all(&proto::CLOSE_STDIN)).await;
                match sent {
                    Err(_) => Err(conn.err(ErrorKind::Timeout, "closing stdin")),
                    Ok(Err(e)) => Err(conn.err(ErrorKind::Io, format!("closing stdin: {e}"))),
                    Ok(Ok(())) => Ok(conn),
                }
            }
            ShellProtocol::V1 => self.open(serial, &format!("shell:{cmd}")).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-shot fake server: accepts one connection, reads `expect`, writes `reply`,
    /// then closes (or keeps the socket open when `hang`).
    async fn fake(expect: &'static [u8], reply: &'static [u8], hang: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; expect.len()];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(got, expect);
            s.write_all(reply).await.unwrap();
            if hang {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        });
        addr
    }

    fn client(addr: SocketAddr) -> Client {
        Client::new(addr, Duration::from_millis(300))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn version_is_hex() {
        let addr = fake(b"000chost:version", b"OKAY00040029", false).await;
        assert_eq!(client(addr).version().await.unwrap(), 41);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn fail_carries_message_and_serial() {
        let addr = fake(
            b"0018host-serial:ABC:features",
            b"FAIL000edevice offline",
            false,
        )
        .await;
        let e = client(addr).features("ABC").await.unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Fail {
                message: "device offline".into()
            }
        );
        assert_eq!(e.serial.as_deref(), Some("ABC"));
        assert!(e.to_string().contains("device offline"), "{e}");
        assert!(e.server_spoke, "FAIL is an answer");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_silent_server_times_out() {
        let addr = fake(b"000chost:version", b"", true).await;
        let e = client(addr).version().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert!(
            !e.server_spoke,
            "a silent server is not taken for one that answers"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_closed_port_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = client(addr).version().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Connect);
        assert_eq!(e.metric_kind().as_str(), "adb_connect");
        assert!(!e.server_spoke);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn garbage_is_a_protocol_error() {
        let addr = fake(b"000chost:version", b"HTTP/1.1 400", false).await;
        let e = client(addr).version().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn truncated_reply_is_an_io_error() {
        let addr = fake(b"000chost:version", b"OKAY0004002", false).await;
        let e = client(addr).version().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Io);
        assert!(e.server_spoke);
    }

    /// A fake phone behind a fake server: answers the transport switch and the shell
    /// service with OKAY, swallows the rest of the request, writes `reply` and then
    /// keeps the socket open (`hang`) or closes it.
    async fn fake_shell(reply: &'static [u8], hang: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            fake::open_shell(&mut s).await;
            s.write_all(reply).await.unwrap();
            if hang {
                let mut rest = [0u8; 64];
                while s.read(&mut rest).await.unwrap_or(0) > 0 {}
            }
        });
        addr
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shell_until_keeps_what_came_before_the_deadline() {
        let addr = fake_shell(b"\x01\x06\x00\x00\x00early\n\x01\x02\x00", true).await;
        let until = tokio::time::Instant::now() + Duration::from_millis(200);
        let got = Client::new(addr, Duration::from_secs(5))
            .shell_until("S1", "script", ShellProtocol::V2, until)
            .await
            .unwrap();
        assert_eq!(got.end, End::Deadline);
        assert_eq!(got.output.stdout, "early\n");
        assert_eq!(got.output.exit_code, None);
        assert!(tokio::time::Instant::now() < until + Duration::from_secs(1));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shell_until_v1_normalises_a_partial_output() {
        let addr = fake_shell(b"a\r\nb\r\npart", true).await;
        let until = tokio::time::Instant::now() + Duration::from_millis(200);
        let got = Client::new(addr, Duration::from_secs(5))
            .shell_until("S1", "script", ShellProtocol::V1, until)
            .await
            .unwrap();
        assert_eq!(got.end, End::Deadline);
        assert_eq!(got.output.stdout, "a\nb\npart");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shell_until_a_finished_command_is_finished() {
        let addr = fake_shell(b"\x01\x03\x00\x00\x00hi\n\x03\x01\x00\x00\x00\x00", false).await;
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        let got = client(addr)
            .shell_until("S1", "script", ShellProtocol::V2, until)
            .await
            .unwrap();
        assert_eq!(got.end, End::Finished);
        assert_eq!(got.output.stdout, "hi\n");
        assert_eq!(got.output.exit_code, Some(0));
        // A stream that breaks before the exit code is an error, not a partial output.
        let addr = fake_shell(b"\x01\x03\x00\x00\x00hi\n", false).await;
        let e = client(addr)
            .shell_until("S1", "script", ShellProtocol::V2, until)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Io);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shell_until_stops_reading_a_flood_at_the_limit() {
        let mut flood = Vec::new();
        for _ in 0..5 {
            flood.extend_from_slice(&[1, 0, 0, 0x10, 0]);
            flood.extend(std::iter::repeat_n(b'x', 1 << 20));
        }
        let addr = fake_shell(Vec::leak(flood), true).await;
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        let got = client(addr)
            .shell_until("S1", "getprop", ShellProtocol::V2, until)
            .await
            .unwrap();
        assert_eq!(got.end, End::OverLimit);
        let n = got.output.stdout.len();
        assert!(n > MAX_OUTPUT && n <= MAX_OUTPUT + (1 << 20), "{n}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shell_v2_collects_streams_and_exit_code() {
        // Two requests on one socket: the transport switch, then the service.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; 4 + 17];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"0011host:transport:S1");
            s.write_all(b"OKAY").await.unwrap();
            let mut got = vec![0u8; 4 + 17];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"0011shell,v2,raw:echo");
            s.write_all(b"OKAY").await.unwrap();
            let mut got = [0u8; 5];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(got, proto::CLOSE_STDIN);
            s.write_all(b"\x01\x03\x00\x00\x00hi\n\x02\x01\x00\x00\x00!\x03\x01\x00\x00\x00\x02")
                .await
                .unwrap();
        });
        let out = client(addr)
            .shell("S1", "echo", ShellProtocol::V2)
            .await
            .unwrap();
        assert_eq!(
            out,
            ShellOutput {
                stdout: "hi\n".into(),
                stderr: "!".into(),
                exit_code: Some(2)
            }
        );
    }

    #[test]
    fn shell_v2_only_when_listed() {
        assert_eq!(
            ShellProtocol::from_features("cmd,shell_v2,stat_v2"),
            ShellProtocol::V2
        );
        assert_eq!(
            ShellProtocol::from_features("cmd,stat_v2"),
            ShellProtocol::V1
        );
        assert_eq!(ShellProtocol::from_features(""), ShellProtocol::V1);
    }
}
