//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw body, hex encoded after `sha256=`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 must be \"sha256=\" followed by 64 hex digits")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body for any configured webhook secret")]
    Mismatch,
}

/// A decoded signature header, ready to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 32]);

impl Signature {
    pub fn parse(header: Option<&[u8]>) -> Result<Self, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let hex_digits = header.strip_prefix(b"sha256=").ok_or(SignatureError::Malformed)?;
        let mut digest = [0_u8; 32];
        hex::decode_to_slice(hex_digits, &mut digest).map_err(|_| SignatureError::Malformed)?;
        Ok(Self(digest))
    }
}

/// A webhook secret, keyed once so checking a delivery costs one HMAC pass over the body.
#[derive(Clone)]
pub struct SignatureKey(HmacSha256);

impl SignatureKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length"))
    }

    /// Constant-time comparison of the body's HMAC with the signature.
    pub fn verifies(&self, body: &[u8], signature: &Signature) -> bool {
        let mut mac = self.0.clone();
        mac.update(body);
        mac.verify_slice(&signature.0).is_ok()
    }

    /// The header value GitHub would send for `body` (used by tests, the demo and replays).
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for SignatureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries#testing-the-webhook-payload-validation
    const GITHUB_SECRET: &str = "It's a Secret to Everybody";
    const GITHUB_BODY: &str = "Hello, World!";
    const GITHUB_SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_documented_vector_verifies() {
        let key = SignatureKey::new(GITHUB_SECRET.as_bytes());
        let signature = Signature::parse(Some(GITHUB_SIGNATURE.as_bytes())).expect("well formed");
        assert!(key.verifies(GITHUB_BODY.as_bytes(), &signature));
        assert_eq!(key.sign(GITHUB_BODY.as_bytes()), GITHUB_SIGNATURE);
    }

    #[test]
    fn any_change_to_body_secret_or_signature_fails() {
        let key = SignatureKey::new(GITHUB_SECRET.as_bytes());
        let signature = Signature::parse(Some(GITHUB_SIGNATURE.as_bytes())).expect("well formed");
        assert!(!key.verifies(b"Hello, World?", &signature));
        assert!(!SignatureKey::new(b"another secret").verifies(GITHUB_BODY.as_bytes(), &signature));
        let flipped = GITHUB_SIGNATURE.replace("757107", "757108");
        let flipped = Signature::parse(Some(flipped.as_bytes())).expect("well formed");
        assert!(!key.verifies(GITHUB_BODY.as_bytes(), &flipped));
    }

    #[test]
    fn garbled_headers_are_told_apart_from_missing_ones() {
        assert_eq!(Signature::parse(None), Err(SignatureError::Missing));
        for bad in [
            "",
            "sha256=",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d",
            "sha256=zz",
            &GITHUB_SIGNATURE[..70],
        ] {
            assert_eq!(
                Signature::parse(Some(bad.as_bytes())),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
