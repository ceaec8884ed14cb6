//! Cutting text at a limit without splitting a character.
//!
//! A limit in bytes can fall inside a multi-byte UTF-8 character. Cutting there and validating
//! would reject valid text; these functions cut at the last character boundary at or before
//! the limit and say whether anything was cut, so a response can report it.

/// Text cut to a byte limit at a character boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated<'a> {
    /// The kept text: at most the limit in bytes, always whole characters.
    pub text: &'a str,
    /// Whether the input was longer than the limit (and so `text` is a strict prefix).
    pub cut: bool,
}

/// Why bytes could not be read as UTF-8 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8 at byte {offset}")]
pub struct InvalidUtf8 {
    /// The offset of the first byte that is not part of a valid character.
    pub offset: usize,
}

/// Cuts `bytes` to at most `max` bytes at a UTF-8 character boundary.
///
/// Only the kept prefix is validated: bytes after the limit are dropped unread, and a character
/// that straddles the limit is dropped whole (it is not an error).
///
/// # Errors
/// [`InvalidUtf8`] when the kept prefix contains a byte sequence that is not UTF-8.
///
/// ```
/// use moescope_http::truncate_utf8;
/// // "é" is 2 bytes: a 2-byte limit inside "aé" keeps "a" and reports the cut.
/// let t = truncate_utf8("aé".as_bytes(), 2).unwrap();
/// assert_eq!((t.text, t.cut), ("a", true));
/// ```
pub fn truncate_utf8(bytes: &[u8], max: usize) -> Result<Truncated<'_>, InvalidUtf8> {
    let cut = bytes.len() > max;
    let head = if cut { &bytes[..max] } else { bytes };
    match std::str::from_utf8(head) {
        Ok(text) => Ok(Truncated { text, cut }),
        Err(e) => {
            // An incomplete sequence at the very end of a cut prefix is a character that
            // straddles the limit: drop it. Anything else is invalid input.
            if cut && e.error_len().is_none() {
                let valid = &head[..e.valid_up_to()];
                // `valid_up_to` marks a prefix that `from_utf8` already verified: cannot fail.
                let text = std::str::from_utf8(valid).map_err(|_| InvalidUtf8 {
                    offset: e.valid_up_to(),
                })?;
                Ok(Truncated { text, cut })
            } else {
                Err(InvalidUtf8 {
                    offset: e.valid_up_to(),
                })
            }
        }
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary; never fails.
pub fn truncate_str(text: &str, max: usize) -> Truncated<'_> {
    if text.len() <= max {
        return Truncated { text, cut: false };
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Truncated {
        text: &text[..end],
        cut: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_byte_char_straddling_the_limit_is_dropped_whole() {
        // "ab" + U+1F600 (4 bytes: F0 9F 98 80) + "c": 7 bytes.
        let s = "ab\u{1F600}c";
        assert_eq!(s.len(), 7);
        for max in 2..=5 {
            let t = truncate_utf8(s.as_bytes(), max).unwrap();
            assert_eq!(
                t,
                Truncated {
                    text: "ab",
                    cut: true
                },
                "max {max}"
            );
            assert_eq!(truncate_str(s, max), t, "max {max}");
        }
        let t = truncate_utf8(s.as_bytes(), 6).unwrap();
        assert_eq!((t.text, t.cut), ("ab\u{1F600}", true));
        let t = truncate_utf8(s.as_bytes(), 7).unwrap();
        assert_eq!((t.text, t.cut), (s, false));
        let t = truncate_utf8(s.as_bytes(), 100).unwrap();
        assert_eq!((t.text, t.cut), (s, false));
        assert_eq!(truncate_utf8(s.as_bytes(), 0).unwrap().text, "");
    }

    #[test]
    fn hebrew_text_over_4096_bytes_is_cut_not_rejected() {
        // 2-byte letters: an odd limit falls inside a letter.
        let s = "ש".repeat(3000); // 6000 bytes
        let t = truncate_utf8(s.as_bytes(), 4095).unwrap();
        assert!(t.cut);
        assert_eq!(t.text.len(), 4094);
        assert_eq!(t.text.chars().count(), 2047);
    }

    #[test]
    fn invalid_bytes_inside_the_kept_prefix_are_an_error() {
        let bytes = b"ab\xffcd";
        assert_eq!(truncate_utf8(bytes, 10), Err(InvalidUtf8 { offset: 2 }));
        assert_eq!(truncate_utf8(bytes, 3), Err(InvalidUtf8 { offset: 2 }));
        // Invalid bytes beyond the limit are never looked at.
        assert_eq!(truncate_utf8(bytes, 2).unwrap().text, "ab");
        // An incomplete sequence at the end of the whole input (no cut) is invalid.
        assert_eq!(
            truncate_utf8(b"a\xe2\x82", 10),
            Err(InvalidUtf8 { offset: 1 })
        );
        // A complete invalid sequence at the end of a cut prefix is still invalid.
        assert_eq!(truncate_utf8(b"a\xc0zz", 2), Err(InvalidUtf8 { offset: 1 }));
    }

    #[test]
    fn every_cut_of_a_mixed_string_is_the_longest_valid_prefix() {
        let s = "a\u{e9}\u{20ac}\u{1F600}z\u{5e9}";
        for max in 0..=s.len() + 1 {
            let t = truncate_utf8(s.as_bytes(), max).unwrap();
            let expected_end = (0..=max.min(s.len()))
                .rev()
                .find(|&i| s.is_char_boundary(i))
                .unwrap();
            assert_eq!(t.text, &s[..expected_end], "max {max}");
            assert_eq!(t.cut, max < s.len());
        }
    }
}
