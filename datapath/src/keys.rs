//! WireGuard static keys: making one and deriving its public half.

/// The X25519 public key of a WireGuard private key (what `wg pubkey` prints).
pub fn public_key(private: &[u8; 32]) -> [u8; 32] {
    let secret = boringtun::x25519::StaticSecret::from(*private);
    boringtun::x25519::PublicKey::from(&secret).to_bytes()
}

/// A new random private key (what `wg genkey` prints).
pub fn generate_private_key() -> [u8; 32] {
    boringtun::x25519::StaticSecret::random_from_rng(rand_core::OsRng).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_wire::keys::{format_key, parse_key};

    #[test]
    fn key_derivation_matches_rfc7748_and_wg() {
        // RFC 7748 section 6.1, Alice's key pair (the scalar is clamped on use, as wg does).
        let private = parse_key("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=").unwrap();
        assert_eq!(
            format_key(&public_key(&private)),
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        );
        let a = generate_private_key();
        assert_ne!(a, generate_private_key());
        assert_eq!(parse_key(&format_key(&a)).unwrap(), a);
    }
}
