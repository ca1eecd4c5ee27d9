//! `version::check_if_match` on arbitrary `If-Match` values and versions.
//!
//! Input: eight bytes of version (little-endian; fewer bytes give version 1), then the header text.
//! Invariants: never a panic; the header matches exactly when one of its comma-separated tags is `*`,
//! the version, or the version in double quotes; a mismatch is 412 with the current version; the
//! service's own `ETag` always matches, alone or in a list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::version::{check_if_match, etag};
use orchestrator_core_fuzz::assert_refusal;

fuzz_target!(|data: &[u8]| {
    let (version, header) = match data.split_first_chunk::<8>() {
        Some((version, header)) => (i64::from_le_bytes(*version), header),
        None => (1, data),
    };
    let header = String::from_utf8_lossy(header);
    let current = version.to_string();
    let quoted = format!("\"{current}\"");
    let matches = header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag == current || tag == quoted);
    match check_if_match(Some(&header), version) {
        Ok(()) => assert!(matches, "{header:?} matched version {version}"),
        Err(error) => {
            assert!(!matches, "{header:?} did not match version {version}");
            assert_refusal(&error, &[412]);
            assert_eq!(error.details()["current_version"], version);
        }
    }
    assert_eq!(check_if_match(None, version), Ok(()));
    assert_eq!(check_if_match(Some(&etag(version)), version), Ok(()));
    assert_eq!(
        check_if_match(Some(&format!("{header}, {}", etag(version))), version),
        Ok(())
    );
});
