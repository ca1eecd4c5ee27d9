//! jsonwebtoken's cryptography, limited to what [`crate::auth`] uses: HS256 signing and verification,
//! and RS256, ES256 and EdDSA verification. Each is the RustCrypto code of jsonwebtoken's own
//! `rust_crypto` provider, so results are the same; only the algorithms nothing here reaches (HS384/512,
//! RS384/512, PS*, ES384, and signing with a private key) are left out, because jsonwebtoken's provider
//! picks the algorithm at run time and so links all of them into every component.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result, new_error};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    // JWK helpers: unused.
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes this the process's provider; call before any jsonwebtoken signing or verification. If a
/// provider is already installed (a test binary that enabled jsonwebtoken's `rust_crypto`), that one
/// stays, and it computes the same results.
pub(crate) fn install() {
    let _ = PROVIDER.install_default();
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    match algorithm {
        Algorithm::HS256 => Ok(Box::new(Hs256Signer::new(key)?)),
        _ => Err(new_error(ErrorKind::InvalidAlgorithm)),
    }
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    Ok(match algorithm {
        Algorithm::HS256 => Box::new(Hs256Verifier::new(key)?),
        Algorithm::RS256 => Box::new(Rs256Verifier::new(key)?),
        Algorithm::ES256 => Box::new(Es256Verifier::new(key)?),
        Algorithm::EdDSA => Box::new(EdDsaVerifier::new(key)?),
        _ => return Err(new_error(ErrorKind::InvalidAlgorithm)),
    })
}

fn require_family(actual: AlgorithmFamily, expected: AlgorithmFamily) -> Result<()> {
    if actual == expected {
        Ok(())
    } else {
        Err(new_error(ErrorKind::InvalidKeyFormat))
    }
}

struct Hs256Signer(HmacSha256);

impl Hs256Signer {
    fn new(key: &EncodingKey) -> Result<Self> {
        require_family(key.family(), AlgorithmFamily::Hmac)?;
        let inner =
            HmacSha256::new_from_slice(key.as_bytes()).map_err(|_| ErrorKind::InvalidKeyFormat)?;
        Ok(Self(inner))
    }
}

impl Signer<Vec<u8>> for Hs256Signer {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let mut signer = self.0.clone();
        signer.update(msg);
        Ok(signer.finalize().into_bytes().to_vec())
    }
}

impl JwtSigner for Hs256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

struct Hs256Verifier(HmacSha256);

impl Hs256Verifier {
    fn new(key: &DecodingKey) -> Result<Self> {
        require_family(key.family(), AlgorithmFamily::Hmac)?;
        let inner = HmacSha256::new_from_slice(key.try_get_as_bytes()?)
            .map_err(|_| ErrorKind::InvalidKeyFormat)?;
        Ok(Self(inner))
    }
}

impl Verifier<Vec<u8>> for Hs256Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let mut verifier = self.0.clone();
        verifier.update(msg);
        verifier
            .verify_slice(signature)
            .map_err(signature::Error::from_source)
    }
}

impl JwtVerifier for Hs256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

struct Rs256Verifier(DecodingKey);

impl Rs256Verifier {
    fn new(key: &DecodingKey) -> Result<Self> {
        require_family(key.family(), AlgorithmFamily::Rsa)?;
        Ok(Self(key.clone()))
    }
}

impl Verifier<Vec<u8>> for Rs256Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        use rsa::pkcs1::DecodeRsaPublicKey;
        use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};

        let public_key = match self.0.kind() {
            DecodingKeyKind::SecretOrDer(der) => {
                RsaPublicKey::from_pkcs1_der(der).map_err(signature::Error::from_source)?
            }
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
                    .map_err(signature::Error::from_source)?
            }
        };
        public_key
            .verify(
                Pkcs1v15Sign::new::<Sha256>(),
                &Sha256::digest(msg),
                signature,
            )
            .map_err(signature::Error::from_source)
    }
}

impl JwtVerifier for Rs256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

struct Es256Verifier(p256::ecdsa::VerifyingKey);

impl Es256Verifier {
    fn new(key: &DecodingKey) -> Result<Self> {
        require_family(key.family(), AlgorithmFamily::Ec)?;
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key.try_get_as_bytes()?)
            .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
        Ok(Self(key))
    }
}

impl Verifier<Vec<u8>> for Es256Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let signature = p256::ecdsa::Signature::from_slice(signature)?;
        self.0.verify(msg, &signature)
    }
}

impl JwtVerifier for Es256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

struct EdDsaVerifier(ed25519_dalek::VerifyingKey);

impl EdDsaVerifier {
    fn new(key: &DecodingKey) -> Result<Self> {
        require_family(key.family(), AlgorithmFamily::Ed)?;
        // As jsonwebtoken: the first 32 bytes; a shorter key is refused (jsonwebtoken panics).
        let bytes = key
            .try_get_as_bytes()?
            .first_chunk::<32>()
            .ok_or(ErrorKind::InvalidEddsaKey)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| ErrorKind::InvalidEddsaKey)?;
        Ok(Self(key))
    }
}

impl Verifier<Vec<u8>> for EdDsaVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let signature = ed25519_dalek::Signature::from_slice(signature)?;
        self.0.verify(msg, &signature)
    }
}

impl JwtVerifier for EdDsaVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}
