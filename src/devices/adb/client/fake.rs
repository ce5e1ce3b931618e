//! For tests: an adb server and phone on loopback that answer each connection's
//! transport switch and shell request with OKAY, then its stdin packets with what a
//! test says, counting the connections opened and closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A shell v2 packet: `id` (1 stdout, 2 stderr, 3 exit), then `data`.
pub fn packet(id: u8, data: &[u8]) -> Vec<u8> {
    let mut p = vec![id];
    p.extend_from_slice(&(data.len() as u32).to_le_bytes());
    p.extend_from_slice(data);
    p
}

pub struct Fake {
    pub addr: SocketAddr,
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Fake {
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    /// The connections our side has closed so far, after giving them up to 5 s to
    /// reach `want`.
    pub async fn closed(&self, want: usize) -> usize {
        for _ in 0..100 {
            if self.closed.load(Ordering::SeqCst) >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.closed.load(Ordering::SeqCst)
    }
}

/// Serves `connections` connections, then takes no more (a further connect is
/// refused). Hands each stdin packet's text to `reply`, which says what to write back;
/// `None` closes that connection.
pub async fn serve(reply: fn(&str) -> Option<Vec<u8>>, connections: usize) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = Fake {
        addr: listener.local_addr().unwrap(),
        opened: Arc::default(),
        closed: Arc::default(),
    };
    let (opened, closed) = (fake.opened.clone(), fake.closed.clone());
    tokio::spawn(async move {
        for _ in 0..connections {
            let (s, _) = listener.accept().await.unwrap();
            opened.fetch_add(1, Ordering::SeqCst);
            let closed = closed.clone();
            tokio::spawn(async move {
                if converse(s, reply).await {
                    closed.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    fake
}

/// True when our side closed the connection, false when `reply` did.
async fn converse(mut s: TcpStream, reply: fn(&str) -> Option<Vec<u8>>) -> bool {
    open_shell(&mut s).await;
    loop {
        let mut head = [0u8; 5];
        if s.read_exact(&mut head).await.is_err() {
            return true;
        }
        let n = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut data = vec![0u8; n];
        s.read_exact(&mut data).await.unwrap();
        match reply(std::str::from_utf8(&data).unwrap()) {
            Some(out) => s.write_all(&out).await.unwrap(),
            None => return false,
        }
    }
}

/// Reads the transport switch and the shell request, and answers each with OKAY.
pub async fn open_shell(s: &mut TcpStream) {
    for _ in 0..2 {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&len).unwrap(), 16).unwrap();
        let mut request = vec![0u8; n];
        s.read_exact(&mut request).await.unwrap();
        s.write_all(b"OKAY").await.unwrap();
    }
}
