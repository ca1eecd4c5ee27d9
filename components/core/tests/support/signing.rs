//! Signing test tokens with any algorithm, private keys included, which the service itself never does.
//! Shared by the core's auth tests and the API's token tests (`#[path]`), so both forge tokens alike.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// `jsonwebtoken::encode` with RustCrypto's signer, whatever the process-wide provider: that is
/// orchestrator-core's, which signs HS256 only.
pub fn sign(claims: &impl Serialize, algorithm: Algorithm, key: &EncodingKey) -> String {
    let part = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::to_vec(&Header::new(algorithm)).unwrap();
    let message = format!(
        "{}.{}",
        part(&header),
        part(&serde_json::to_vec(claims).unwrap())
    );
    let signer =
        (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.signer_factory)(&algorithm, key)
            .unwrap();
    format!(
        "{message}.{}",
        part(&signer.try_sign(message.as_bytes()).unwrap())
    )
}
