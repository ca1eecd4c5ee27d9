//! `Quotas::parse` (the `depth_quotas` variable) on arbitrary text.
//!
//! Invariants: never a panic; an accepted value has six quotas, each a non-negative 32-bit integer,
//! that print back to text parsing to the same quotas; `FromStr` agrees; a refusal says what is wrong.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::quota::Quotas;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = Quotas::parse(&text);
    assert_eq!(text.parse::<Quotas>(), parsed);
    match parsed {
        Ok(quotas) => {
            let rows = quotas.rows();
            assert_eq!(rows.len(), 6);
            assert!(
                rows.iter()
                    .all(|row| (0..=i64::from(u32::MAX)).contains(&row.max_workers))
            );
            let printed: Vec<String> = rows.iter().map(|row| row.max_workers.to_string()).collect();
            assert_eq!(Quotas::parse(&printed.join(",")), Ok(quotas));
        }
        Err(error) => assert!(error.to_string().contains("depth_quotas")),
    }
});
