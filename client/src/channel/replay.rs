//! [`Replay`]: a request body read once from the caller and sent by every
//! attempt of its call (gRFC A6's retry buffer).
//!
//! The first attempt to need a frame reads it from the caller's body and keeps
//! it; later attempts (a retry, another hedge) send the kept frames, then read
//! on. While the frames read fit in the buffer the request may be sent again;
//! once they outgrow it they are dropped and the request is committed to the
//! attempt that read them, as it is once response headers arrive.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};
use parking_lot::Mutex;
use tonic::Status;

/// The shared body of one request; each attempt reads it through a
/// [`reader`](Self::reader). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Replay {
    shared: Arc<Mutex<Recorder>>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rec = self.shared.lock();
        f.debug_struct("Replay")
            .field("frames", &rec.read)
            .field("bytes", &rec.bytes)
            .field("kept", &rec.kept())
            .finish_non_exhaustive()
    }
}

struct Recorder {
    /// The caller's body; `None` once it ended.
    source: Option<tonic::body::Body>,
    /// The data frames read so far, while they are kept.
    frames: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    /// Frames and bytes read from the source in all.
    read: usize,
    bytes: usize,
    limit: usize,
    /// Whether the frames were dropped (too large, or the call committed):
    /// no attempt may start from the beginning again.
    dropped: bool,
    /// The source failed with this code and message: no attempt can send
    /// the request.
    failed: Option<(tonic::Code, String)>,
    /// Wakes every reader waiting on the source, whichever polled it last.
    waiting: Arc<Waiting>,
}

impl Recorder {
    fn kept(&self) -> bool {
        !self.dropped && self.failed.is_none()
    }

    fn drop_frames(&mut self) {
        self.dropped = true;
        self.frames = Vec::new();
    }
}

/// The wakers of the readers waiting for the next frame of the source.
#[derive(Default)]
struct Waiting(Mutex<Vec<Waker>>);

impl Waiting {
    fn add(&self, waker: &Waker) {
        let mut all = self.0.lock();
        if !all.iter().any(|w| w.will_wake(waker)) {
            all.push(waker.clone());
        }
    }

    /// Wakes every waiting reader but `own` (which is running), and forgets
    /// them all.
    fn wake_others(&self, own: &Waker) {
        for waker in self.0.lock().drain(..) {
            if !waker.will_wake(own) {
                waker.wake();
            }
        }
    }
}

impl Wake for Waiting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        for waker in self.0.lock().drain(..) {
            waker.wake();
        }
    }
}

impl Replay {
    /// Keeps up to `limit` bytes of `body` for sending it again.
    pub(crate) fn new(body: tonic::body::Body, limit: usize) -> Self {
        let ended = http_body::Body::is_end_stream(&body);
        Self {
            shared: Arc::new(Mutex::new(Recorder {
                source: (!ended).then_some(body),
                frames: Vec::new(),
                trailers: None,
                read: 0,
                bytes: 0,
                limit,
                dropped: false,
                failed: None,
                waiting: Arc::default(),
            })),
        }
    }

    /// Whether another attempt may send the request from its beginning.
    pub(crate) fn replayable(&self) -> bool {
        self.shared.lock().kept()
    }

    /// The call is committed to one attempt: nothing more is kept.
    pub(crate) fn commit(&self) {
        self.shared.lock().drop_frames();
    }

    /// The body of one attempt, from the beginning.
    pub(crate) fn reader(&self) -> Reader {
        Reader {
            shared: self.shared.clone(),
            next: 0,
            trailers_sent: false,
        }
    }
}

/// One attempt's view of a [`Replay`]: the kept frames, then the source.
pub(crate) struct Reader {
    shared: Arc<Mutex<Recorder>>,
    /// The number of the next frame this reader sends.
    next: usize,
    trailers_sent: bool,
}

