//! `IdempotencyKey::from_headers` on arbitrary header values.
//!
//! Input: one byte saying which headers are present (bit 0 `Idempotency-Key`, bit 1 `Request-Id`),
//! then their values separated by the first newline. Invariants: never a panic; no header is no key;
//! `Idempotency-Key` wins over its alias, but a bad alias is refused even then; a key is 1-255
//! printable ASCII characters, exactly as sent, and parses again to itself; a bad one is a 422 naming
//! the first bad header; the storage key is 64 lowercase hex digits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::idempotency::{ALIAS_HEADER, HEADER, IdempotencyKey, scope_key};
use orchestrator_core_fuzz::assert_refusal;

fuzz_target!(|data: &[u8]| {
    let Some((&present, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (first, second) = text.split_once('\n').unwrap_or((&text, &text));
    let idempotency_key = (present & 1 != 0).then_some(first);
    let request_id = (present & 2 != 0).then_some(second);

    let well_formed = |raw: &str| {
        (1..=IdempotencyKey::MAX_LEN).contains(&raw.len())
            && raw.bytes().all(|b| (0x20..=0x7e).contains(&b))
    };
    let first_bad = [(HEADER, idempotency_key), (ALIAS_HEADER, request_id)]
        .into_iter()
        .find_map(|(header, raw)| raw.filter(|raw| !well_formed(raw)).map(|_| header));
    let chosen = idempotency_key.or(request_id);
    match (
        IdempotencyKey::from_headers(idempotency_key, request_id),
        first_bad,
        chosen,
    ) {
        (Ok(None), None, None) => {}
        (Ok(Some(key)), None, Some(raw)) => {
            assert_eq!(key.as_str(), raw);
            assert!((1..=IdempotencyKey::MAX_LEN).contains(&raw.len()));
            assert!(raw.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            assert_eq!(IdempotencyKey::parse(raw).as_ref(), Ok(&key));
            let storage = scope_key("sub", "POST", "/api/jobs/submit", &key);
            assert_eq!(storage.len(), 64);
            assert!(
                storage
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
        }
        (Err(error), Some(header), _) => {
            assert_refusal(&error, &[422]);
            assert_eq!(error.details()["fields"][0]["field"], header);
        }
        (outcome, first_bad, chosen) => panic!("{outcome:?} for {first_bad:?}, {chosen:?}"),
    }
});
