//! WireGuard key text format: 32 bytes in standard base64 (44 characters), as `wg genkey` writes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use thiserror::Error;

/// Why a string is not a WireGuard key.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not valid base64.
    #[error("not valid base64 ({0})")]
    Base64(String),
    /// Valid base64 of the wrong length.
    #[error("decodes to {0} bytes, a WireGuard key is 32")]
    Length(usize),
    /// All zeroes: the X25519 point that no real key has.
    #[error("is the all-zero key, which no real key can be")]
    Zero,
}

/// Parses a base64 WireGuard key (surrounding whitespace allowed, as in key files).
pub fn parse_key(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| KeyError::Base64(e.to_string()))?;
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::Length(bytes.len()))?;
    if key == [0u8; 32] {
        return Err(KeyError::Zero);
    }
    Ok(key)
}

/// Formats a key the way `wg` does.
pub fn format_key(key: &[u8; 32]) -> String {
    STANDARD.encode(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_wg_format() {
        let text = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        let key = parse_key(text).unwrap();
        assert_eq!(format_key(&key), text);
        assert_eq!(parse_key(&format!("  {text}\n")).unwrap(), key);
    }

    #[test]
    fn refuses_bad_keys() {
        type Case<'a> = (&'a str, fn(&KeyError) -> bool);
        let cases: &[Case] = &[
            ("not base64!", |e| matches!(e, KeyError::Base64(_))),
            ("AAAA", |e| matches!(e, KeyError::Length(3))),
            ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", |e| {
                *e == KeyError::Zero
            }),
            ("", |e| matches!(e, KeyError::Length(0))),
        ];
        for (text, is_expected) in cases {
            let err = parse_key(text).unwrap_err();
            assert!(is_expected(&err), "{text:?} gave {err:?}");
        }
    }
}