impl Body for Reader {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let mut guard = this.shared.lock();
        let rec = &mut *guard;
        if let Some((code, message)) = &rec.failed {
            return Poll::Ready(Some(Err(Status::new(*code, message.clone()))));
        }
        if this.next < rec.read {
            // Behind the attempt that read the source: send what it kept.
            let Some(data) = rec.frames.get(this.next).filter(|_| !rec.dropped) else {
                return Poll::Ready(Some(Err(Status::unavailable(
                    "the request body outgrew the retry buffer and cannot be sent again",
                ))));
            };
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
        }
        let waiting = rec.waiting.clone();
        let Some(source) = rec.source.as_mut() else {
            return match &rec.trailers {
                Some(trailers) if !this.trailers_sent => {
                    this.trailers_sent = true;
                    Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))))
                }
                _ => Poll::Ready(None),
            };
        };
        waiting.add(cx.waker());
        let waker = Waker::from(waiting);
        let polled = Pin::new(source).poll_frame(&mut Context::from_waker(&waker));
        if polled.is_ready() {
            // Readers waiting at the same place read on from what this one read.
            rec.waiting.wake_others(cx.waker());
        }
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                rec.source = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(status))) => {
                rec.source = None;
                rec.failed = Some((status.code(), status.message().to_owned()));
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        rec.read += 1;
                        rec.bytes += data.len();
                        this.next = rec.read;
                        if rec.kept() && rec.bytes <= rec.limit {
                            rec.frames.push(data.clone());
                        } else if !rec.dropped {
                            rec.drop_frames();
                        }
                        Frame::data(data)
                    }
                    Err(frame) => {
                        if let Some(trailers) = frame.trailers_ref() {
                            rec.trailers = Some(trailers.clone());
                            this.trailers_sent = true;
                        }
                        frame
                    }
                };
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let rec = self.shared.lock();
        rec.failed.is_none()
            && rec.source.is_none()
            && self.next >= rec.read
            && (self.trailers_sent || rec.trailers.is_none())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use futures_util::future::poll_fn;

    use super::*;

    /// A caller's body: these frames, each ready at once.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn replay(chunks: &[&'static str], limit: usize) -> Replay {
        let frames = chunks
            .iter()
            .map(|c| Frame::data(Bytes::from_static(c.as_bytes())));
        Replay::new(tonic::body::Body::new(Frames(frames.collect())), limit)
    }

    async fn read_all(mut reader: Reader) -> Result<String, Status> {
        let mut text = String::new();
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut reader).poll_frame(cx)).await {
            if let Ok(data) = frame?.into_data() {
                text.push_str(std::str::from_utf8(&data).expect("utf-8"));
            }
        }
        Ok(text)
    }

    #[tokio::test]
    async fn every_attempt_sends_the_whole_body_while_it_fits() {
        let body = replay(&["ab", "cd", "ef"], 6);
        assert_eq!(read_all(body.reader()).await.expect("first"), "abcdef");
        assert!(body.replayable());
        assert_eq!(read_all(body.reader()).await.expect("second"), "abcdef");
    }

    #[tokio::test]
    async fn a_body_past_the_buffer_is_sent_once() {
        let body = replay(&["ab", "cd", "ef"], 5);
        assert_eq!(read_all(body.reader()).await.expect("first"), "abcdef");
        assert!(!body.replayable());
        let again = read_all(body.reader()).await;
        assert_eq!(
            again.expect_err("not again").code(),
            tonic::Code::Unavailable
        );
    }

    #[tokio::test]
    async fn a_committed_call_keeps_nothing() {
        let body = replay(&["ab"], 1024);
        let mut first = body.reader();
        let frame = poll_fn(|cx| Pin::new(&mut first).poll_frame(cx)).await;
        assert!(frame.is_some());
        assert!(body.replayable());
        body.commit();
        assert!(!body.replayable());
        assert_eq!(
            read_all(first)
                .await
                .expect("the committed attempt reads on"),
            ""
        );
    }

    /// A caller's body whose frames come later, from a channel.
    struct Later(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

    impl Body for Later {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            self.0.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d))))
        }
    }

    #[tokio::test]
    async fn readers_waiting_at_once_are_all_woken_by_each_frame_and_the_end() {
        let (send, frames) = tokio::sync::mpsc::unbounded_channel();
        let body = Replay::new(tonic::body::Body::new(Later(frames)), 1024);
        let readers: Vec<_> = (0..3)
            .map(|_| tokio::spawn(read_all(body.reader())))
            .collect();
        // Every reader waits on the source before anything arrives.
        tokio::task::yield_now().await;
        for chunk in ["a", "b"] {
            send.send(Bytes::from_static(chunk.as_bytes()))
                .expect("open");
            tokio::task::yield_now().await;
        }
        drop(send);
        for reader in readers {
            let text = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
                .await
                .expect("every reader is woken")
                .expect("task");
            assert_eq!(text.expect("ok"), "ab");
        }
    }

    #[tokio::test]
    async fn two_readers_at_once_both_get_every_frame() {
        let body = replay(&["a", "b", "c"], 1024);
        let (mut one, mut two) = (body.reader(), body.reader());
        let mut texts = (String::new(), String::new());
        for _ in 0..3 {
            for (reader, text) in [(&mut one, &mut texts.0), (&mut two, &mut texts.1)] {
                let frame = poll_fn(|cx| Pin::new(&mut *reader).poll_frame(cx)).await;
                let data = frame
                    .expect("a frame")
                    .expect("ok")
                    .into_data()
                    .expect("data");
                text.push_str(std::str::from_utf8(&data).expect("utf-8"));
            }
        }
        assert_eq!(texts, ("abc".to_owned(), "abc".to_owned()));
        assert_eq!(read_all(one).await.expect("the end"), "");
        assert_eq!(read_all(two).await.expect("the end"), "");
    }
}
