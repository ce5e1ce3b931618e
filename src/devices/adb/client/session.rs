//! A phone's shell kept open from one round to the next (shell v2 only): each round's
//! script goes in on the shell's stdin, and its output is read until the line the
//! script prints last.
//!
//! Why: a round on a new connection costs a TCP connect and close on the adb server's
//! socket, a transport switch, a stream opened on the phone and a shell started there,
//! each with its wake-ups on both sides; on a kept-open shell it costs one write. A
//! connection was most of a round's CPU.
//!
//! A session is used only while it is known to be whole: it goes back to its owner only
//! after a round that ended on its line. A deadline, an output over the limit, an exit
//! or a broken stream end it (the connection is dropped, and with it the phone's
//! shell), and between rounds [`Session::usable`] notices one that the phone or the
//! server closed (a reboot, a restart), or that has served [`MAX_AGE`]: the next round
//! then opens a new one.

use std::io::{ErrorKind as IoKind, Read, Write};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::proto;
use super::reading::{read_v2, take_packets, Collected, Stop};
use super::{Client, Conn, End, Error, ErrorKind, Partial, ShellProtocol, Wait, MAX_OUTPUT};
use crate::runtime::clock::Alarm;

/// An open `shell,v2,raw:` stream with no command: the phone's shell, reading its
/// commands from stdin.
pub struct Session {
    /// Off the runtime's poll (a std socket) between rounds and while a round's output
    /// gathers; on it only while the rest of an output is awaited. Output that trails a
    /// round, or comes in many packets, wakes nothing until it is read.
    stream: std::net::TcpStream,
    /// Bytes read but not yet used.
    buf: Vec<u8>,
    io_timeout: Duration,
    serial: String,
    opened: Instant,
    /// How long to let the next round's output gather before reading it
    /// ([`next_wait`]).
    wait: Option<Duration>,
}

/// How long a session serves before the next round opens a new one. Tasks open new
/// streams: a phone whose adbd can no longer start one would otherwise look healthy
/// on its old shell for as long as that lasts.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// The request a session's errors name.
const SERVICE: &str = "shell,v2,raw:";

impl Client {
    /// Opens a shell on `serial` that reads its commands from stdin.
    pub async fn open_session(&self, serial: &str) -> Result<Session, Error> {
        let conn = self.open(serial, SERVICE).await?;
        let stream = conn.stream.into_std().map_err(|e| {
            Error::new(
                ErrorKind::Io,
                SERVICE,
                Some(serial),
                format!("parking the socket: {e}"),
            )
        })?;
        Ok(Session {
            stream,
            buf: conn.buf,
            io_timeout: self.io_timeout,
            serial: serial.to_string(),
            opened: Instant::now(),
            wait: None,
        })
    }
}

/// How long the next round's output may gather before it is read: a quarter more than
/// this round's took to its line when it had to be waited for, for the phone's jitter;
/// a little less than this round's wait (`used`) when all of it was there at the first
/// look, since how much earlier it was done is unknown (measured to the read, each wait
/// would count into the next, and only grow). Never more than `limit`, half the time a
/// round allows: an output too large to wait in the sockets' buffers is only done after
/// the first read, so its time to the line always includes the wait, and the wait would
/// grow to the deadline.
fn next_wait(
    used: Option<Duration>,
    all_there: bool,
    to_line: Duration,
    limit: Duration,
) -> Duration {
    let next = match used {
        Some(w) if all_there => w.mul_f64(0.95),
        _ => to_line.mul_f64(1.25),
    };
    next.min(limit)
}

impl Session {
    /// Whether the next round may use it: opened under [`MAX_AGE`] ago, and still
    /// there ([`Session::alive`]).
    pub fn usable(&mut self, now: Instant) -> bool {
        now.duration_since(self.opened) < MAX_AGE && self.alive()
    }

    /// Whether the shell is still there, without waiting: false once the stream ended
    /// or the shell's exit code came. Output that came after the last round's line
    /// (its stderr can trail its stdout) is dropped.
    fn alive(&mut self) -> bool {
        if !matches!(
            read_now(&self.stream, &mut self.buf),
            Ok(Now { open: true, .. })
        ) {
            return false;
        }
        // Whole packets of trailing output are dropped; an exit code or bytes that are
        // not packets end the shell.
        matches!(
            take_packets(&mut self.buf, &mut Collected::default(), None),
            Ok(None)
        )
    }

    /// How long this shell's output should be let gather before it is read, from the
    /// rounds it ran ([`next_wait`]); none before its first.
    pub fn wait(&self) -> Option<Duration> {
        self.wait
    }

