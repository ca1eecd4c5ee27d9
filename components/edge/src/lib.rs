//! What every component shell shares, so each component is only its routes:
//!
//! - [`serve`]: one request from arrival to response — request id, body
//!   limits, dispatch, error rendering. [`routing`] maps paths to endpoints.
//! - [`config`]: the Spin variables, read once per request.
//! - [`reply`]: JSON responses with the contract's headers.
//! - [`write`]: the one door every state change goes through — idempotency
//!   record, change, audit, outbox, in a transaction or, for a change decided
//!   on rows read unlocked, in one statement — and publishing after the
//!   commit; [`cache`] is its Redis side.
//! - [`db`] and [`store`]: Postgres access, with the SQL of each table in one
//!   module.
//! - [`live`]: requests held open until something happens (the doorbell they
//!   watch, waiting reads).

pub mod cache;
pub mod config;
pub mod context;
pub mod db;
pub mod live;
pub mod reply;
pub mod request;
pub mod routing;
pub mod serve;
pub mod store;
pub mod write;

pub use config::Config;
pub use context::Context;
pub use reply::Reply;
pub use request::Request;
pub use serve::serve;
pub use write::{Tx, write, write_if_unchanged};

/// Milliseconds since the Unix epoch, from the host's wall clock.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Random bytes from the host (ids, request ids).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The host always provides randomness; without it no id can be made safely.
    getrandom::fill(&mut bytes).expect("the host provides random bytes");
    bytes
}

/// `call`'s answer, or `None` when it takes longer than `limit` (the call is then dropped, which
/// abandons it). Spin bounds no wait on Postgres or Redis, so the app bounds each call itself.
pub async fn within<T>(limit: std::time::Duration, call: impl Future<Output = T>) -> Option<T> {
    let call = std::pin::pin!(call);
    let deadline = std::pin::pin!(spin_sdk::time::sleep(limit));
    match futures::future::select(call, deadline).await {
        futures::future::Either::Left((answer, _)) => Some(answer),
        futures::future::Either::Right(_) => None,
    }
}
