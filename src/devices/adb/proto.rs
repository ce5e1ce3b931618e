//! The adb host protocol as pure functions over byte slices: request framing, the
//! server's `OKAY`/`FAIL` replies, length-prefixed payloads and shell v2 packets.
//!
//! Decoders tell "need more bytes" ([`Decode::Incomplete`]) apart from "these bytes can
//! never be valid" ([`ProtoError`]), so the transport knows whether to read again or
//! give up. Nothing here opens a socket, reads a clock or allocates beyond the result.

use std::fmt;

/// Longest request payload that can be framed. The server would take up to 1 MiB, but
/// four hex digits cannot say more than 0xffff.
pub const MAX_REQUEST: usize = 0xffff;

/// Bytes that can never be a valid reply or request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// A request payload of this length cannot be framed (0, or over [`MAX_REQUEST`]).
    RequestLength(usize),
    /// Four bytes that should have been hex digits.
    BadLength([u8; 4]),
    /// Four bytes that should have been `OKAY` or `FAIL`.
    BadStatus([u8; 4]),
    /// A shell v2 packet id outside 0..=5.
    BadPacketId(u8),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::RequestLength(n) => {
                write!(f, "request of {n} bytes cannot be sent (1..={MAX_REQUEST})")
            }
            ProtoError::BadLength(b) => {
                write!(f, "expected 4 hex digits of length, got {:?}", show(b))
            }
            ProtoError::BadStatus(b) => write!(f, "expected OKAY or FAIL, got {:?}", show(b)),
            ProtoError::BadPacketId(id) => write!(f, "shell v2 packet id {id} is not 0..=5"),
        }
    }
}

impl std::error::Error for ProtoError {}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The outcome of decoding from the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decode<T> {
    /// A value, and how many bytes of the buffer it used.
    Done(T, usize),
    /// The buffer is a valid prefix; read more and try again.
    Incomplete,
}

/// `000chost:version`: four hex digits of length, then the payload.
pub fn encode_request(payload: &str) -> Result<Vec<u8>, ProtoError> {
    let n = payload.len();
    if n == 0 || n > MAX_REQUEST {
        return Err(ProtoError::RequestLength(n));
    }
    let mut out = format!("{n:04x}").into_bytes();
    out.extend_from_slice(payload.as_bytes());
    Ok(out)
}

/// The server's verdict on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Okay,
    /// `FAIL` and the server's message.
    Fail(String),
}

fn hex_len(b: &[u8]) -> Result<usize, ProtoError> {
    let four: [u8; 4] = [b[0], b[1], b[2], b[3]];
    let text = std::str::from_utf8(&four).map_err(|_| ProtoError::BadLength(four))?;
    if !text.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(ProtoError::BadLength(four));
    }
    usize::from_str_radix(text, 16).map_err(|_| ProtoError::BadLength(four))
}

/// A four-hex-digit length, then that many bytes.
pub fn decode_length_prefixed(buf: &[u8]) -> Result<Decode<&[u8]>, ProtoError> {
    if buf.len() < 4 {
        return Ok(Decode::Incomplete);
    }
    let n = hex_len(&buf[..4])?;
    if buf.len() < 4 + n {
        return Ok(Decode::Incomplete);
    }
    Ok(Decode::Done(&buf[4..4 + n], 4 + n))
}

/// `OKAY`, or `FAIL` + length-prefixed message.
pub fn decode_status(buf: &[u8]) -> Result<Decode<Status>, ProtoError> {
    if buf.len() < 4 {
        return Ok(Decode::Incomplete);
    }
    match &buf[..4] {
        b"OKAY" => Ok(Decode::Done(Status::Okay, 4)),
        b"FAIL" => match decode_length_prefixed(&buf[4..])? {
            Decode::Done(msg, used) => Ok(Decode::Done(
                Status::Fail(String::from_utf8_lossy(msg).into_owned()),
                4 + used,
            )),
            Decode::Incomplete => Ok(Decode::Incomplete),
        },
        other => Err(ProtoError::BadStatus([
            other[0], other[1], other[2], other[3],
        ])),
    }
}

