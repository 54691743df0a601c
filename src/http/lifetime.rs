//! How long a client's connection, and each body on it, may live: the
//! bounds that keep a slow or idle client (or a stuck upstream) from holding
//! a connection forever.
//!
//! - **Header read** (`http.header_read_timeout`, 10 s): an HTTP/1.1
//!   request's headers must arrive within this of its first byte (of the
//!   connection's start, for the first request). [`HeadDeadline`], around
//!   the connection's I/O, enforces it (hyper's own timer, which counts the
//!   idle time before a request as header time, is off).
//!   It also refuses a head with a bare LF line ending (RFC 9112 §2.2
//!   allows a server to accept one; a proxy that does and forwards the
//!   request normalised may disagree with a lenient app about where it
//!   ends): the connection is closed and nothing is forwarded.
//! - **Idle** (`http.idle_timeout`, 60 s): a connection with no request in
//!   flight for this long is closed (HTTP/1.1) or sent GOAWAY (HTTP/2).
//! - **Age** (`http.max_connection_age`, off): past it, the connection is
//!   asked to close gracefully, so long-lived clients rebalance.
//! - **Body idle** (`http.body_idle_timeout`, 5 min): a request or response
//!   body that moves no data for this long is cut with an error.
//!
//! A request is in flight from its headers until its response's last byte
//! ([`Activity`], [`InFlight`]); [`supervise`] watches the connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::head_scan::{BareLf, HeadScan};
use super::{Body, BoxError};
use crate::config::HttpConfig;
use crate::drain;

/// The time bounds of served connections (from `http:` in the config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// From a request's first byte to the end of its headers (HTTP/1.1).
    pub header_read: Duration,
    /// With no request in flight.
    pub idle: Duration,
    /// Whatever happens on it.
    pub max_age: Option<Duration>,
    /// Between two pieces of a body.
    pub body_idle: Duration,
    /// With no byte either way through a tunnel (an upgraded connection,
    /// CONNECT, opaque TCP).
    pub tunnel_idle: Duration,
}

impl Timeouts {
    /// The time bounds of the connections served with `http`'s settings.
    pub fn new(http: &HttpConfig) -> Self {
        Self {
            header_read: http.header_read_timeout.0,
            idle: http.idle_timeout.0,
            max_age: http.max_connection_age.map(|age| age.0),
            body_idle: http.body_idle_timeout.0,
            tunnel_idle: http.tunnel_idle_timeout.0,
        }
    }
}

/// The requests in flight on one connection, shared by its requests, its
/// I/O and its supervisor.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `start` to when the last request ended.
    quiet_since_ms: AtomicU64,
    /// The connection switched protocols (an upgrade, a CONNECT): its
    /// bytes are a tunnel's now, not requests.
    switched: std::sync::atomic::AtomicBool,
}

