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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// Most bytes read and discarded after the component let go of a body.
const LINGER_BYTES: usize = 64 << 20;
/// Longest time spent doing so.
const LINGER_TIME: Duration = Duration::from_secs(30);

/// A request body that, when dropped before its end, drains the rest and
/// raises its flag (so the response can say `connection: close`, as Spin's does).
pub struct Lingering {
    body: Option<Incoming>,
    left_unread: Arc<AtomicBool>,
}

impl Lingering {
    /// The request with its body wrapped, and the flag raised if the body is let go unread.
    pub fn wrap(request: http::Request<Incoming>) -> (http::Request<Self>, Arc<AtomicBool>) {
        let left_unread = Arc::new(AtomicBool::new(false));
        let flag = left_unread.clone();
        let request = request.map(|body| Self {
            body: Some(body),
            left_unread,
        });
        (request, flag)
    }
}

impl Body for Lingering {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(SizeHint::default, Body::size_hint)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(body) = self.body.take().filter(|body| !body.is_end_stream()) else {
            return;
        };
        self.left_unread.store(true, Ordering::Release);
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
