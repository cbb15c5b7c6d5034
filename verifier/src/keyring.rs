//! The trusted keys: kid → Ed25519 public key.
//!
//! A token names its key by `kid`; the key itself always comes from this ring,
//! never from the token.

use ed25519_dalek::VerifyingKey;

use crate::error::KeyError;

/// One trusted signing key of the issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    kid: String,
    key: VerifyingKey,
}

impl TrustedKey {
    /// Checks the key id and the public key. Small-order ("weak") keys are
    /// refused: anyone can forge signatures under them.
    pub fn new(kid: &str, public_key: &[u8; 32]) -> Result<Self, KeyError> {
        if !is_valid_kid(kid) {
            return Err(KeyError::InvalidKid);
        }
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| KeyError::InvalidKey)?;
        if key.is_weak() {
            return Err(KeyError::WeakKey);
        }
        Ok(TrustedKey {
            kid: kid.to_owned(),
            key,
        })
    }

    /// The key id, as carried in the token's protected header and in the JWK.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The 32-byte public key (the JWK `x`).
    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

/// The set of keys whose tokens are accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<TrustedKey>,
}

impl KeyRing {
    /// An empty ring: accepts no token.
    pub fn new() -> Self {
        KeyRing::default()
    }

    /// Adds a key; refuses a bad kid, a bad or weak key, or a kid already present.
    pub fn insert(&mut self, kid: &str, public_key: &[u8; 32]) -> Result<(), KeyError> {
        let key = TrustedKey::new(kid, public_key)?;
        if self.get(kid.as_bytes()).is_some() {
            return Err(KeyError::DuplicateKid);
        }
        self.keys.push(key);
        Ok(())
    }

    /// Builder form of [`KeyRing::insert`].
    pub fn with_key(mut self, kid: &str, public_key: &[u8; 32]) -> Result<Self, KeyError> {
        self.insert(kid, public_key)?;
        Ok(self)
    }

    /// The key with this id, if trusted.
    pub fn get(&self, kid: &[u8]) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.kid.as_bytes() == kid)
    }

    /// All trusted keys, in insertion order.
    pub fn keys(&self) -> impl Iterator<Item = &TrustedKey> {
        self.keys.iter()
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Whether `kid` is an acceptable key id: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn is_valid_kid(kid: &str) -> bool {
    is_valid_kid_bytes(kid.as_bytes())
}

/// Key ids are short ASCII names: 1–64 bytes of `[A-Za-z0-9._-]`.
pub(crate) fn is_valid_kid_bytes(kid: &[u8]) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8032 test 1 public key.
    const PK: [u8; 32] = [
        0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07,
        0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07,
        0x51, 0x1a,
    ];

    #[test]
    fn refuses_small_order_keys() {
        // The identity point and a point of order 8.
        let identity = {
            let mut k = [0u8; 32];
            k[0] = 1;
            k
        };
        assert_eq!(
            KeyRing::new().insert("a", &identity),
            Err(KeyError::WeakKey)
        );
        let mut order8 = [0u8; 32];
        hex::decode_to_slice(
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
            &mut order8,
        )
        .unwrap();
        assert_eq!(KeyRing::new().insert("a", &order8), Err(KeyError::WeakKey));
    }

    #[test]
    fn refuses_bad_kids_and_duplicates() {
        let mut ring = KeyRing::new();
        assert_eq!(ring.insert("", &PK), Err(KeyError::InvalidKid));
        assert_eq!(ring.insert("has space", &PK), Err(KeyError::InvalidKid));
        assert_eq!(ring.insert(&"k".repeat(65), &PK), Err(KeyError::InvalidKid));
        assert_eq!(ring.insert("prod-2026.1", &PK), Ok(()));
        assert_eq!(ring.insert("prod-2026.1", &PK), Err(KeyError::DuplicateKid));
        assert!(ring.get(b"prod-2026.1").is_some());
        assert!(ring.get(b"prod-2026.2").is_none());
    }
}