impl Activity {
    /// A new connection's, with nothing in flight.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            quiet_since_ms: AtomicU64::new(0),
            switched: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The connection is about to switch protocols (its response is a 101,
    /// or a CONNECT's 2xx): from now on its bytes are not request heads.
    pub fn switch(&self) {
        self.switched.store(true, Ordering::Release);
    }

    /// A request's headers arrived; it is in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// When the connection will have been idle for `idle`, if nothing is in
    /// flight.
    fn idle_until(&self, idle: Duration) -> Option<Instant> {
        if self.busy() {
            return None;
        }
        let quiet = Duration::from_millis(self.quiet_since_ms.load(Ordering::Acquire));
        Some(self.start + quiet + idle)
    }
}

/// A request in flight (see [`Activity::begin`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// The connection's activity.
    pub fn activity(&self) -> &Activity {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let since = activity.start.elapsed().as_millis() as u64;
        activity.quiet_since_ms.store(since, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Keeps `in_flight` until the response's last byte has gone, and cuts a
/// streamed body that stops moving for `body_idle`. A body the proxy wrote
/// whole leaves at once and needs neither.
pub fn until_sent(
    response: Response<Body>,
    in_flight: InFlight,
    body_idle: Duration,
) -> Response<Body> {
    if matches!(response.body(), Body::Empty | Body::Full(_)) {
        return response;
    }
    response.map(|body| Body::Boxed(IdleBody::new(body, body_idle, Some(in_flight)).boxed_unsync()))
}

/// Cuts a request body that stops moving for `idle` (a client that starts
/// an upload and goes quiet); an empty body is left as it is.
pub fn bound_request_body(body: Body, idle: Duration) -> Body {
    if http_body::Body::is_end_stream(&body) {
        return body;
    }
    Body::Boxed(IdleBody::new(body, idle, None).boxed_unsync())
}

/// A body that fails when no frame comes for `idle`.
struct IdleBody {
    inner: Body,
    idle: Duration,
    /// Armed on the first wait, and moved on after every frame.
    timer: Option<Pin<Box<Sleep>>>,
    moved: bool,
    _in_flight: Option<InFlight>,
}

impl IdleBody {
    fn new(inner: Body, idle: Duration, in_flight: Option<InFlight>) -> Self {
        Self {
            inner,
            idle,
            timer: None,
            moved: false,
            _in_flight: in_flight,
        }
    }
}

/// A body stopped moving.
#[derive(Debug, thiserror::Error)]
#[error("no body data for {}: the body idle timeout", humantime::format_duration(*.0))]
pub struct BodyIdle(pub Duration);

impl http_body::Body for IdleBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.moved = true;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = match &mut this.timer {
                    Some(timer) => {
                        if std::mem::take(&mut this.moved) {
                            timer.as_mut().reset(Instant::now() + idle);
                        }
                        timer
                    }
                    None => this.timer.insert(Box::pin(tokio::time::sleep(idle))),
                };
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyIdle(this.idle).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Runs a served connection until it ends: asked to close gracefully when
/// the drain starts, when it has been idle for `timeouts.idle`, or when it
/// is older than `timeouts.max_age`.
pub async fn supervise<C: GracefulConnection>(
    conn: C,
    activity: &Activity,
    timeouts: Timeouts,
    watch: drain::Watch,
) -> C::Output {
    let mut conn = std::pin::pin!(conn);
    let too_old = timeouts.max_age.map(|age| activity.start + age);
    let mut watch = watch;
    let mut draining = std::pin::pin!(watch.draining());
    loop {
        // Busy, it is looked at again one idle period from now.
        let idle_at = activity
            .idle_until(timeouts.idle)
            .unwrap_or_else(|| Instant::now() + timeouts.idle);
        let wake = too_old.map_or(idle_at, |old| old.min(idle_at));
        tokio::select! {
            output = conn.as_mut() => return output,
            () = draining.as_mut() => break,
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                let idle = activity.idle_until(timeouts.idle).is_some_and(|at| at <= now);
                if idle || too_old.is_some_and(|old| old <= now) {
                    break;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// A served connection's I/O, with the header read deadline of HTTP/1.1:
/// bytes that arrive while no request is in flight start a new request's
/// headers, which must be complete (the request in flight) within
/// `header_read`. A connection that turns out to be HTTP/2 (its preface,
/// or ALPN) has no such deadline: its frames flow while it is idle.
pub struct HeadDeadline<T> {
    inner: T,
    activity: Arc<Activity>,
    header_read: Duration,
    mode: Mode,
    /// How much of the HTTP/2 preface the first bytes matched so far.
    preface: usize,
    /// A request's headers are expected.
    armed: bool,
    /// Their timer, made on the first wait for them: headers usually
    /// arrive in the read that brings their first byte, and then no timer
    /// is made at all (nor kept, on an idle connection).
    timer: Option<Pin<Box<Sleep>>>,
    /// When the first request's headers are due (the connection's start
    /// counts for them).
    first_due: Option<Instant>,
    scan: HeadScan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unknown,
    Http1,
    Http2,
}

/// The HTTP/2 connection preface's first bytes.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl<T> HeadDeadline<T> {
    /// Wraps a new connection's I/O; its first request's headers are due
    /// `header_read` from now. `http2` is known from ALPN (inbound); on a
    /// plain connection it is `None`, and the first bytes tell.
    pub fn new(
        inner: T,
        activity: Arc<Activity>,
        header_read: Duration,
        http2: Option<bool>,
    ) -> Self {
        let mode = match http2 {
            None => Mode::Unknown,
            Some(true) => Mode::Http2,
            Some(false) => Mode::Http1,
        };
        Self {
            inner,
            activity,
            header_read,
            mode,
            armed: mode != Mode::Http2,
            timer: None,
            first_due: Some(Instant::now() + header_read),
            scan: match mode {
                Mode::Http2 => HeadScan::off(),
                _ => HeadScan::default(),
            },
            preface: 0,
        }
    }

    /// The wrapped I/O.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn saw(&mut self, bytes: &[u8]) -> Result<(), BareLf> {
        if self.mode == Mode::Unknown {
            // The preface may come a byte at a time: HTTP/1.1 (scanned as
            // such meanwhile) once a byte differs, HTTP/2 once it is whole.
            let wanted = &H2_PREFACE[self.preface..];
            let n = bytes.len().min(wanted.len());
            if bytes[..n] != wanted[..n] {
                self.mode = Mode::Http1;
            } else if n == wanted.len() {
                self.mode = Mode::Http2;
            } else {
                self.preface += n;
            }
        }
        if self.mode == Mode::Http2 {
            self.armed = false;
            self.scan.stop();
            return Ok(());
        }
        if !self.armed && !self.activity.busy() {
            self.armed = true;
            self.timer = None;
        }
        self.scan.feed(bytes)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.mode != Mode::Http2 && this.activity.switched.load(Ordering::Acquire) {
            this.mode = Mode::Http2; // not HTTP/1.1 heads any more: hands off
            this.armed = false;
            this.timer = None;
            this.scan.stop();
        }
        if this.armed && this.activity.busy() {
            // The headers arrived: a request is in flight.
            this.armed = false;
            this.timer = None;
            this.first_due = None;
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = &buf.filled()[before..];
            if !read.is_empty() && this.saw(read).is_err() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a request head ends a line with a bare LF; CRLF is required",
                )));
            }
            return polled;
        }
        if !polled.is_pending() || !this.armed {
            return polled;
        }
        let header_read = this.header_read;
        let first_due = this.first_due.take();
        let timer = this.timer.get_or_insert_with(|| {
            let due = first_due.unwrap_or_else(|| Instant::now() + header_read);
            Box::pin(tokio::time::sleep_until(due))
        });
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no complete request headers within {}",
                    humantime::format_duration(this.header_read)
                ),
            )));
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_request_end() {
        let activity = Activity::new();
        let idle = Duration::from_secs(60);
        let start = Instant::now();
        assert_eq!(activity.idle_until(idle), Some(start + idle));
        let request = activity.begin();
        assert_eq!(activity.idle_until(idle), None, "busy");
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(request);
        let until = activity.idle_until(idle).expect("idle");
        assert!(until >= start + Duration::from_secs(90) - Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_headers_are_cut_and_a_request_in_flight_is_not() {
        let activity = Activity::new();
        let (client, server) = tokio::io::duplex(1024);
        let mut server = HeadDeadline::new(server, activity.clone(), Duration::from_secs(10), None);
        let mut client = client;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(server.read(&mut buf).await.unwrap(), 16);
        let cut = server.read(&mut buf).await;
        assert_eq!(cut.unwrap_err().kind(), std::io::ErrorKind::TimedOut);

        // Once the request is in flight the deadline is off.
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server = HeadDeadline::new(server, activity.clone(), Duration::from_secs(10), None);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 27);
        let _request = activity.begin();
        let waited = tokio::time::timeout(Duration::from_secs(30), server.read(&mut buf)).await;
        assert!(waited.is_err(), "still waiting, not cut: {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn http2_has_no_header_deadline() {
        let activity = Activity::new();
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server = HeadDeadline::new(server, activity, Duration::from_secs(10), None);
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(server.read(&mut buf).await.unwrap(), 24);
        let waited = tokio::time::timeout(Duration::from_secs(30), server.read(&mut buf)).await;
        assert!(waited.is_err(), "idle HTTP/2 is not cut here: {waited:?}");
    }

    /// One frame, then nothing, ever.
    struct Stalls(bool);

    impl http_body::Body for Stalls {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if std::mem::replace(&mut self.0, true) {
                Poll::Pending
            } else {
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"a")))))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_moving_is_cut() {
        let stalls = Body::Boxed(Stalls(false).boxed_unsync());
        let body = bound_request_body(stalls, Duration::from_secs(5));
        let mut body = std::pin::pin!(body);
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().unwrap(), "a");
        let cut = body.frame().await.expect("an error");
        assert!(cut.unwrap_err().to_string().contains("body idle timeout"));
    }
}
