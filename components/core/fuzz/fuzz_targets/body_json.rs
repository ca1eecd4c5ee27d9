//! Request bodies through `body::parse_json` into every request type the components decode.
//!
//! The request types are core's (`orchestrator_core::requests`), the ones the components decode.
//! Invariants: never a panic; a refusal is 400, 413, 415 or 422
//! with the contract's body; a missing `Content-Type` reads like `application/json`; and what parses,
//! re-serialised, parses back to the same value.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use orchestrator_core::body::{MAX_BODY_BYTES, parse_json};
use orchestrator_core::requests::{
    AllocateWorkers, CompleteJob, FailJob, NoFields, RegisterWorker, ReleaseWorkers, SubmitJob,
    WithReason,
};
use orchestrator_core_fuzz::assert_refusal;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn check<T: DeserializeOwned + Serialize + PartialEq + Debug>(body: &[u8]) {
    let declared = parse_json::<T>(Some("application/json; charset=utf-8"), body);
    let undeclared = parse_json::<T>(None, body);
    assert_eq!(declared, undeclared, "a missing Content-Type reads as JSON");
    match declared {
        Ok(value) => {
            let again = serde_json::to_vec(&value).expect("a request serialises");
            assert!(again.len() <= MAX_BODY_BYTES);
            let reparsed = parse_json::<T>(Some("application/json"), &again);
            assert_eq!(
                reparsed.as_ref(),
                Ok(&value),
                "{}",
                String::from_utf8_lossy(&again)
            );
        }
        Err(error) => {
            assert_refusal(&error, &[400, 413, 422]);
            assert_eq!(error.status() == 413, body.len() > MAX_BODY_BYTES);
        }
    }
    let blank = body.iter().all(u8::is_ascii_whitespace);
    match parse_json::<T>(Some("text/plain"), body) {
        Ok(_) => assert!(blank, "only an empty body passes as text/plain"),
        Err(error) => assert_refusal(&error, &[400, 413, 415, 422]),
    }
}

fuzz_target!(|body: &[u8]| {
    check::<RegisterWorker>(body);
    check::<WithReason>(body);
    check::<NoFields>(body);
    check::<SubmitJob>(body);
    check::<CompleteJob>(body);
    check::<FailJob>(body);
    check::<AllocateWorkers>(body);
    check::<ReleaseWorkers>(body);
});
