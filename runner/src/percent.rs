//! Percent-encoding (RFC 3986) of the values the runner puts into URLs, and of the forms in
//! which a secret can show up inside one. The codec is `percent-encoding`'s; this is the
//! set of bytes the runner has it escape.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// Everything but the unreserved characters (`A-Z a-z 0-9 - . _ ~`): a value escaped with
/// it stays one value wherever in a URL it is put (a path segment, a query parameter).
pub const NON_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::{percent_decode_str, utf8_percent_encode};

    #[test]
    fn only_unreserved_characters_stay_as_they_are() {
        assert_eq!(
            utf8_percent_encode("a b/c~d-e.f_g", NON_UNRESERVED).to_string(),
            "a%20b%2Fc~d-e.f_g"
        );
        assert_eq!(utf8_percent_encode("é&=", NON_UNRESERVED).to_string(), "%C3%A9%26%3D");
        assert_eq!(percent_decode_str("a%20b%2fc%zz%").collect::<Vec<u8>>(), b"a b/c%zz%");
    }
}
