//! `auth::authenticate` on arbitrary `Authorization` headers, against every kind of key the service
//! can be configured with (HS256 alone, or with an RSA, P-256 or Ed25519 public key).
//!
//! Invariants: never a panic; a refusal is always 401 with `WWW-Authenticate`; whatever passes (only
//! seeds signed with the test secret can) names a subject.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use orchestrator_core::auth::{AuthConfig, authenticate};
use orchestrator_core_fuzz::assert_refusal;

/// The secret the seed tokens are signed with; it protects nothing.
const SECRET: &str = "fuzzing-secret-0123456789abcdef0123456789";
/// The clock the seeds were made for.
const NOW: i64 = 1_800_000_000;

fn configs() -> &'static [AuthConfig] {
    static CONFIGS: OnceLock<Vec<AuthConfig>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let public_keys = [
            None,
            Some(include_str!("../../tests/keys/rsa_public.pem")),
            Some(include_str!("../../tests/keys/ec_public.pem")),
            Some(include_str!("../../tests/keys/ed_public.pem")),
        ];
        public_keys
            .into_iter()
            .map(|key| {
                AuthConfig::from_variables(SECRET, key, None, None).expect("a valid configuration")
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let header = String::from_utf8_lossy(data);
    for config in configs() {
        match authenticate(Some(&header), config, NOW) {
            Ok(principal) => assert!(!principal.subject.is_empty()),
            Err(error) => {
                assert_refusal(&error, &[401]);
                assert!(
                    error
                        .extra_headers()
                        .iter()
                        .any(|(name, _)| *name == "WWW-Authenticate")
                );
            }
        }
    }
});
