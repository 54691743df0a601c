//! `http::lifetime::HeadDeadline`: the raw bytes of a plain client
//! connection, read before hyper parses them, where a request head that
//! ends a line with a bare LF is refused (the connection is closed and
//! nothing is forwarded).
//!
//! The connection is driven as hyper drives it: its reads come in the
//! chunks the input says; each complete request head in what was read is
//! taken as hyper's lenient parser takes it (a head ends at the first
//! empty line, `\n\n` or `\n\r\n`) and handled as a request (in flight
//! from its head, with a read polled meanwhile as hyper polls for a closed
//! connection, then answered), its `Content-Length` body read after it.
//! A chunked body, an upgrade or a CONNECT ends the check: the scan does
//! not follow those (see `http::head_scan`).
//!
//! Checked: no head with a bare LF is forwarded; a connection is not
//! refused unless what it sent and was not yet forwarded has a bare LF;
//! whether it is refused does not depend on how the bytes were split into
//! reads.
//!
//! Input: the bytes the client sends; each `\xff` byte marks where one
//! read ends and the next begins (and is not sent).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pilotfish::http::lifetime::{Activity, HeadDeadline};
use tokio::io::{AsyncRead, ReadBuf};

/// What happened to a connection's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Every request went through.
    Served,
    /// The connection was refused.
    Refused,
}

/// Checks one input.
pub fn run(data: &[u8]) {
    let _runtime = runtime().enter();
    // (A client cannot send an empty read: that is the end of the stream.)
    let reads: Vec<&[u8]> = data
        .split(|&b| b == 0xff)
        .filter(|r| !r.is_empty())
        .collect();
    let outcome = serve(&reads);
    let whole: Vec<u8> = reads.concat();
    let at_once = serve(&[&whole]);
    assert_eq!(
        outcome, at_once,
        "split into reads {reads:?} the connection is {outcome:?}, sent at once {at_once:?}"
    );
}

/// A clock for the header deadline (never reached here).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

/// The client's side: hands out the reads in order, then end of stream;
/// `Pending` once when asked to (hyper's keep-alive poll finding nothing).
#[derive(Default)]
struct Client {
    reads: VecDeque<Vec<u8>>,
    pending: bool,
    /// The read handed out last.
    last: Vec<u8>,
}

/// The client, shared with the test (`HeadDeadline` only lends it out).
struct Shared(Rc<RefCell<Client>>);

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut client = self.0.borrow_mut();
        if std::mem::take(&mut client.pending) {
            return Poll::Pending;
        }
        client.last = client.reads.pop_front().unwrap_or_default();
        buf.put_slice(&client.last);
        Poll::Ready(Ok(()))
    }
}

