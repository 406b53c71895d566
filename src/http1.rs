//! HTTP/1.1 value rules that both of Ficus's codecs apply, the server side (`listen::h1`, reading a client's
//! request) and the client side (`upstream::h1`, reading a server's response): one definition, so the two
//! directions cannot come to read the same bytes differently.

/// A `Content-Length` value (or one element of a comma-separated list of them): decimal digits only, no
/// sign, no blanks inside, no overflow; `None` for anything else (RFC 9110 section 8.6, as hyper reads it).
pub fn content_length(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::content_length;

    #[test]
    fn a_length_is_digits_only_and_never_overflows() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"0042"), Some(42));
        assert_eq!(content_length(b"18446744073709551615"), Some(u64::MAX));
        for bad in [&b""[..], b"18446744073709551616", b"+1", b"-1", b"1 2", b" 1", b"0x10", b"1.0"] {
            assert_eq!(content_length(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
