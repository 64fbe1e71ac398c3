//! Every secret value the runner holds, masked wherever text leaves the runner: job logs,
//! step, job and deployment errors, plan text, commit statuses and the runner's own log.
//!
//! A secret is found not only as written but in the encodings a hostile build or module
//! would use to smuggle it out: base64 (standard and URL-safe, at each of the three byte
//! alignments it can have inside a longer blob), percent-encoding and JSON string escaping.
//! Each line of a multi-line secret (a PEM key) is also masked on its own, because text is
//! masked line by line.
//!
//! Beyond the configured secrets, every mask covers what the runner comes to hold while it
//! runs ([`hold`]): AWS credentials its credential chain resolves, ECR authorization tokens
//! and the password inside them, GitHub App installation tokens.

use std::borrow::Cow;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use percent_encoding::{percent_decode_str, utf8_percent_encode};

/// What replaces a secret.
pub const MASKED: &str = "***";

/// Shorter values are not masked as written (they would blank ordinary words)...
const MIN_SECRET_LEN: usize = 4;
/// ...and shorter encoded fragments are not masked either (they would match by chance).
const MIN_FRAGMENT_LEN: usize = 8;

/// Finds and replaces every known secret, in every encoding, in one pass over the text.
#[derive(Clone, Default)]
pub struct SecretMask(Option<Arc<AhoCorasick>>);

impl std::fmt::Debug for SecretMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretMask([redacted])")
    }
}

impl SecretMask {
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            for value in std::iter::once(secret).chain(secret.lines().map(str::trim)) {
                if value.trim().len() >= MIN_SECRET_LEN {
                    patterns.extend(encodings(value));
                }
            }
        }
        patterns.retain(|p| !p.is_empty());
        patterns.sort_unstable();
        patterns.dedup();
        if patterns.is_empty() {
            return Self(None);
        }
        // Leftmost-longest: a secret that contains another is masked whole.
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .ok()
            .map(Arc::new);
        Self(automaton)
    }

    /// `text` with every secret replaced by `***`: those this mask was made with, and every
    /// secret the runner holds by now (see [`hold`]).
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let masked = replace(self.0.as_deref(), text);
        let held = HELD
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .automaton
            .clone();
        match (masked, held) {
            (masked, None) => masked,
            (Cow::Borrowed(text), Some(held)) => replace(Some(&held), text),
            (Cow::Owned(text), Some(held)) => Cow::Owned(replace(Some(&held), &text).into_owned()),
        }
    }

    /// Like [`apply`](Self::apply), for owned text.
    pub fn masked(&self, text: String) -> String {
        match self.apply(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(masked) => masked,
        }
    }

    /// Whether the mask was made with no secret at all (what the runner holds aside).
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

fn replace<'a>(automaton: Option<&AhoCorasick>, text: &'a str) -> Cow<'a, str> {
    let Some(automaton) = automaton else {
        return Cow::Borrowed(text);
    };
    if !automaton.is_match(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    automaton.replace_all_with(text, &mut out, |_, _, dst| {
        dst.push_str(MASKED);
        true
    });
    Cow::Owned(out)
}

/// Credentials and tokens shorter than this are not real ones (AWS secret keys have 40
/// characters, session, ECR and GitHub tokens more): a stand-in such as a local AWS
/// emulator's `test` would otherwise blank that word in every log.
pub const MIN_CREDENTIAL_LEN: usize = 16;

/// Secrets the runner comes to hold while it runs, beyond its configuration.
#[derive(Default)]
struct Held {
    secrets: Vec<String>,
    automaton: Option<Arc<AhoCorasick>>,
}

/// Process-wide on purpose: a token is minted or received deep inside an adapter (the AWS
/// credential chain, an ECR login, a GitHub App's installation token), and every mask that
/// exists anywhere in the process (job logs, statuses, the runner's own log) must cover it
/// from that moment on, without each being handed to each adapter.
static HELD: std::sync::RwLock<Held> = std::sync::RwLock::new(Held {
    secrets: Vec::new(),
    automaton: None,
});

