//! Lingering on a request body the component did not read.
//!
//! A component may answer before reading the body — a 413 decided from
//! `Content-Length`, say. If the server then closed the connection with the
//! client still sending, the client's kernel would get a reset and most HTTP
//! clients would lose the answer with it. So, like nginx's lingering close,
//! a body dropped unread is read on and discarded in the background, for a
//! bounded number of bytes and time, while the answer goes out.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Most bytes read and discarded after the component let go of a body.
const LINGER_BYTES: usize = 64 << 20;
/// Longest time spent doing so.
const LINGER_TIME: Duration = Duration::from_secs(30);

/// A request body that, when dropped before its end, drains the rest.
pub struct Lingering(Option<Incoming>);

impl Lingering {
    pub fn new(body: Incoming) -> Self {
        Self(Some(body))
    }
}

impl Body for Lingering {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.0.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .as_ref()
            .map_or_else(SizeHint::default, Body::size_hint)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(body) = self.0.take().filter(|body| !body.is_end_stream()) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(LINGER_TIME, drain(body)).await;
            });
        }
    }
}

async fn drain(mut body: Incoming) {
    let mut left = LINGER_BYTES;
    while let Some(Ok(frame)) = body.frame().await {
        let read = frame.data_ref().map_or(0, Bytes::len);
        left = left.saturating_sub(read);
        if left == 0 {
            return;
        }
    }
}