/// Serves one connection; asserts that what is forwarded and what is
/// refused is right.
fn serve(reads: &[&[u8]]) -> Outcome {
    let activity = Activity::new();
    let client = Rc::new(RefCell::new(Client {
        reads: reads.iter().map(|r| r.to_vec()).collect(),
        ..Client::default()
    }));
    let shared = Shared(client.clone());
    let mut io = HeadDeadline::new(shared, activity.clone(), Duration::from_secs(10), None);
    let mut cx = Context::from_waker(Waker::noop());
    let mut buffered: Vec<u8> = Vec::new();
    let mut body_left: u64 = 0;
    let mut space = vec![0u8; 64 * 1024];
    loop {
        let mut buf = ReadBuf::new(&mut space);
        let read = match Pin::new(&mut io).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) => buf.filled().to_vec(),
            Poll::Ready(Err(e)) => {
                assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
                // Refused: what was read and not yet forwarded (the rest
                // of the heads hyper holds, and this read) has a head with
                // a bare LF.
                let mut unsent = buffered.clone();
                unsent.extend_from_slice(&client.borrow().last);
                assert!(
                    has_bare_lf_head(&unsent, body_left),
                    "refused heads without a bare LF: {:?} (read before: {:?})",
                    String::from_utf8_lossy(&unsent),
                    String::from_utf8_lossy(&buffered)
                );
                return Outcome::Refused;
            }
            Poll::Pending => unreachable!("the client always has an answer"),
        };
        if read.is_empty() {
            return Outcome::Served;
        }
        buffered.extend_from_slice(&read);
        // Every complete head read so far, as hyper parses and serves them.
        loop {
            let body = usize::try_from(body_left)
                .unwrap_or(usize::MAX)
                .min(buffered.len());
            buffered.drain(..body);
            body_left -= body as u64;
            if body_left > 0 {
                break;
            }
            // Blank lines before a request line are skipped (RFC 9112 §2.2).
            while buffered.starts_with(b"\r\n") {
                buffered.drain(..2);
            }
            let Some(end) = head_end(&buffered) else {
                break;
            };
            let head: Vec<u8> = buffered.drain(..end).collect();
            if reads.concat().starts_with(b"PRI * HTTP/2.0") {
                return Outcome::Served; // HTTP/2: not for this check
            }
            if let Some(at) = bare_lf(&head) {
                panic!(
                    "forwarded a head with a bare LF at byte {at}: {:?}",
                    String::from_utf8_lossy(&head)
                );
            }
            let Some(length) = body_length(&head) else {
                return Outcome::Served; // the scan stops following here
            };
            body_left = length;
            let in_flight = activity.begin();
            // hyper polls the connection while the request is in flight.
            client.borrow_mut().pending = true;
            let mut buf = ReadBuf::new(&mut space);
            assert!(Pin::new(&mut io).poll_read(&mut cx, &mut buf).is_pending());
            drop(in_flight);
        }
    }
}

/// Whether the heads in `bytes` (after `body_left` bytes of a body), as
/// far as the scan follows them, have a bare LF.
fn has_bare_lf_head(bytes: &[u8], body_left: u64) -> bool {
    let skip = usize::try_from(body_left).unwrap_or(usize::MAX);
    let mut rest = bytes.get(skip..).unwrap_or_default();
    loop {
        while let Some(after) = rest.strip_prefix(b"\r\n") {
            rest = after;
        }
        let Some(end) = head_end(rest) else {
            return bare_lf(rest).is_some(); // a head not yet whole
        };
        let head = &rest[..end];
        if bare_lf(head).is_some() {
            return true;
        }
        let Some(length) = body_length(head) else {
            return false; // not followed further
        };
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        rest = rest.get(end.saturating_add(length)..).unwrap_or_default();
    }
}

/// The length of the body after `head`, or `None` where the scan stops
/// following the connection: a chunked body, an upgrade, a CONNECT, a
/// `Content-Length` that is not one plain number (or sits on a line longer
/// than the 48 bytes the scan keeps of each).
fn body_length(head: &[u8]) -> Option<u64> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .skip_while(|l| l.is_empty());
    if lines.next()?.starts_with(b"CONNECT ") {
        return None;
    }
    let mut length = None;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"transfer-encoding") || name.eq_ignore_ascii_case(b"upgrade")
        {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n: u64 = std::str::from_utf8(value)
                .ok()
                .filter(|v| line.len() < 48 && v.bytes().all(|b| b.is_ascii_digit()))?
                .parse()
                .ok()?;
            if length.is_some_and(|before| before != n) {
                return None;
            }
            length = Some(n);
        }
    }
    Some(length.unwrap_or(0))
}

/// Where the first head of `bytes` ends (after its empty line), as a
/// lenient parser sees it.
fn head_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| {
        if bytes[i] != b'\n' {
            return None;
        }
        match &bytes[i + 1..] {
            [b'\n', ..] => Some(i + 2),
            [b'\r', b'\n', ..] => Some(i + 3),
            _ => None,
        }
    })
}

/// The first LF not preceded by a CR.
fn bare_lf(head: &[u8]) -> Option<usize> {
    (0..head.len()).find(|&i| head[i] == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}
