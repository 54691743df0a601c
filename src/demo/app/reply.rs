//! Responses of the demo services: JSON and text replies, and the two
//! streaming bodies (`/bytes` and `/sse`), written without buffering.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Errors a response body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every demo response.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Size of each chunk of a streamed body.
pub const CHUNK: usize = 64 * 1024;

/// The bytes `/bytes` sends, one chunk of them shared by every response.
static FILLER: [u8; CHUNK] = [b'x'; CHUNK];

/// A body of these bytes, sent in one piece.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// A response with `body` and its content type.
pub fn with_type(status: StatusCode, body: Body, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON response.
pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let mut text = value.to_string();
    text.push('\n');
    with_type(status, full(text), "application/json")
}

/// A plain-text response of exactly `message`.
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    with_type(
        status,
        full(message.to_owned()),
        "text/plain; charset=utf-8",
    )
}

/// A JSON error: `{"error": message}`.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    json(status, &json!({ "error": message.to_string() }))
}

/// A body of `remaining` filler bytes, made chunk by chunk as the peer
/// reads, so a large `n` costs no memory. Its exact size is known, so
/// hyper sends `content-length`.
#[derive(Debug)]
pub struct RepeatBody {
    remaining: u64,
}

impl RepeatBody {
    /// A body of `len` bytes.
    pub fn new(len: u64) -> Self {
        Self { remaining: len }
    }
}

impl http_body::Body for RepeatBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        self.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..len])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A body fed by a task through a channel: it ends when the sender is
/// dropped. Used for server-sent events.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// A body and the sender that feeds it.
    pub fn new() -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(1);
        (tx, Self { rx })
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// The value of the query parameter `name`, if present (no percent
/// decoding: the demo's parameters are numbers and durations).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_found_by_name() {
        let query = Some("n=5&interval=100ms&flag");
        assert_eq!(query_param(query, "n"), Some("5"));
        assert_eq!(query_param(query, "interval"), Some("100ms"));
        assert_eq!(query_param(query, "flag"), Some(""));
        assert_eq!(query_param(query, "missing"), None);
        assert_eq!(query_param(None, "n"), None);
    }

    #[tokio::test]
    async fn repeat_body_streams_exactly_n_bytes_in_chunks() {
        let n = 3 * CHUNK as u64 + 10;
        let mut body = RepeatBody::new(n);
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(n));
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.ok().and_then(|f| f.into_data().ok());
            sizes.push(data.map_or(0, |d| d.len()));
        }
        assert_eq!(sizes, vec![CHUNK, CHUNK, CHUNK, 10]);
    }
}
