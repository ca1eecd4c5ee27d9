//! An opt-in log of the requests served, for measuring which documented
//! (operation, status) pairs the tests produce (`scripts/coverage`).
//!
//! With `SPIN_HOST_REQUEST_LOG=<file>` set, every request served appends one
//! line `METHOD PATH STATUS` (the path without its query) to the file. Each
//! line is a single append to a file opened with `O_APPEND`, so the lines of
//! concurrent requests, and of test processes sharing the file, never mix.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::OnceLock;

/// The environment variable naming the log file.
pub const VARIABLE: &str = "SPIN_HOST_REQUEST_LOG";

/// Appends one request's line, if the log is on.
pub fn record(method: &http::Method, path: &str, status: u16) {
    if let Some(file) = log_file() {
        let line = format!("{method} {path} {status}\n");
        if let Err(e) = (&*file).write_all(line.as_bytes()) {
            tracing::warn!("{VARIABLE}: cannot append: {e}");
        }
    }
}

/// The log file, opened once per process; `None` when the log is off or the
/// file cannot be opened (said once).
fn log_file() -> Option<&'static File> {
    static LOG: OnceLock<Option<File>> = OnceLock::new();
    LOG.get_or_init(|| {
        let path = std::env::var_os(VARIABLE).filter(|path| !path.is_empty())?;
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .inspect_err(|e| tracing::warn!("{VARIABLE}={}: {e}", path.display()))
            .ok()
    })
    .as_ref()
}
