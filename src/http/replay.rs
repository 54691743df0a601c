//! A request body that can be sent again, for retries, without waiting for
//! it first: the first attempt streams it as usual while a copy of what
//! passes is kept, up to a limit. A retry replays the copy, then carries on
//! with whatever the first attempt had not read yet. Past the limit the
//! copy is dropped and the body can no longer be replayed.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use super::{Body, BoxError};

#[derive(Debug)]
struct Shared {
    /// The original body, until it has been read to the end.
    source: Option<Body>,
    /// Every data frame read so far (while under the limit).
    copy: Vec<Bytes>,
    copied: usize,
    trailers: Option<HeaderMap>,
    /// The body was larger than the limit: no replays.
    capped: bool,
    /// Only the newest replay may read; older attempts are over.
    current: u32,
    limit: usize,
}

/// One attempt's view of a replayable body.
#[derive(Debug)]
pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    generation: u32,
    /// Frames of the copy this view has yielded.
    position: usize,
    trailers_sent: bool,
}

impl ReplayBody {
    /// Wraps `body`, keeping up to `limit` bytes for replays.
    pub fn new(body: Body, limit: usize) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Shared {
                source: Some(body),
                copy: Vec::new(),
                copied: 0,
                trailers: None,
                capped: false,
                current: 0,
                limit,
            })),
            generation: 0,
            position: 0,
            trailers_sent: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A view for the next attempt, from the start; `None` if the body grew
    /// past the limit. Views handed out earlier stop yielding.
    pub fn replay(&self) -> Option<Self> {
        let mut shared = self.lock();
        if shared.capped {
            return None;
        }
        shared.current += 1;
        Some(Self {
            shared: self.shared.clone(),
            generation: shared.current,
            position: 0,
            trailers_sent: false,
        })
    }

    /// Whether a replay is still possible.
    pub fn can_replay(&self) -> bool {
        !self.lock().capped
    }
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let shared_arc = this.shared.clone();
        let mut shared = shared_arc.lock().unwrap_or_else(PoisonError::into_inner);
        if shared.current != this.generation {
            return Poll::Ready(Some(Err(
                "a newer attempt took over this request body".into()
            )));
        }
        if let Some(chunk) = shared.copy.get(this.position) {
            this.position += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        let Some(source) = shared.source.as_mut() else {
            // Read to the end before: only the trailers are left.
            if this.trailers_sent {
                return Poll::Ready(None);
            }
            this.trailers_sent = true;
            return Poll::Ready(shared.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        };
        match std::task::ready!(Pin::new(source).poll_frame(cx)) {
            None => {
                shared.source = None;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    keep(&mut shared, &data);
                    if !shared.capped {
                        this.position += 1;
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        shared.trailers = Some(trailers.clone());
                    }
                    shared.source = None;
                    this.trailers_sent = true;
                    Poll::Ready(Some(Ok(frame)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.lock();
        shared.source.is_none()
            && self.position >= shared.copy.len()
            && (self.trailers_sent || shared.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.lock();
        let replayed: u64 = shared.copy[self.position.min(shared.copy.len())..]
            .iter()
            .map(|b| b.len() as u64)
            .sum();
        match &shared.source {
            None => SizeHint::with_exact(replayed),
            Some(source) => {
                let hint = source.size_hint();
                let mut total = SizeHint::new();
                total.set_lower(hint.lower() + replayed);
                if let Some(upper) = hint.upper() {
                    total.set_upper(upper + replayed);
                }
                total
            }
        }
    }
}

/// Keeps a copy of `data`, or gives up on replays past the limit.
fn keep(shared: &mut Shared, data: &Bytes) {
    if shared.capped {
        return;
    }
    if shared.copied + data.len() > shared.limit {
        shared.capped = true;
        shared.copy = Vec::new(); // free the memory: no replay will need it
        return;
    }
    shared.copied += data.len();
    shared.copy.push(data.clone());
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A streamed body of these chunks (and trailers).
    struct Frames(std::collections::VecDeque<Frame<Bytes>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(Ok))
        }
    }

    fn frames(chunks: &[&'static str], trailers: bool) -> Body {
        let mut frames: Vec<Frame<Bytes>> = chunks
            .iter()
            .map(|c| Frame::data(Bytes::from_static(c.as_bytes())))
            .collect();
        if trailers {
            let mut t = HeaderMap::new();
            t.insert("x-sum", "42".parse().unwrap());
            frames.push(Frame::trailers(t));
        }
        Body::Boxed(BodyExt::boxed_unsync(Frames(frames.into())))
    }

    async fn read(body: ReplayBody) -> (Vec<u8>, Option<HeaderMap>) {
        let collected = body.collect().await.expect("body");
        let trailers = collected.trailers().cloned();
        (collected.to_bytes().to_vec(), trailers)
    }

    #[tokio::test]
    async fn a_replay_sees_the_whole_body_and_trailers() {
        let first = ReplayBody::new(frames(&["ab", "cd"], true), 1024);
        let second = first.replay().expect("replayable");
        // The replay was made before the first attempt read anything.
        let first = first.replay().expect("replayable");
        let (bytes, trailers) = read(first).await;
        assert_eq!(bytes, b"abcd");
        assert_eq!(trailers.unwrap()["x-sum"], "42");
        drop(second);
    }

    #[tokio::test]
    async fn a_retry_after_a_partial_read_replays_then_continues() {
        let origin = ReplayBody::new(frames(&["ab", "cd", "ef"], false), 1024);
        let mut first = origin.replay().expect("replayable");
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        let second = origin.replay().expect("replayable");
        assert!(
            first.frame().await.unwrap().is_err(),
            "the old attempt is over"
        );
        assert_eq!(read(second).await.0, b"abcdef");
    }

    #[tokio::test]
    async fn past_the_limit_there_is_no_replay() {
        let origin = ReplayBody::new(frames(&["abc", "def"], false), 4);
        let first = origin.replay().expect("replayable");
        assert_eq!(
            read(first).await.0,
            b"abcdef",
            "the first attempt still gets it all"
        );
        assert!(!origin.can_replay());
        assert!(origin.replay().is_none());
    }
}