    /// Writes `input` (whole lines) to the shell and reads its output until stdout
    /// ends with `line`, which is taken off, or until `until`, or until the output is
    /// over [`MAX_OUTPUT`]. The output is first read at the moment set on `read` (when
    /// the round reads all its shells, from their [`Session::wait`]s), then as it comes;
    /// the write too is cut at `until`. The session comes back only when the round
    /// ended on `line`.
    pub async fn run(
        self,
        input: &str,
        line: &str,
        read: Option<&Alarm>,
        until: Instant,
    ) -> (Result<Partial, Error>, Option<Session>) {
        match self.exchange(input, line, read, until).await {
            Ok((partial, kept)) => (Ok(partial), kept),
            Err(e) => (Err(e), None),
        }
    }

    async fn exchange(
        self,
        input: &str,
        line: &str,
        read: Option<&Alarm>,
        until: Instant,
    ) -> Result<(Partial, Option<Session>), Error> {
        let Session {
            stream,
            buf,
            io_timeout,
            serial,
            opened,
            wait,
        } = self;
        let err = |kind, detail: String| Error::new(kind, SERVICE, Some(&serial), detail);
        let io = |what: &str, e: std::io::Error| err(ErrorKind::Io, format!("{what}: {e}"));
        let mut buf = buf;
        // Straight to the socket, which takes a round's few hundred bytes at once; only
        // what it does not take goes through the poll.
        let packet = proto::encode_stdin(input.as_bytes());
        let sent = write_now(&stream, &packet).map_err(|e| io("writing stdin", e))?;
        let stream = if sent < packet.len() {
            let mut polled = TcpStream::from_std(stream).map_err(|e| io("the socket", e))?;
            let by = until.min(Instant::now() + io_timeout);
            match tokio::time::timeout_at(by, polled.write_all(&packet[sent..])).await {
                Err(_) => return Err(err(ErrorKind::Timeout, "writing stdin".into())),
                Ok(Err(e)) => return Err(io("writing stdin", e)),
                Ok(Ok(())) => {}
            }
            polled.into_std().map_err(|e| io("parking the socket", e))?
        } else {
            stream
        };
        let wrote = Instant::now();
        let read_at = read.and_then(|alarm| Some((alarm, alarm.at()?.min(until))));
        let read_at = read_at.filter(|(_, at)| *at > wrote);
        let used = read_at.map(|(_, at)| at - wrote);
        if let Some((alarm, at)) = read_at {
            // Off the poll while the phone runs the script: a read per packet as it
            // came was a wake-up each, a dozen a round.
            alarm.until(at).await;
        }
        // What came meanwhile, without the poll (a socket new to the poll is read only
        // once the poll has seen it, which a passed deadline would not wait for): most
        // rounds end here. The rest is read as it comes.
        let now = read_now(&stream, &mut buf).map_err(|e| io("reading the output", e))?;
        let spoke = now.read > 0;
        let mut got = Collected::default();
        let line = line.as_bytes();
        let (read, stream, buf, heard) = match take_packets(&mut buf, &mut got, Some(line)) {
            Ok(Some(stop)) => (Ok(stop), Some(stream), buf, false),
            Err(why) => {
                let e = Error {
                    server_spoke: spoke,
                    ..err(ErrorKind::Protocol, why)
                };
                (Err(e), Some(stream), buf, false)
            }
            Ok(None) => {
                let mut conn = Conn {
                    stream: TcpStream::from_std(stream).map_err(|e| io("the socket", e))?,
                    buf,
                    io_timeout,
                    request: SERVICE.to_string(),
                    serial: Some(serial.clone()),
                    heard: false,
                };
                let read = read_v2(&mut conn, Wait::Until(until), &mut got, Some(line))
                    .await
                    .map_err(|e| Error {
                        server_spoke: e.server_spoke || spoke,
                        ..e
                    });
                let Conn {
                    stream, buf, heard, ..
                } = conn;
                // A socket that cannot leave the poll is not kept; the round's output is.
                (read, stream.into_std().ok(), buf, heard)
            }
        };
        let (end, kept) = match read {
            Ok(Stop::Line) => (End::Finished, true),
            Ok(Stop::Exit) => (End::Finished, false),
            Err(e) if e.kind == ErrorKind::Timeout => (End::Deadline, false),
            Err(_) if got.len() > MAX_OUTPUT => (End::OverLimit, false),
            Err(e) => return Err(e),
        };
        let partial = Partial {
            output: got.output(ShellProtocol::V2),
            end,
        };
        let (Some(stream), true) = (stream, kept) else {
            return Ok((partial, None));
        };
        let session = Session {
            stream,
            buf,
            io_timeout,
            serial: serial.clone(),
            opened,
            // `heard`: more had to be read after the wait, so not all of it was there.
            // Its own wait, unless the round read it sooner: a slower phone's wait
            // sets the round's read, and would otherwise become this one's.
            wait: Some(next_wait(
                match (wait, used) {
                    (Some(own), Some(used)) => Some(own.min(used)),
                    (None, used) => used,
                    (Some(_), None) => None,
                },
                !heard,
                wrote.elapsed(),
                (until - wrote) / 2,
            )),
        };
        Ok((partial, Some(session)))
    }
}