/// Shell v2 packet ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketId {
    Stdin,
    Stdout,
    Stderr,
    Exit,
    CloseStdin,
    WindowSize,
}

impl PacketId {
    fn from_byte(b: u8) -> Result<PacketId, ProtoError> {
        Ok(match b {
            0 => PacketId::Stdin,
            1 => PacketId::Stdout,
            2 => PacketId::Stderr,
            3 => PacketId::Exit,
            4 => PacketId::CloseStdin,
            5 => PacketId::WindowSize,
            other => return Err(ProtoError::BadPacketId(other)),
        })
    }
}

/// What we send right after `OKAY` on a shell v2 stream: "no stdin", so commands that
/// read it finish.
pub const CLOSE_STDIN: [u8; 5] = [4, 0, 0, 0, 0];

/// A shell v2 stdin packet carrying `data`.
pub fn encode_stdin(data: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(5 + data.len());
    packet.push(0);
    packet.extend_from_slice(&(data.len() as u32).to_le_bytes());
    packet.extend_from_slice(data);
    packet
}

/// One shell v2 packet: 1-byte id, u32 little-endian length, data.
pub fn decode_packet(buf: &[u8]) -> Result<Decode<(PacketId, &[u8])>, ProtoError> {
    if buf.is_empty() {
        return Ok(Decode::Incomplete);
    }
    let id = PacketId::from_byte(buf[0])?;
    if buf.len() < 5 {
        return Ok(Decode::Incomplete);
    }
    let n = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() - 5 < n {
        return Ok(Decode::Incomplete);
    }
    Ok(Decode::Done((id, &buf[5..5 + n]), 5 + n))
}