/// The runner holds `secret` from now on (a credential it resolved, a token it was given):
/// every mask covers it, in every encoding, from this call on. Values shorter than
/// [`MIN_CREDENTIAL_LEN`] are not credentials and are ignored.
pub fn hold(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_CREDENTIAL_LEN {
        return;
    }
    if HELD
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .secrets
        .iter()
        .any(|known| known == secret)
    {
        return;
    }
    let mut held = HELD.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    if held.secrets.iter().any(|known| known == secret) {
        return;
    }
    // Tokens are replaced as they expire: a bounded list, oldest first out. A token gone
    // from it has long expired.
    if held.secrets.len() >= 256 {
        held.secrets.remove(0);
    }
    held.secrets.push(secret.to_owned());
    held.automaton = SecretMask::new(&held.secrets).0;
}

/// The forms in which `value` can show up in text.
fn encodings(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_owned()];
    // Inside a JSON string (a plan's JSON, an API answer).
    if let Ok(json) = serde_json::to_string(value) {
        forms.push(json[1..json.len() - 1].to_owned());
    }
    // In a URL (query strings, credentials in a clone URL), and as a form sends it (a
    // space as `+`).
    let escaped = utf8_percent_encode(value, crate::percent::NON_UNRESERVED).to_string();
    forms.push(escaped.replace("%20", "+"));
    forms.push(escaped);
    // Base64 of a blob containing the value: which characters encode the value depends on
    // where it starts modulo 3, so each alignment has its own fragment. Characters that
    // mix in bytes before or after the value are dropped.
    for shift in 0..3 {
        let mut bytes = vec![0_u8; shift];
        bytes.extend_from_slice(value.as_bytes());
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&bytes);
            let skip = [0, 2, 3][shift];
            let end = if bytes.len() % 3 == 0 {
                encoded.len()
            } else {
                encoded.len() - 1
            };
            if end > skip {
                let fragment = &encoded[skip..end];
                if fragment.len() >= MIN_FRAGMENT_LEN {
                    forms.push(fragment.to_owned());
                }
            }
        }
    }
    forms
}

/// Collects every secret value the runner was configured with.
#[derive(Default)]
pub struct SecretSet(Vec<String>);

impl SecretSet {
    pub fn add(&mut self, value: impl Into<String>) {
        let value = value.into();
        if !value.trim().is_empty() {
            self.0.push(value);
        }
    }

    pub fn mask(&self) -> SecretMask {
        SecretMask::new(&self.0)
    }

    /// Adds a credential (see [`MIN_CREDENTIAL_LEN`]), ignored when too short to be one.
    pub fn add_credential(&mut self, value: &str) {
        if value.trim().len() >= MIN_CREDENTIAL_LEN {
            self.add(value);
        }
    }
}

/// Writes `contents` to `path`, readable and writable by the runner's user only from the
/// moment the file exists (an existing file is narrowed to that too).
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)
}

/// Creates `dir` and its missing parents, each new one readable by the runner's user only.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The password (and the whole user-info part) of a URL such as
/// `https://x-access-token:TOKEN@github.com/o/r.git`.
pub fn url_credentials(url: &str) -> Vec<String> {
    let Some(scheme_end) = url.find("://") else {
        return Vec::new();
    };
    let rest = &url[scheme_end + 3..];
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let mut found = vec![userinfo.to_owned()];
    if let Some((_, password)) = userinfo.split_once(':') {
        found.push(password.to_owned());
        if password.contains('%')
            && let Ok(decoded) = percent_decode_str(password).decode_utf8()
        {
            found.push(decoded.into_owned());
        }
    }
    found
}