/// Writes what `stream` (non-blocking) takes of `bytes` now; how much that was.
fn write_now(stream: &std::net::TcpStream, bytes: &[u8]) -> std::io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        match (&*stream).write(&bytes[sent..]) {
            Ok(0) => return Err(IoKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == IoKind::WouldBlock => break,
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Reads what `stream` (non-blocking) holds now into `buf`, without waiting.
/// Stops once `buf` holds more than any output may (the reading after it says so).
fn read_now(stream: &std::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Now> {
    let mut chunk = [0u8; 4096];
    let mut read = 0;
    while buf.len() <= MAX_OUTPUT + 64 {
        match (&*stream).read(&mut chunk) {
            Ok(0) => return Ok(Now { read, open: false }),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                read += n;
            }
            Err(e) if e.kind() == IoKind::WouldBlock => break,
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Now { read, open: true })
}

/// What [`read_now`] found.
struct Now {
    /// Bytes read.
    read: usize,
    /// False at the stream's end.
    open: bool,
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::super::fake::{packet, serve};
    use super::*;

    /// A fake server and phone on one connection only (`client::fake`).
    async fn fake(reply: fn(&str) -> Option<Vec<u8>>) -> SocketAddr {
        serve(reply, 1).await.addr
    }

    async fn open(addr: SocketAddr) -> Session {
        let client = Client::new(addr, Duration::from_secs(5));
        client.open_session("S1").await.unwrap()
    }

    /// The round's read moment, set at `at`.
    fn alarm(at: Instant) -> Alarm {
        let alarm = Alarm::new();
        alarm.set(Some(at));
        alarm
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn rounds_follow_each_other_on_one_connection() {
        // The fake accepts one connection: a second round on a new one would hang.
        let addr = fake(|input| {
            let mut out = packet(1, format!("ran {}", input).as_bytes());
            out.extend(packet(1, b"DONE\n"));
            Some(out)
        })
        .await;
        let mut session = open(addr).await;
        for round in ["a\n", "b\n"] {
            assert!(session.usable(Instant::now()));
            let (ran, back) = session.run(round, "DONE\n", None, soon()).await;
            let ran = ran.unwrap();
            assert_eq!(ran.end, End::Finished);
            assert_eq!(ran.output.stdout, format!("ran {round}"));
            assert_eq!(ran.output.exit_code, None);
            session = back.expect("a round that ended on its line keeps the session");
        }
    }

    #[test]
    fn the_wait_follows_the_phone_down_as_well_as_up() {
        let ms = Duration::from_millis;
        let limit = ms(500);
        // The first round has no wait: the time to its line, and some.
        assert_eq!(next_wait(None, false, ms(40), limit), ms(50));
        // All there at the first look: a little less than the wait used, never the
        // time to the read (which contains the wait itself).
        assert_eq!(next_wait(Some(ms(40)), true, ms(45), limit), ms(38));
        // More had to be waited for: the time to the line, and some.
        assert_eq!(next_wait(Some(ms(40)), false, ms(80), limit), ms(100));
        // An output that never fits the buffers: its time to the line always includes
        // the wait; the wait stops at half the round's time.
        assert_eq!(next_wait(Some(ms(450)), false, ms(600), limit), limit);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_shell_is_read_at_the_rounds_moment_and_keeps_its_own_wait() {
        let ms = Duration::from_millis;
        let addr = fake(|_| Some(packet(1, b"out\nDONE\n"))).await;
        let mut session = open(addr).await;
        session.wait = Some(ms(20));
        let began = Instant::now();
        let (ran, back) = session
            .run("x\n", "DONE\n", Some(&alarm(began + ms(200))), soon())
            .await;
        assert!(began.elapsed() >= ms(200));
        assert_eq!(ran.unwrap().output.stdout, "out\n");
        // A little less than its own 20 ms: the slower phone's 200 ms, which set the
        // round's moment, are not this phone's.
        let next = back.and_then(|s| s.wait()).unwrap();
        assert!(next > ms(17) && next < ms(20), "{next:?}");

        // A new shell has no wait of its own: the one it was given, a little less.
        let addr = fake(|_| Some(packet(1, b"out\nDONE\n"))).await;
        let (_, back) = open(addr)
            .await
            .run(
                "x\n",
                "DONE\n",
                Some(&alarm(Instant::now() + ms(100))),
                soon(),
            )
            .await;
        let next = back.and_then(|s| s.wait()).unwrap();
        assert!(next > ms(90) && next < ms(100), "{next:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_wait_for_a_rounds_output_never_passes_its_deadline() {
        let addr = fake(|_| Some(packet(1, b"out\nDONE\n"))).await;
        let mut session = open(addr).await;
        session.wait = Some(Duration::from_secs(10));
        let began = Instant::now();
        let (ran, back) = session
            .run(
                "x\n",
                "DONE\n",
                Some(&alarm(began + Duration::from_secs(10))),
                began + Duration::from_millis(300),
            )
            .await;
        // Read at the deadline, not after the last round's 10 s: what came counts.
        assert!(began.elapsed() < Duration::from_secs(5));
        let ran = ran.unwrap();
        assert_eq!(
            (ran.end, ran.output.stdout.as_str()),
            (End::Finished, "out\n")
        );
        // The next wait starts from the one used (the deadline's 300 ms), within half
        // of what the round allowed.
        let next = back.and_then(|s| s.wait).unwrap();
        assert!(next <= Duration::from_millis(150), "{next:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_shell_that_exits_gives_its_code_and_ends_the_session() {
        let addr = fake(|_| {
            let mut out = packet(2, b"syntax error\n");
            out.extend(packet(3, &[1]));
            Some(out)
        })
        .await;
        let (ran, back) = open(addr).await.run("x\n", "DONE\n", None, soon()).await;
        let ran = ran.unwrap();
        assert_eq!((ran.end, ran.output.exit_code), (End::Finished, Some(1)));
        assert_eq!(ran.output.stderr, "syntax error\n");
        assert!(back.is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_deadline_keeps_what_came_and_ends_the_session() {
        let addr = fake(|_| Some(packet(1, b"early\n"))).await;
        let until = Instant::now() + Duration::from_millis(200);
        let (ran, back) = open(addr).await.run("x\n", "DONE\n", None, until).await;
        let ran = ran.unwrap();
        assert_eq!(
            (ran.end, ran.output.stdout.as_str()),
            (End::Deadline, "early\n")
        );
        assert!(back.is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_closed_stream_is_noticed_between_rounds_and_mid_round() {
        let addr = fake(|input| {
            (input == "first\n").then(|| {
                // The round's line, then stderr trailing it.
                let mut out = packet(1, b"DONE\n");
                out.extend(packet(2, b"late\n"));
                out
            })
        })
        .await;
        let session = open(addr).await;
        let (_, back) = session.run("first\n", "DONE\n", None, soon()).await;
        let mut session = back.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            session.usable(Instant::now()),
            "trailing output is dropped, the shell is there"
        );
        let (ran, back) = session.run("second\n", "DONE\n", None, soon()).await;
        let e = ran.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Io, "{e}");
        assert!(back.is_none());
    }

    /// A session on a plain socket pair, and the far end.
    fn pair(io_timeout: Duration) -> (Session, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        stream.set_nonblocking(true).unwrap();
        let (far, _) = listener.accept().unwrap();
        let session = Session {
            stream,
            buf: Vec::new(),
            io_timeout,
            serial: "S1".into(),
            opened: Instant::now(),
            wait: None,
        };
        (session, far)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn input_the_socket_cannot_take_at_once_is_written_under_the_deadline() {
        // Far more than the socket buffers hold, to a phone that reads nothing.
        let (session, _far) = pair(Duration::from_millis(300));
        let input = "x".repeat(64 << 20);
        let (ran, back) = session.run(&input, "DONE\n", None, soon()).await;
        let e = ran.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
        assert!(e.to_string().contains("writing stdin"), "{e}");
        assert!(back.is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_session_the_phone_closed_is_not_alive() {
        let (mut session, mut server) = pair(Duration::from_secs(1));
        assert!(session.usable(Instant::now()));
        assert!(
            !session.usable(Instant::now() + MAX_AGE),
            "an old one is replaced"
        );
        std::io::Write::write_all(&mut server, &packet(3, &[0])).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!session.usable(Instant::now()), "an exit code ends it");
    }
}
