//! The orchestrator's domain, shared by every component: pure rules, no I/O, no clock, no randomness.
//!
//! Components own the shell (Spin HTTP, Postgres, Redis) and call in here for every decision, so the
//! behaviour of the API contract is written once and tested natively.
//! Callers pass in what a pure crate cannot get itself: the current time, random bytes, stored rows.

// Errors as the client sees them, and their mapping to HTTP.
pub mod error;

// --- The edge of a request: who is calling, and what did they send? ---

// Bearer tokens, scopes and workspace confinement.
pub mod auth;
mod jwt_crypto;
// JSON request bodies into validated request types.
pub mod body;
// Service accounts: Argon2id client secrets and the tokens they are granted.
pub mod credentials;
// Idempotency keys, request fingerprints and replay decisions.
pub mod idempotency;
// Worker, job, workspace and allocation ids.
pub mod ids;
// Query strings and list paging.
pub mod query;
// The API's request bodies.
pub mod requests;
// Revoked tokens and subjects' not-befores: what the revoke endpoint records and every request checks.
pub mod revocation;
// The Redis keys the components and the native tools share.
pub mod keyspace;
// Self-validating values: depths, counts, bounded texts, bounded JSON objects.
pub mod validation;
// `ETag` / `If-Match`.
pub mod version;

// --- The rules: what may happen? ---

// The job state machine, submission and cascading cancel.
pub mod job;
// What both state machines share: transition planning and audit records.
pub mod lifecycle;
// Per-depth quotas and allocation arithmetic.
pub mod quota;
// The worker state machine and lifecycle actions.
pub mod worker;

// --- The record: what happened? ---

// Domain events and their published envelope.
pub mod events;
// RFC 3339 timestamps.
pub mod time;
// Live reads: the event stream's frames and filters, and waiting reads.
pub mod live;

mod hex;

pub use error::{ApiError, ConfigError, FieldError};
