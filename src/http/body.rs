//! The one body type every request and response in the proxy carries.
//!
//! An enum rather than a boxed trait object: the common cases (a streamed
//! body from hyper, a short body the proxy wrote itself) cost no allocation.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;

/// Errors a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body.
#[derive(Debug, Default)]
pub enum Body {
    /// No bytes at all.
    #[default]
    Empty,
    /// A body the proxy made itself, sent in one piece.
    Full(Option<Bytes>),
    /// Streamed from a peer by hyper, passed on frame by frame.
    Incoming(hyper::body::Incoming),
    /// Streamed from a pooled HTTP/1.1 connection, which goes back to its
    /// pool when the body ends.
    Pooled(super::h1_pool::PooledBody),
    /// Anything else (wrappers added by policies).
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// A body from a pooled connection.
    pub fn pooled(body: super::h1_pool::PooledBody) -> Self {
        Self::Pooled(body)
    }

    /// A body of these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Self::Empty
        } else {
            Self::Full(Some(bytes))
        }
    }
}

impl From<hyper::body::Incoming> for Body {
    fn from(body: hyper::body::Incoming) -> Self {
        Self::Incoming(body)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Incoming(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(BoxError::from))),
            Self::Pooled(body) => Pin::new(body).poll_frame(cx),
            Self::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(bytes) => bytes.is_none(),
            Self::Incoming(body) => body.is_end_stream(),
            Self::Pooled(body) => body.is_end_stream(),
            Self::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Incoming(body) => body.size_hint(),
            Self::Pooled(body) => body.size_hint(),
            Self::Boxed(body) => body.size_hint(),
        }
    }
}
