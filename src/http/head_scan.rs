//! The bare-LF check of HTTP/1.1 request heads: every line of a head must
//! end in CRLF (RFC 9112 §2.2 lets a server accept a bare LF; a proxy that
//! does reads a head differently from a server that does not). hyper is
//! lenient, so the bytes are looked at as they are read, before it parses
//! them.
//!
//! Only heads are looked at, never bodies (a body may hold any byte), so
//! the scan follows the connection's messages: after a head without a body
//! the next head starts at once, after `Content-Length: N` it starts N
//! bytes later. A chunked body, an upgrade or a CONNECT (whose bytes are
//! then a tunnel's) loses the place: the rest of the connection is not
//! scanned, rather than a body byte taken for a head's. hyper re-serializes
//! every head it forwards, so an unscanned head cannot smuggle a request
//! past the far side either way.

/// A request head used a bare LF as a line ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BareLf;

/// Where the scan is in the connection's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// In a head (or before one).
    Head,
    /// In a body of this many more bytes.
    Body(u64),
    /// Somewhere it cannot tell: no more scanning.
    Lost,
}

/// What a head says about the bytes after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Framing {
    content_length: Option<u64>,
    /// Chunked, an upgrade, a CONNECT, or a length that is not one number.
    unknown: bool,
}

/// The start of the line being read: enough for the field names that say
/// how the message is framed, and a `Content-Length` value.
const KEEP: usize = 48;

/// Follows a connection's request heads and bodies.
#[derive(Debug, Clone)]
pub struct HeadScan {
    at: At,
    /// The current line's first bytes, and its length so far.
    line: [u8; KEEP],
    line_len: usize,
    /// The request line is next (or blank lines before it).
    first_line: bool,
    framing: Framing,
}

impl Default for HeadScan {
    fn default() -> Self {
        Self {
            at: At::Head,
            line: [0; KEEP],
            line_len: 0,
            first_line: true,
            framing: Framing::default(),
        }
    }
}

impl HeadScan {
    /// A scan that looks at nothing (an HTTP/2 connection).
    pub fn off() -> Self {
        Self {
            at: At::Lost,
            ..Self::default()
        }
    }

    /// Stops scanning (the connection became a tunnel, or HTTP/2).
    pub fn stop(&mut self) {
        self.at = At::Lost;
    }

    /// Whether the scan is inside a head (not a body, not stopped).
    pub fn in_head(&self) -> bool {
        self.at == At::Head
    }

