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

#[cfg(test)]
mod tests {
    use super::*;
    // The test binaries enable jsonwebtoken's `rust_crypto`: its provider is the reference here.
    use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER as REFERENCE;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const RSA_PRIVATE: &str = include_str!("../tests/keys/rsa_private.pem");
    const RSA_PUBLIC: &str = include_str!("../tests/keys/rsa_public.pem");
    const EC_PRIVATE: &str = include_str!("../tests/keys/ec_private.pem");
    const EC_PUBLIC: &str = include_str!("../tests/keys/ec_public.pem");
    const ED_PRIVATE: &str = include_str!("../tests/keys/ed_private.pem");
    const ED_PUBLIC: &str = include_str!("../tests/keys/ed_public.pem");

    fn keys(algorithm: Algorithm) -> (EncodingKey, DecodingKey) {
        match algorithm {
            Algorithm::HS256 => (
                EncodingKey::from_secret(SECRET),
                DecodingKey::from_secret(SECRET),
            ),
            Algorithm::RS256 => (
                EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
                DecodingKey::from_rsa_pem(RSA_PUBLIC.as_bytes()).unwrap(),
            ),
            Algorithm::ES256 => (
                EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
                DecodingKey::from_ec_pem(EC_PUBLIC.as_bytes()).unwrap(),
            ),
            Algorithm::EdDSA => (
                EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
                DecodingKey::from_ed_pem(ED_PUBLIC.as_bytes()).unwrap(),
            ),
            other => panic!("no test keys for {other:?}"),
        }
    }

    fn verifier(algorithm: Algorithm, key: &DecodingKey) -> Option<Box<dyn JwtVerifier>> {
        new_verifier(&algorithm, key).ok()
    }

    const ALGORITHMS: [Algorithm; 4] = [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ];

    #[test]
    fn install_makes_this_the_process_provider() {
        install();
        // jsonwebtoken's process-wide provider now signs HS256 only, as this one does; its own
        // (`rust_crypto`, the default otherwise) would sign RS256 as well.
        let message = b"header.payload";
        let (hs256, _) = keys(Algorithm::HS256);
        let (rs256, _) = keys(Algorithm::RS256);
        assert!(jsonwebtoken::crypto::sign(message, &hs256, Algorithm::HS256).is_ok());
        assert!(jsonwebtoken::crypto::sign(message, &rs256, Algorithm::RS256).is_err());
    }

    #[test]
    fn each_verifier_accepts_the_reference_signature_and_nothing_else() {
        let message = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9";
        for algorithm in ALGORITHMS {
            let (signing, verifying) = keys(algorithm);
            let signature = (REFERENCE.signer_factory)(&algorithm, &signing)
                .unwrap()
                .try_sign(message)
                .unwrap();
            let verifier = verifier(algorithm, &verifying).unwrap();
            assert_eq!(verifier.algorithm(), algorithm);
            assert!(
                verifier.verify(message, &signature).is_ok(),
                "{algorithm:?}"
            );
            let mut other_message = message.to_vec();
            *other_message.last_mut().unwrap() ^= 1;
            assert!(
                verifier.verify(&other_message, &signature).is_err(),
                "{algorithm:?}: another message"
            );
            let mut forged = signature.clone();
            forged[0] ^= 1;
            assert!(
                verifier.verify(message, &forged).is_err(),
                "{algorithm:?}: another signature"
            );
        }
    }

    #[test]
    fn hs256_signs_as_the_reference_does_and_is_all_it_signs() {
        let (signing, _) = keys(Algorithm::HS256);
        let message = b"header.payload";
        let ours = new_signer(&Algorithm::HS256, &signing).ok().unwrap();
        let reference = (REFERENCE.signer_factory)(&Algorithm::HS256, &signing).unwrap();
        assert_eq!(
            ours.try_sign(message).unwrap(),
            reference.try_sign(message).unwrap()
        );
        for algorithm in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            let (private, _) = keys(algorithm);
            assert!(new_signer(&algorithm, &private).is_err(), "{algorithm:?}");
        }
        assert!(new_verifier(&Algorithm::HS384, &keys(Algorithm::HS256).1).is_err());
    }

    #[test]
    fn a_key_of_another_family_is_refused() {
        // HS256 over the bytes of a public key is the classic key-confusion forgery.
        for (algorithm, key_of) in [
            (Algorithm::HS256, Algorithm::RS256),
            (Algorithm::HS256, Algorithm::ES256),
            (Algorithm::HS256, Algorithm::EdDSA),
            (Algorithm::RS256, Algorithm::HS256),
            (Algorithm::ES256, Algorithm::HS256),
            (Algorithm::EdDSA, Algorithm::HS256),
            (Algorithm::EdDSA, Algorithm::ES256),
        ] {
            let (_, key) = keys(key_of);
            assert!(
                verifier(algorithm, &key).is_none(),
                "{algorithm:?} with a {key_of:?} key"
            );
        }
        let (rsa_private, _) = keys(Algorithm::RS256);
        assert!(new_signer(&Algorithm::HS256, &rsa_private).is_err());
    }
}
