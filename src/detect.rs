//! Protocol detection: what a client speaks, told from its first bytes.
//!
//! - HTTP/2 with prior knowledge: the connection preface
//!   (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`);
//! - TLS: a handshake record (`0x16 0x03 ..`), a ClientHello;
//! - HTTP/1: a request line, `METHOD SP ...` with an upper-case token;
//! - anything else is opaque: a protocol Pilotfish does not look into.
//!
//! The bytes are read, not peeked (a peek of data already there returns at
//! once, so waiting for more would spin), and handed back in front of the
//! stream by [`Prefixed`]. A client that sends nothing within the timeout
//! is opaque too: server-speaks-first protocols (MySQL, SMTP) wait for the
//! server, and a port known to carry one is better declared opaque, so
//! nobody waits at all.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
    /// A TLS ClientHello: encrypted, opaque to a proxy without the key.
    Tls,
    /// Anything else, or nothing within the timeout.
    Opaque,
}

impl Protocol {
    /// A short name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
            Self::Tls => "tls",
            Self::Opaque => "opaque",
        }
    }
}

/// What decided the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The client's first bytes (or its close before any).
    FirstBytes,
    /// Nothing came within the timeout.
    Timeout,
    /// The port is declared opaque: nothing was read.
    Port,
}

impl By {
    /// A short name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstBytes => "first-bytes",
            Self::Timeout => "timeout",
            Self::Port => "port",
        }
    }
}

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The longest request method recognised: longer tokens are not HTTP.
const MAX_METHOD: usize = 20;
/// Bytes read before deciding; every form above decides within it.
const ENOUGH: usize = 32;

/// Classifies the first bytes of a connection, or `None` while they could
/// still be more than one thing.
pub fn classify(bytes: &[u8]) -> Option<Protocol> {
    if bytes.is_empty() {
        return None;
    }
    let n = bytes.len().min(H2_PREFACE.len());
    if bytes[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    if bytes[0] == 0x16 {
        return match bytes.get(1) {
            None => None,
            Some(0x03) => Some(Protocol::Tls),
            Some(_) => Some(Protocol::Opaque),
        };
    }
    let token = bytes.iter().take_while(|b| b.is_ascii_uppercase()).count();
    match bytes.get(token) {
        Some(b' ') if (1..=MAX_METHOD).contains(&token) => Some(Protocol::Http1),
        None if token < MAX_METHOD => None,
        _ => Some(Protocol::Opaque),
    }
}

/// Reads the first bytes of `io` (waiting at most `timeout` for them) and
/// says what they are; the stream, with the bytes read put back in front.
pub async fn detect<T: AsyncRead + Unpin>(
    mut io: T,
    timeout: Duration,
) -> std::io::Result<(Protocol, By, Prefixed<T>)> {
    let mut read = BytesMut::with_capacity(ENOUGH);
    let found = tokio::time::timeout(timeout, async {
        loop {
            if let Some(protocol) = classify(&read) {
                return Ok::<_, std::io::Error>(protocol);
            }
            if read.len() >= ENOUGH || io.read_buf(&mut read).await? == 0 {
                // Closed, or a long run of capitals: not what we know.
                return Ok(Protocol::Opaque);
            }
        }
    })
    .await;
    let (protocol, by) = match found {
        Ok(protocol) => (protocol?, By::FirstBytes),
        Err(_) => (Protocol::Opaque, By::Timeout),
    };
    Ok((protocol, by, Prefixed { read, io }))
}

/// A stream with bytes already read from it put back in front.
#[derive(Debug)]
pub struct Prefixed<T> {
    read: BytesMut,
    io: T,
}

impl<T> Prefixed<T> {
    /// `io`, with nothing in front.
    pub fn new(io: T) -> Self {
        Self {
            read: BytesMut::new(),
            io,
        }
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn first_bytes_tell_the_protocol() {
        use Protocol::*;
        let cases: &[(&[u8], Option<Protocol>)] = &[
            (b"", None),
            (b"GET / HTTP/1.1\r\n", Some(Http1)),
            (b"CONNECT users:443 HTTP/1.1\r\n", Some(Http1)),
            (b"M-SEARCH * HTTP/1.1", Some(Opaque)),
            (b"GE", None),
            (b"get / HTTP/1.1", Some(Opaque)),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Some(Http2)),
            (b"PRI * HTTP/2.0\r\n", None),
            (b"PRI * HTTP/1.1\r\n", Some(Http1)),
            (&[0x16, 0x03, 0x01, 0x02, 0x00], Some(Tls)),
            (&[0x16], None),
            (&[0x16, 0x00], Some(Opaque)),
            (b"*1\r\n$4\r\nPING\r\n", Some(Opaque)),
            (&[0, 0, 0, 8, 4, 210, 22, 47], Some(Opaque)), // PostgreSQL SSLRequest
            (b"AMQP\x00\x00\x09\x01", Some(Opaque)),
            (b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", Some(Opaque)),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                classify(bytes),
                *want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_bytes_read_come_back_and_silence_is_opaque() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HT").await.unwrap();
        let (protocol, by, mut stream) = detect(server, Duration::from_secs(1)).await.unwrap();
        assert_eq!((protocol, by), (Protocol::Http1, By::FirstBytes));
        client.write_all(b"TP/1.1\r\n").await.unwrap();
        let mut back = [0u8; 16];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"GET / HTTP/1.1\r\n");

        let (_quiet, server) = tokio::io::duplex(1024);
        let (protocol, by, _) = detect(server, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            (protocol, by),
            (Protocol::Opaque, By::Timeout),
            "a server-speaks-first client"
        );
    }
}
