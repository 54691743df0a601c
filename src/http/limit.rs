//! A request body cut off at a size limit (a route's `max_request_body`),
//! for bodies whose `Content-Length` did not already tell: the body fails
//! with [`BodyTooLarge`] once more bytes than the limit have passed, so the
//! request can be answered 413.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::BoxError;

/// The error of a body that went over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body is larger than the limit of {limit} bytes")]
pub struct BodyTooLarge {
    /// The limit, in bytes.
    pub limit: u64,
}

impl BodyTooLarge {
    /// The limit error in `err` or anything it wraps (hyper and the
    /// clients wrap body errors), if that is why it failed.
    pub fn find<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e Self> {
        let mut next = Some(err);
        while let Some(err) = next {
            if let Some(found) = err.downcast_ref::<Self>() {
                return Some(found);
            }
            next = err.source();
        }
        None
    }
}

/// `body`, failing once more than `limit` bytes have passed.
pub fn limited<B>(body: B, limit: u64) -> Limited<B> {
    Limited {
        body,
        limit,
        seen: 0,
        failed: false,
    }
}

/// See [`limited`].
#[derive(Debug)]
pub struct Limited<B> {
    body: B,
    limit: u64,
    seen: u64,
    failed: bool,
}

impl<B> http_body::Body for Limited<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            this.seen = this.seen.saturating_add(data.len() as u64);
            if this.seen > this.limit {
                this.failed = true;
                let err = BodyTooLarge { limit: this.limit };
                return Poll::Ready(Some(Err(err.into())));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::http::Body;

    #[tokio::test]
    async fn passes_up_to_the_limit_and_fails_beyond() {
        let ok = limited(Body::full("12345"), 5).collect().await;
        assert_eq!(ok.unwrap().to_bytes(), "12345");
        let err = limited(Body::full("123456"), 5)
            .collect()
            .await
            .unwrap_err();
        assert_eq!(BodyTooLarge::find(&*err), Some(&BodyTooLarge { limit: 5 }));
        // As hyper wraps a body's error: the cause is its source.
        #[derive(Debug, thiserror::Error)]
        #[error("body write error")]
        struct Wrapped(#[source] BoxError);
        let wrapped: BoxError = Box::new(Wrapped(err));
        assert!(BodyTooLarge::find(&*wrapped).is_some());
        let other: BoxError = "reset".into();
        assert!(BodyTooLarge::find(&*other).is_none());
    }
}
