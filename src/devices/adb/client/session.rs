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

use std::io::ErrorKind as IoKind;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::{timeout, Instant};

use super::proto::{self, Decode, PacketId};
use super::reading::{read_v2, Collected, Stop};
use super::{Client, Conn, End, Error, ErrorKind, Partial, ShellProtocol, Wait, MAX_OUTPUT};

/// An open `shell,v2,raw:` stream with no command: the phone's shell, reading its
/// commands from stdin.
pub struct Session {
    conn: Conn,
    opened: Instant,
}

/// How long a session serves before the next round opens a new one. Tasks open new
/// streams: a phone whose adbd can no longer start one would otherwise look healthy
/// on its old shell for as long as that lasts.
pub const MAX_AGE: Duration = Duration::from_secs(60);

impl Client {
    /// Opens a shell on `serial` that reads its commands from stdin.
    pub async fn open_session(&self, serial: &str) -> Result<Session, Error> {
        let conn = self.open(serial, "shell,v2,raw:").await?;
        Ok(Session {
            conn,
            opened: Instant::now(),
        })
    }
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
        loop {
            self.conn.buf.reserve(super::READ_ROOM);
            match self.conn.stream.try_read_buf(&mut self.conn.buf) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == IoKind::WouldBlock => break,
                Err(_) => return false,
            }
        }
        loop {
            match proto::decode_packet(&self.conn.buf) {
                Ok(Decode::Done((PacketId::Exit, _), _)) | Err(_) => return false,
                Ok(Decode::Done(_, used)) => {
                    self.conn.buf.drain(..used);
                }
                Ok(Decode::Incomplete) => return true,
            }
        }
    }

    /// Writes `input` (whole lines) to the shell and reads its output until stdout
    /// ends with `line`, which is taken off, or until `until`, or until the output is
    /// over [`MAX_OUTPUT`]. The session comes back only when the round ended on `line`.
    pub async fn run(
        mut self,
        input: &str,
        line: &str,
        until: Instant,
    ) -> (Result<Partial, Error>, Option<Session>) {
        self.conn.request = input.to_string();
        // What the server said in earlier rounds says nothing of it now.
        self.conn.heard = false;
        let packet = proto::encode_stdin(input.as_bytes());
        let written = timeout(self.conn.io_timeout, self.conn.stream.write_all(&packet)).await;
        match written {
            Err(_) => {
                return (
                    Err(self.conn.err(ErrorKind::Timeout, "writing stdin")),
                    None,
                )
            }
            Ok(Err(e)) => {
                let e = self.conn.err(ErrorKind::Io, format!("writing stdin: {e}"));
                return (Err(e), None);
            }
            Ok(Ok(())) => {}
        }
        let mut got = Collected::default();
        let read = read_v2(
            &mut self.conn,
            Wait::Until(until),
            &mut got,
            Some(line.as_bytes()),
        );
        let (end, kept) = match read.await {
            Ok(Stop::Line) => (End::Finished, true),
            Ok(Stop::Exit) => (End::Finished, false),
            Err(e) if e.kind == ErrorKind::Timeout => (End::Deadline, false),
            Err(_) if got.len() > MAX_OUTPUT => (End::OverLimit, false),
            Err(e) => return (Err(e), None),
        };
        let partial = Partial {
            output: got.output(ShellProtocol::V2),
            end,
        };
        (Ok(partial), kept.then_some(self))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn packet(id: u8, data: &[u8]) -> Vec<u8> {
        let mut p = vec![id];
        p.extend_from_slice(&(data.len() as u32).to_le_bytes());
        p.extend_from_slice(data);
        p
    }

    /// A fake server and phone on one connection only: answers the transport switch
    /// and the shell with OKAY, then hands each stdin packet's text to `reply`, which
    /// says what to write back; `None` closes the connection.
    async fn fake(reply: fn(&str) -> Option<Vec<u8>>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            drop(listener);
            for _ in 0..2 {
                let mut len = [0u8; 4];
                s.read_exact(&mut len).await.unwrap();
                let n = usize::from_str_radix(std::str::from_utf8(&len).unwrap(), 16).unwrap();
                let mut request = vec![0u8; n];
                s.read_exact(&mut request).await.unwrap();
                s.write_all(b"OKAY").await.unwrap();
            }
            loop {
                let mut head = [0u8; 5];
                if s.read_exact(&mut head).await.is_err() {
                    return;
                }
                let n = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
                let mut data = vec![0u8; n];
                s.read_exact(&mut data).await.unwrap();
                match reply(std::str::from_utf8(&data).unwrap()) {
                    Some(out) => s.write_all(&out).await.unwrap(),
                    None => return,
                }
            }
        });
        addr
    }

    async fn open(addr: SocketAddr) -> Session {
        let client = Client::new(addr, Duration::from_secs(5));
        client.open_session("S1").await.unwrap()
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
            let (ran, back) = session.run(round, "DONE\n", soon()).await;
            let ran = ran.unwrap();
            assert_eq!(ran.end, End::Finished);
            assert_eq!(ran.output.stdout, format!("ran {round}"));
            assert_eq!(ran.output.exit_code, None);
            session = back.expect("a round that ended on its line keeps the session");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_shell_that_exits_gives_its_code_and_ends_the_session() {
        let addr = fake(|_| {
            let mut out = packet(2, b"syntax error\n");
            out.extend(packet(3, &[1]));
            Some(out)
        })
        .await;
        let (ran, back) = open(addr).await.run("x\n", "DONE\n", soon()).await;
        let ran = ran.unwrap();
        assert_eq!((ran.end, ran.output.exit_code), (End::Finished, Some(1)));
        assert_eq!(ran.output.stderr, "syntax error\n");
        assert!(back.is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_deadline_keeps_what_came_and_ends_the_session() {
        let addr = fake(|_| Some(packet(1, b"early\n"))).await;
        let until = Instant::now() + Duration::from_millis(200);
        let (ran, back) = open(addr).await.run("x\n", "DONE\n", until).await;
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
        let (_, back) = session.run("first\n", "DONE\n", soon()).await;
        let mut session = back.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            session.usable(Instant::now()),
            "trailing output is dropped, the shell is there"
        );
        let (ran, back) = session.run("second\n", "DONE\n", soon()).await;
        let e = ran.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Io, "{e}");
        assert!(back.is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_session_the_phone_closed_is_not_alive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut session = Session {
            conn: Conn {
                stream: client.unwrap(),
                buf: Vec::new(),
                io_timeout: Duration::from_secs(1),
                request: String::new(),
                serial: None,
                heard: false,
            },
            opened: Instant::now(),
        };
        let (mut server, _) = server.unwrap();
        assert!(session.usable(Instant::now()));
        assert!(
            !session.usable(Instant::now() + MAX_AGE),
            "an old one is replaced"
        );
        server.write_all(&packet(3, &[0])).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!session.usable(Instant::now()), "an exit code ends it");
        drop(server);
    }
}
