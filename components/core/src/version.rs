//! Optimistic concurrency (contract §4): objects carry a `version`, responses send it as a strong `ETag`,
//! and state-changing POSTs honour `If-Match`.

use crate::error::ApiError;

/// The `ETag` value for `version`: `"3"`, quotes included.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// Checks an `If-Match` header against the current version; no header means no precondition.
///
/// Accepts `*`, a list of entity tags (`"2", "3"`) and, leniently, a bare number (`3`). Weak tags
/// (`W/"3"`) never match, as RFC 9110 requires strong comparison for `If-Match`.
pub fn check_if_match(if_match: Option<&str>, current_version: i64) -> Result<(), ApiError> {
    let Some(header) = if_match else {
        return Ok(());
    };
    let current = current_version.to_string();
    let matches = header.split(',').map(str::trim).any(|tag| {
        tag == "*"
            || tag == current
            || tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .is_some_and(|t| t == current)
    });
    if matches {
        Ok(())
    } else {
        Err(ApiError::VersionMismatch { current_version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_quoted_version() {
        assert_eq!(etag(3), "\"3\"");
    }

    #[test]
    fn if_match() {
        for ok in [
            None,
            Some("\"3\""),
            Some("3"),
            Some("*"),
            Some("\"1\", \"3\""),
        ] {
            assert_eq!(check_if_match(ok, 3), Ok(()), "{ok:?}");
        }
        for mismatch in ["\"2\"", "W/\"3\"", "\"33\"", "", "\"3"] {
            let error = check_if_match(Some(mismatch), 3).unwrap_err();
            assert_eq!(error.status(), 412, "{mismatch:?}");
            assert_eq!(error.details()["current_version"], 3);
        }
    }
}
