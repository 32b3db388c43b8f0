//! Looks for a private key in text a process wrote, in every form code could
//! print it in, not just the base64 a human would paste.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

/// Every spelling of the 32 key bytes a log line, a metric or an object could
/// carry: base64 (standard, URL-safe, padded or not), hex in either case, the
/// `Debug` form of the byte array, and the raw bytes themselves.
pub fn key_forms(key: &[u8; 32]) -> Vec<(&'static str, Vec<u8>)> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        ("base64", STANDARD.encode(key).into_bytes()),
        ("unpadded base64", STANDARD_NO_PAD.encode(key).into_bytes()),
        ("URL-safe base64", URL_SAFE.encode(key).into_bytes()),
        (
            "unpadded URL-safe base64",
            URL_SAFE_NO_PAD.encode(key).into_bytes(),
        ),
        ("lower-case hex", hex.clone().into_bytes()),
        ("upper-case hex", hex.to_uppercase().into_bytes()),
        ("Debug byte array", format!("{key:?}").into_bytes()),
        ("raw bytes", key.to_vec()),
    ]
}

/// The first form of `key` found in `text`, if any.
pub fn find_key(text: &[u8], key: &[u8; 32]) -> Option<&'static str> {
    key_forms(key)
        .into_iter()
        .find(|(_, form)| text.windows(form.len()).any(|w| w == form.as_slice()))
        .map(|(name, _)| name)
}

/// Panics, naming the form and `what`, if `text` holds `key` in any form.
pub fn assert_no_key(text: &[u8], key: &[u8; 32], what: &str) {
    if let Some(form) = find_key(text, key) {
        panic!("a private key is in {what}, as {form}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_is_found_and_a_clean_text_passes() {
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(0xf8));
        // Spelled here independently of `key_forms`, so a form dropped there fails here.
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let spellings: Vec<Vec<u8>> = vec![
            STANDARD.encode(key).into_bytes(),
            STANDARD
                .encode(key)
                .trim_end_matches('=')
                .as_bytes()
                .to_vec(),
            URL_SAFE_NO_PAD.encode(key).into_bytes(),
            hex.clone().into_bytes(),
            hex.to_uppercase().into_bytes(),
            format!("{:?}", key).into_bytes(),
            key.to_vec(),
        ];
        for form in spellings {
            let mut text = b"level=info msg=\"peer added\" key=".to_vec();
            text.extend_from_slice(&form);
            text.extend_from_slice(b"\n");
            assert!(
                find_key(&text, &key).is_some(),
                "{:?} not found",
                String::from_utf8_lossy(&form)
            );
        }
        let other = [7u8; 32];
        let mut text = Vec::new();
        for (_, form) in key_forms(&other) {
            text.extend_from_slice(&form);
        }
        assert_eq!(find_key(&text, &key), None);
    }
}
