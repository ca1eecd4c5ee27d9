//! Id parsing (`ids::Id::parse`, `from_path`, and serde) on arbitrary text.
//!
//! Invariants: never a panic; every kind accepts exactly the same shapes, `[A-Za-z0-9][A-Za-z0-9_.:-]`
//! up to 64 characters; an accepted id is the input unchanged and survives a JSON round trip; a path
//! segment of another shape is a 404, like an unknown id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::ids::{AllocationId, JobId, MAX_ID_LEN, WorkerId, WorkspaceId, is_valid_id};
use orchestrator_core_fuzz::assert_refusal;

fn contract_shape(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ID_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let valid = contract_shape(&text);
    assert_eq!(is_valid_id(&text), valid, "{text:?}");
    assert_eq!(WorkerId::parse(&text).is_ok(), valid);
    assert_eq!(AllocationId::parse(&text).is_ok(), valid);
    assert_eq!(WorkspaceId::parse(&text).is_ok(), valid);

    let as_json = serde_json::to_string(&text).expect("a string serialises");
    match JobId::parse(&text) {
        Ok(id) => {
            assert_eq!(id.as_str(), text);
            let json = serde_json::to_string(&id).expect("an id serialises");
            assert_eq!(json, as_json);
            assert_eq!(
                serde_json::from_str::<JobId>(&json).as_ref().ok(),
                Some(&id)
            );
            assert_eq!(JobId::from_path(&text).as_ref(), Ok(&id));
        }
        Err(error) => {
            assert!(!valid);
            assert!(!error.message().is_empty());
            assert!(serde_json::from_str::<JobId>(&as_json).is_err());
            let not_found = JobId::from_path(&text).expect_err("a malformed path id");
            assert_refusal(&not_found, &[404]);
            assert_eq!(not_found.message(), format!("Job {text} not found"));
        }
    }
});