/// The URL as it may be shown: any `user:token@` part removed.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-Value/with+odd=chars&more";

    fn mask() -> SecretMask {
        SecretMask::new([SECRET])
    }

    fn assert_hidden(text: &str) {
        let masked = mask().apply(text).into_owned();
        assert!(masked.contains(MASKED), "not masked: {text} -> {masked}");
        for form in encodings(SECRET) {
            assert!(!masked.contains(&form), "{form} survives in {masked}");
        }
    }

    #[test]
    fn a_secret_is_masked_as_written() {
        assert_eq!(mask().apply(&format!("token={SECRET} ok")), "token=*** ok");
        assert_eq!(mask().apply("nothing here"), "nothing here");
    }

    #[test]
    fn base64_of_a_blob_holding_the_secret_is_masked_at_every_alignment() {
        for prefix in ["", "A", "AB", "ABC", "HOME=/root\0RUNNER_ADMIN_TOKEN="] {
            for suffix in ["", "\0", "\0PATH=/usr/bin"] {
                let blob = format!("{prefix}{SECRET}{suffix}");
                for engine in [
                    &base64::engine::general_purpose::STANDARD,
                    &base64::engine::general_purpose::URL_SAFE,
                ] {
                    let encoded = engine.encode(blob.as_bytes());
                    let masked = mask().apply(&encoded).into_owned();
                    assert!(masked.contains(MASKED), "{blob:?} as {encoded} was not masked");
                    // What is left cannot be decoded back into the secret.
                    let leftover: String = masked.replace(MASKED, "");
                    assert!(leftover.len() < encoded.len() - 20, "{masked}");
                }
            }
        }
    }

    #[test]
    fn url_and_json_forms_are_masked() {
        assert_hidden(&format!(
            "https://x?token={}",
            utf8_percent_encode(SECRET, crate::percent::NON_UNRESERVED)
        ));
        assert_hidden(&serde_urlencoded::to_string([("a", "b"), ("t", SECRET)]).expect("form"));
        let json = serde_json::json!({ "value": format!("\"{SECRET}\"\n") }).to_string();
        assert_hidden(&json);
    }

    #[test]
    fn each_line_of_a_multi_line_secret_is_masked() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----";
        let mask = SecretMask::new([key]);
        assert_eq!(mask.apply("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "***");
        assert_eq!(mask.apply("x BKcwggSjAgEAAoIBAQC7 y"), "x *** y");
    }

    #[test]
    fn the_longest_secret_wins_and_short_values_are_left_alone() {
        let mask = SecretMask::new(["abcd", "abcdefgh-longer", "ab"]);
        assert_eq!(mask.apply("abcdefgh-longer"), "***");
        assert_eq!(mask.apply("ab abcd"), "ab ***");
        assert!(SecretMask::new([""]).is_empty());
    }

    #[test]
    fn a_secret_held_later_is_masked_by_every_mask_even_ones_made_before() {
        let before = SecretMask::new(["configured-secret-0123"]);
        let token = "ghs_heldLaterToken0123456789abcdefABCD";
        assert!(before.apply(token).contains(token));
        super::hold(token);
        let text = before
            .apply(&format!("token {token} and configured-secret-0123"))
            .into_owned();
        assert_eq!(text, "token *** and ***");
        assert_eq!(SecretMask::default().apply(&format!("token {token}")), "token ***");
        // Too short to be a credential: left alone.
        super::hold("test");
        assert_eq!(SecretMask::default().apply("a test"), "a test");
    }

    #[test]
    fn credentials_are_found_in_urls() {
        let found = url_credentials("https://x-access-token:ghs_a%2Bb@github.com/o/r.git");
        assert!(found.contains(&"x-access-token:ghs_a%2Bb".to_owned()));
        assert!(found.contains(&"ghs_a%2Bb".to_owned()));
        assert!(found.contains(&"ghs_a+b".to_owned()));
        assert!(url_credentials("https://github.com/o/r.git").is_empty());
        assert!(url_credentials("/srv/git/repo").is_empty());
    }
}