/// Shell v1 output from Android 6 and older ran under a PTY: lines end in `\r\n`.
pub fn normalise_crlf(text: &str) -> String {
    text.replace("\r\n", "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_hex_length_then_payload() {
        assert_eq!(encode_request("host:version").unwrap(), b"000chost:version");
        assert_eq!(
            encode_request(&"x".repeat(0xabc)).unwrap()[..4],
            *b"0abc".as_slice()
        );
    }

    #[test]
    fn empty_and_oversized_requests_are_refused() {
        assert_eq!(encode_request(""), Err(ProtoError::RequestLength(0)));
        let big = "x".repeat(MAX_REQUEST + 1);
        assert_eq!(
            encode_request(&big),
            Err(ProtoError::RequestLength(MAX_REQUEST + 1))
        );
        assert!(encode_request(&"x".repeat(MAX_REQUEST)).is_ok());
    }

    #[test]
    fn okay_alone() {
        assert_eq!(decode_status(b"OKAY"), Ok(Decode::Done(Status::Okay, 4)));
        assert_eq!(
            decode_status(b"OKAY0004"),
            Ok(Decode::Done(Status::Okay, 4))
        );
    }

    #[test]
    fn fail_carries_the_message() {
        let reply = b"FAIL0014device 'X' not found";
        assert_eq!(
            decode_status(reply),
            Ok(Decode::Done(
                Status::Fail("device 'X' not found".into()),
                reply.len()
            ))
        );
    }

    #[test]
    fn partial_replies_need_more_bytes() {
        for cut in [b"".as_slice(), b"OK", b"FAIL", b"FAIL00", b"FAIL0014devi"] {
            assert_eq!(decode_status(cut), Ok(Decode::Incomplete), "{cut:?}");
        }
    }

    #[test]
    fn garbage_status_is_invalid() {
        assert_eq!(
            decode_status(b"HTTP/1.1"),
            Err(ProtoError::BadStatus(*b"HTTP"))
        );
        assert_eq!(
            decode_status(b"FAILzz12"),
            Err(ProtoError::BadLength(*b"zz12"))
        );
    }

    #[test]
    fn okay_then_length_prefixed_data() {
        let reply = b"OKAY00040029";
        let Decode::Done(Status::Okay, used) = decode_status(reply).unwrap() else {
            panic!("expected OKAY")
        };
        assert_eq!(
            decode_length_prefixed(&reply[used..]),
            Ok(Decode::Done(b"0029".as_slice(), 8))
        );
        assert_eq!(
            decode_length_prefixed(b"0000"),
            Ok(Decode::Done(b"".as_slice(), 4))
        );
        assert_eq!(decode_length_prefixed(b"000a12345"), Ok(Decode::Incomplete));
        assert_eq!(decode_length_prefixed(b"00"), Ok(Decode::Incomplete));
    }

    #[test]
    fn lengths_with_signs_or_spaces_are_invalid() {
        assert_eq!(
            decode_length_prefixed(b"+0a1xxxxxxxxxxxx"),
            Err(ProtoError::BadLength(*b"+0a1"))
        );
        assert_eq!(
            decode_length_prefixed(b" 123"),
            Err(ProtoError::BadLength(*b" 123"))
        );
    }

    #[test]
    fn shell_v2_packets_in_sequence() {
        let mut wire = vec![1, 3, 0, 0, 0];
        wire.extend_from_slice(b"hi\n");
        wire.extend_from_slice(&[2, 1, 0, 0, 0, b'!']);
        wire.extend_from_slice(&[3, 1, 0, 0, 0, 7]);
        let Decode::Done((id, data), used) = decode_packet(&wire).unwrap() else {
            panic!()
        };
        assert_eq!((id, data, used), (PacketId::Stdout, b"hi\n".as_slice(), 8));
        let Decode::Done((id, data), used2) = decode_packet(&wire[used..]).unwrap() else {
            panic!()
        };
        assert_eq!((id, data), (PacketId::Stderr, b"!".as_slice()));
        let rest = &wire[used + used2..];
        assert_eq!(
            decode_packet(rest),
            Ok(Decode::Done((PacketId::Exit, [7u8].as_slice()), 6))
        );
    }

    #[test]
    fn shell_v2_length_is_little_endian() {
        let mut wire = vec![1, 0x00, 0x01, 0, 0];
        wire.extend(std::iter::repeat_n(b'a', 256));
        assert_eq!(decode_packet(&wire).unwrap(), {
            Decode::Done((PacketId::Stdout, &wire[5..]), 261)
        });
    }

    #[test]
    fn partial_packets_need_more_bytes() {
        assert_eq!(decode_packet(&[]), Ok(Decode::Incomplete));
        assert_eq!(decode_packet(&[1, 5, 0]), Ok(Decode::Incomplete));
        assert_eq!(
            decode_packet(&[1, 5, 0, 0, 0, b'a']),
            Ok(Decode::Incomplete)
        );
    }

    #[test]
    fn unknown_packet_ids_are_invalid() {
        assert_eq!(
            decode_packet(&[6, 0, 0, 0, 0]),
            Err(ProtoError::BadPacketId(6))
        );
        assert_eq!(decode_packet(&[0xff]), Err(ProtoError::BadPacketId(0xff)));
    }

    #[test]
    fn stdin_packet_round_trips() {
        let wire = encode_stdin(b"ls\n");
        assert_eq!(wire, [0, 3, 0, 0, 0, b'l', b's', b'\n']);
        assert_eq!(
            decode_packet(&wire),
            Ok(Decode::Done((PacketId::Stdin, b"ls\n".as_slice()), 8))
        );
    }

    #[test]
    fn close_stdin_is_id_4_with_no_data() {
        assert_eq!(
            decode_packet(&CLOSE_STDIN),
            Ok(Decode::Done((PacketId::CloseStdin, [].as_slice()), 5))
        );
    }

    #[test]
    fn crlf_becomes_lf() {
        assert_eq!(normalise_crlf("a\r\nb\r\n"), "a\nb\n");
        assert_eq!(normalise_crlf("a\nb"), "a\nb");
    }
}