    /// Looks at the connection's next bytes.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), BareLf> {
        while !bytes.is_empty() {
            match self.at {
                At::Lost => return Ok(()),
                At::Body(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[n..];
                    let left = left - n as u64;
                    self.at = if left == 0 { At::Head } else { At::Body(left) };
                }
                At::Head => match memchr::memchr(b'\n', bytes) {
                    None => {
                        self.keep(bytes);
                        return Ok(());
                    }
                    Some(lf) => {
                        self.keep(&bytes[..lf]);
                        self.line_end()?;
                        bytes = &bytes[lf + 1..];
                    }
                },
            }
        }
        Ok(())
    }

    /// Adds bytes of the current line.
    fn keep(&mut self, bytes: &[u8]) {
        let start = self.line_len.min(KEEP);
        let n = bytes.len().min(KEEP - start);
        self.line[start..start + n].copy_from_slice(&bytes[..n]);
        // The last byte is needed for the CR check, even of a long line.
        if let Some(&last) = bytes.last()
            && self.line_len + bytes.len() > KEEP
        {
            self.line[KEEP - 1] = last;
        }
        self.line_len += bytes.len();
    }

    /// The line read ends at a LF: check it, and learn from it.
    fn line_end(&mut self) -> Result<(), BareLf> {
        let len = self.line_len;
        let last = if len > KEEP {
            self.line[KEEP - 1]
        } else {
            len.checked_sub(1).map_or(0, |i| self.line[i])
        };
        if last != b'\r' {
            return Err(BareLf);
        }
        let kept = self.line;
        let line = &kept[..(len - 1).min(KEEP)];
        self.line_len = 0;
        if line.is_empty() {
            if !self.first_line {
                self.head_end();
            }
            // Blank lines before a request line are skipped (RFC 9112 §2.2).
            return Ok(());
        }
        if std::mem::take(&mut self.first_line) {
            self.framing.unknown |= line.starts_with(b"CONNECT ");
            return Ok(());
        }
        self.field(line, len > KEEP);
        Ok(())
    }

    /// A field line: notes what frames the body.
    fn field(&mut self, line: &[u8], cut: bool) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"transfer-encoding") || name.eq_ignore_ascii_case(b"upgrade")
        {
            self.framing.unknown = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let length = std::str::from_utf8(value)
                .ok()
                .filter(|v| !cut && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (length, self.framing.content_length) {
                (Some(n), None) => self.framing.content_length = Some(n),
                (Some(n), Some(before)) if n == before => {}
                // Not a number, or two that differ: hyper refuses it, or
                // reads it some way this scan would not follow.
                _ => self.framing.unknown = true,
            }
        }
    }

    /// The blank line: a body, or the next head, follows.
    fn head_end(&mut self) {
        let framing = std::mem::take(&mut self.framing);
        self.first_line = true;
        self.at = match framing {
            Framing { unknown: true, .. } => At::Lost,
            Framing {
                content_length: Some(n),
                ..
            } if n > 0 => At::Body(n),
            _ => At::Head,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces`; whether the scan ends inside a head.
    fn scan(pieces: &[&[u8]]) -> Result<bool, BareLf> {
        let mut scan = HeadScan::default();
        pieces
            .iter()
            .try_for_each(|p| scan.feed(p))
            .map(|()| scan.in_head() && scan.line_len + usize::from(!scan.first_line) > 0)
    }

    #[test]
    fn heads_must_end_their_lines_with_crlf_bodies_may_hold_anything() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(scan(&[head]), Ok(false), "a whole head");
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r\nHost: x\r\n"]),
            Ok(true),
            "not yet ended"
        );
        assert_eq!(scan(&[b"GET / HTTP/1.1\nHost: x\r\n\r\n"]), Err(BareLf));
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nHost: x\n\n"]), Err(BareLf));
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\na\nb"]),
            Ok(false),
            "a LF in the body is the body's business"
        );
        // Line ends split across reads, at every point.
        for split in 1..head.len() {
            let (a, b) = head.split_at(split);
            assert_eq!(scan(&[a, b]), Ok(false), "split at {split}");
        }
        let bad = b"GET / HTTP/1.1\r\nHost: x\n\r\n";
        for split in 1..bad.len() {
            let (a, b) = bad.split_at(split);
            assert_eq!(scan(&[a, b]), Err(BareLf), "split at {split}");
        }
        let pieces: Vec<&[u8]> = head.chunks(1).collect();
        assert_eq!(scan(&pieces), Ok(false), "one byte at a time");
    }

    #[test]
    fn pipelined_heads_are_each_scanned_across_any_reads() {
        let good = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\na\nb\nc\
            GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in 1..good.len() {
            let (a, b) = good.split_at(split);
            assert_eq!(scan(&[a, b]), Ok(false), "split at {split}");
        }
        let bad_second = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\nHost: x\r\n\r\n";
        assert_eq!(scan(&[bad_second]), Err(BareLf));
        let bad_after_body =
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n\n\nGET / HTTP/1.1\nA: b\r\n\r\n";
        assert_eq!(scan(&[bad_after_body]), Err(BareLf));
    }

    #[test]
    fn what_the_scan_cannot_follow_it_leaves_alone() {
        for head in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\na\nb\n0\n\n"[..],
            b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\n\n",
            b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n\x16\x03\x01\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n\n\n",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n\n\n",
        ] {
            assert_eq!(
                scan(&[head]),
                Ok(false),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn long_lines_and_blank_lines_before_a_request() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(300));
        assert_eq!(scan(&[long.as_bytes()]), Ok(false));
        let long_bad = format!("GET /{} HTTP/1.1\n\r\n", "a".repeat(300));
        assert_eq!(scan(&[long_bad.as_bytes()]), Err(BareLf));
        assert_eq!(scan(&[b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"]), Ok(false));
        // A length too long to keep whole is not trusted.
        let cut = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}1\r\n\r\n\n",
            "0".repeat(60)
        );
        assert_eq!(scan(&[cut.as_bytes()]), Ok(false));
    }
}
