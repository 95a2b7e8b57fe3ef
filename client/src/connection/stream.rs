//! [`Open`]: a call in flight counted for as long as its response streams.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

/// Counts one call in flight on a node while it lives: from the request until
/// its response ends or is dropped.
#[derive(Debug)]
pub(crate) struct Open(Arc<AtomicU32>);

impl Open {
    pub(crate) fn enter(in_flight: &Arc<AtomicU32>) -> Self {
        in_flight.fetch_add(1, Ordering::Relaxed);
        Self(in_flight.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its call counted in flight until it ends (its
/// trailers, its end, an error) or is dropped.
pub(crate) struct Counted<B> {
    body: B,
    open: Option<Open>,
}

impl<B> Counted<B> {
    pub(crate) fn new(body: B, open: Open) -> Self {
        Self {
            body,
            open: Some(open),
        }
    }
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        // The trailers end a gRPC response: its reader may stop there.
        let ended = match &frame {
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers(),
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Pending => false,
        };
        if ended {
            self.open = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
