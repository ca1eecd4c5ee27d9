//! A client of `GET /api/events/stream`: reads server-sent-event frames as they arrive.

use reqwest::Response;
use serde_json::Value;
use std::time::Duration;

/// One frame of the stream, as the server sends them: each carries one thing.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Event {
        id: i64,
        event: String,
        data: Value,
    },
    /// A comment line (the server's keep-alive).
    Comment(String),
    /// The reconnection hint the server sends before it ends the stream.
    Retry(u64),
}

pub struct EventStream {
    response: Response,
    /// Received bytes not yet a whole frame.
    pending: Vec<u8>,
}

impl EventStream {
    pub fn new(response: Response) -> Self {
        assert_eq!(response.status(), 200, "the stream opens with 200");
        Self {
            response,
            pending: Vec::new(),
        }
    }

    /// The next frame; `None` when the server ended the stream. Panics after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Frame> {
        tokio::time::timeout(within, self.next_frame())
            .await
            .unwrap_or_else(|_| panic!("no frame on the stream within {within:?}"))
    }

    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.pending.drain(..end + 2).collect();
                let text = String::from_utf8(frame).expect("frames are UTF-8");
                return Some(parse(text.trim_end_matches('\n')));
            }
            match self.response.chunk().await.expect("the stream reads") {
                Some(chunk) => self.pending.extend_from_slice(&chunk),
                None => {
                    assert!(self.pending.is_empty(), "the stream ended inside a frame");
                    return None;
                }
            }
        }
    }

    /// The next `count` events, skipping keep-alives; panics if the stream ends first.
    pub async fn events(&mut self, count: usize, within: Duration) -> Vec<(i64, String, Value)> {
        let deadline = tokio::time::Instant::now() + within;
        let mut events = Vec::new();
        while events.len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Frame::Event { id, event, data }) => events.push((id, event, data)),
                Some(_) => {}
                None => panic!("the stream ended after {} of {count} events", events.len()),
            }
        }
        events
    }

    /// Every frame until the server ends the stream.
    pub async fn to_end(&mut self, within: Duration) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        let mut frames = Vec::new();
        while let Some(frame) = self
            .next(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            frames.push(frame);
        }
        frames
    }
}

fn parse(frame: &str) -> Frame {
    if let Some(comment) = frame.strip_prefix(':') {
        return Frame::Comment(comment.trim().to_owned());
    }
    if let Some(retry) = frame.strip_prefix("retry: ") {
        return Frame::Retry(retry.parse().expect("retry is milliseconds"));
    }
    let mut fields = frame.lines().map(|line| {
        line.split_once(": ")
            .unwrap_or_else(|| panic!("not a field: {line:?}"))
    });
    let mut field = |name: &str| {
        let (found, value) = fields
            .next()
            .unwrap_or_else(|| panic!("no {name} in {frame:?}"));
        assert_eq!(found, name, "fields in order in {frame:?}");
        value.to_owned()
    };
    let id = field("id").parse().expect("id is a seq");
    let event = field("event");
    let data = serde_json::from_str(&field("data")).expect("data is JSON");
    assert!(fields.next().is_none(), "one event per frame: {frame:?}");
    Frame::Event { id, event, data }
}
