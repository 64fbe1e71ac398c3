//! How a delivery proves it comes from the forge: GitHub's `X-Hub-Signature-256` (the
//! HMAC-SHA256 of the raw body, hex encoded after `sha256=`), Gitea's and Forgejo's
//! `X-Gitea-Signature` / `X-Forgejo-Signature` (the same HMAC, bare hex), and GitLab's
//! `X-Gitlab-Token` (the secret itself, compared in constant time).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// What is wrong with a delivery's proof; each names the header it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("{0} must be {1}")]
    Malformed(&'static str, &'static str),
    #[error("{0} does not match the body for any configured webhook secret")]
    Mismatch(&'static str),
}

pub const GITHUB_SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

/// A decoded signature header, ready to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 32]);

impl Signature {
    pub fn parse(header: Option<&[u8]>) -> Result<Self, SignatureError> {
        const FORM: &str = "\"sha256=\" followed by 64 hex digits";
        let header = header.ok_or(SignatureError::Missing(GITHUB_SIGNATURE_HEADER))?;
        let hex_digits = header
            .strip_prefix(b"sha256=")
            .ok_or(SignatureError::Malformed(GITHUB_SIGNATURE_HEADER, FORM))?;
        Self::from_hex(hex_digits).ok_or(SignatureError::Malformed(GITHUB_SIGNATURE_HEADER, FORM))
    }

    /// A signature sent as bare hex digits, as Gitea and Forgejo send it in `header`.
    pub fn parse_hex(header: Option<&[u8]>, name: &'static str) -> Result<Self, SignatureError> {
        let header = header.ok_or(SignatureError::Missing(name))?;
        Self::from_hex(header).ok_or(SignatureError::Malformed(name, "64 hex digits"))
    }

    fn from_hex(digits: &[u8]) -> Option<Self> {
        let mut digest = [0_u8; 32];
        hex::decode_to_slice(digits, &mut digest).ok()?;
        Some(Self(digest))
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

/// A secret sent as it is (GitLab's `X-Gitlab-Token`), kept as its SHA-256: comparing
/// digests in constant time tells nothing of the secret's bytes or its length.
#[derive(Clone)]
pub struct SecretToken([u8; 32]);

impl SecretToken {
    pub fn new(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    pub fn matches(&self, sent: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        let sent: [u8; 32] = Sha256::digest(sent).into();
        bool::from(self.0.ct_eq(&sent))
    }
}

impl std::fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretToken([redacted])")
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
        assert_eq!(
            Signature::parse(None),
            Err(SignatureError::Missing(GITHUB_SIGNATURE_HEADER))
        );
        for bad in [
            "",
            "sha256=",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d",
            "sha256=zz",
            &GITHUB_SIGNATURE[..70],
        ] {
            assert_eq!(
                Signature::parse(Some(bad.as_bytes())),
                Err(SignatureError::Malformed(
                    GITHUB_SIGNATURE_HEADER,
                    "\"sha256=\" followed by 64 hex digits"
                )),
                "{bad}"
            );
        }
    }

    #[test]
    fn giteas_bare_hex_signature_is_the_same_hmac_without_its_prefix() {
        let key = SignatureKey::new(GITHUB_SECRET.as_bytes());
        let bare = GITHUB_SIGNATURE.trim_start_matches("sha256=");
        let signature = Signature::parse_hex(Some(bare.as_bytes()), "X-Gitea-Signature").expect("well formed");
        assert!(key.verifies(GITHUB_BODY.as_bytes(), &signature));
        // GitHub's prefixed form is not Gitea's.
        assert_eq!(
            Signature::parse_hex(Some(GITHUB_SIGNATURE.as_bytes()), "X-Gitea-Signature"),
            Err(SignatureError::Malformed("X-Gitea-Signature", "64 hex digits"))
        );
        assert_eq!(
            Signature::parse_hex(None, "X-Gitea-Signature"),
            Err(SignatureError::Missing("X-Gitea-Signature"))
        );
    }

    #[test]
    fn a_token_matches_only_itself() {
        let token = SecretToken::new(b"gitlab-secret");
        assert!(token.matches(b"gitlab-secret"));
        for wrong in [&b""[..], b"gitlab-secre", b"gitlab-secret ", b"GITLAB-SECRET"] {
            assert!(!token.matches(wrong), "{:?}", String::from_utf8_lossy(wrong));
        }
    }
}
