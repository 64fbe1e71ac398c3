//! Percent-encoding (RFC 3986): values put into the URLs the runner builds, and the forms
//! in which a secret can show up inside one.

/// Everything but the unreserved characters (`A-Z a-z 0-9 - . _ ~`) as `%XX`.
pub fn encode(text: &str) -> String {
    encode_with(text, false)
}

/// As [`encode`], with a space written `+`, as HTML forms send it.
pub fn encode_form(text: &str) -> String {
    encode_with(text, true)
}

fn encode_with(text: &str, form: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(char::from(byte)),
            b' ' if form => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// The bytes `text` stands for: each valid `%XX` decoded, everything else as it is.
pub fn decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes_back() {
        assert_eq!(encode("a b/c~d"), "a%20b%2Fc~d");
        assert_eq!(encode_form("a b/c"), "a+b%2Fc");
        assert_eq!(decode("a%20b%2fc%zz%"), b"a b/c%zz%");
    }
}
