//! A wasmtime host for Spin HTTP apps: it reads `spin.toml`, serves the
//! components over HTTP and implements the Spin interfaces they import
//! (`spin:postgres`, `spin:redis`, `spin:variables`) against real servers.
//!
//! - [`manifest`], [`variables`], `routes`, `outbound`: what `spin.toml` says.
//! - `engine`: wasmtime configuration, compilation cache, linking.
//! - [`app`]: one request through one of a component's instances, which
//!   [`reuse`] makes and reuses as Spin does; [`server`]: HTTP serving;
//!   `linger`: reading on a body the component answered without reading.
//! - `postgres`, `redis`, `state`: the Spin interfaces and per-instance state.

pub mod app;
mod bindings;
mod engine;
mod linger;
pub mod manifest;
mod outbound;
mod postgres;
mod redis;
mod request_log;
pub mod reuse;
mod routes;
pub mod server;
mod state;
pub mod variables;

pub use app::{App, AppOptions};
pub use reuse::InstanceReuse;
pub use server::Running;
pub use state::Usage;
