//! License keys: `CODITECT-PILOT-XXXX-YYYY-ZZZZ`, twelve characters from a
//! CSPRNG over an alphabet without look-alikes (no 0/O, 1/I/L), about 59
//! bits. Only a keyed hash of the key is stored ([`LicenseKey::hash`]):
//! 59 bits are too few for an unkeyed hash (a leaked database could be
//! searched on GPUs in days), but with a secret pepper kept outside the
//! database a leaked table alone reveals nothing. Being random, the key
//! needs no slow hash. The format itself is defined once, in
//! `proto::license_key`, which the CLI and the rate limiter follow too.

use core::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use proto::license_key::{ALPHABET, KEY_LEN, KeyFormatError, PREFIX};

/// A license key in its canonical (upper-case) form. Not `Debug`-printed.
#[derive(Clone, PartialEq, Eq)]
pub struct LicenseKey(Zeroizing<String>);

impl LicenseKey {
    /// A new random key.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut chars = Vec::with_capacity(12);
        let mut buf = [0u8; 32];
        while chars.len() < 12 {
            getrandom::fill(&mut buf)?;
            // Rejection sampling keeps every character equally likely.
            for b in buf {
                if chars.len() < 12 && usize::from(b) < ALPHABET.len() * 8 {
                    chars.push(ALPHABET[usize::from(b) % ALPHABET.len()]);
                }
            }
        }
        let s = String::from_utf8_lossy(&chars).into_owned();
        Ok(LicenseKey(Zeroizing::new(format!(
            "{PREFIX}{}-{}-{}",
            &s[0..4],
            &s[4..8],
            &s[8..12]
        ))))
    }

    /// Accepts what a person types: surrounding spaces and lower case are
    /// forgiven, anything else must match the format.
    pub fn parse(input: &str) -> Result<Self, KeyFormatError> {
        proto::license_key::canonical(input).map(|key| LicenseKey(Zeroizing::new(key)))
    }

    /// The key as shown to its owner, once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database stores and looks keys up by (the only way a key
    /// is hashed).
    pub fn hash(&self, pepper: &KeyPepper) -> KeyHash {
        pepper.hash_digest(&Sha256::digest(self.0.as_bytes()))
    }

    /// The last group, to tell keys apart in listings.
    pub fn hint(&self) -> String {
        self.0[KEY_LEN - 4..].to_owned()
    }
}

impl fmt::Debug for LicenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LicenseKey(…{})", self.hint())
    }
}

/// The secret that keys the stored hashes of license keys
/// (`LICENSE_KEY_PEPPER`). It lives in the secret store, never in the
/// database, so a copy of the database alone cannot be searched for keys.
/// Not `Debug`-printed, wiped when dropped.
#[derive(Clone)]
pub struct KeyPepper(Zeroizing<Vec<u8>>);

/// The stored form of a license key: hex(HMAC-SHA256(pepper,
/// SHA-256(key))), 64 characters, in `licenses.key_hash` with
/// `key_hash_version` [`KEY_HASH_PEPPERED`].
///
/// Hashing the key's SHA-256 (rather than the key) lets a database from
/// before the pepper, which held hex(SHA-256(key)) (version
/// [`KEY_HASH_LEGACY`]), be converted in place without knowing the keys
/// ([`KeyPepper::upgrade_legacy`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyHash(String);

/// `licenses.key_hash_version` of a hash from before the pepper:
/// hex(SHA-256(key)). Also what an older issuer writes (the column's
/// default), so its rows are converted too.
pub const KEY_HASH_LEGACY: i16 = 1;

/// `licenses.key_hash_version` of a [`KeyHash`].
pub const KEY_HASH_PEPPERED: i16 = 2;

/// A pepper shorter than this is refused (production) or only warned
/// about (development).
pub const MIN_PEPPER_LEN: usize = 32;

impl KeyPepper {
    /// A pepper from its secret bytes (any length; the configuration
    /// decides what is long enough).
    pub fn new(secret: &[u8]) -> Self {
        KeyPepper(Zeroizing::new(secret.to_vec()))
    }

    /// Converts a legacy stored hash, hex(SHA-256(key)), to the current
    /// scheme; `None` if `legacy` is not 64 hexadecimal characters.
    pub fn upgrade_legacy(&self, legacy: &str) -> Option<KeyHash> {
        let digest: [u8; 32] = hex::decode(legacy).ok()?.try_into().ok()?;
        Some(self.hash_digest(&digest))
    }

    fn hash_digest(&self, sha256_of_key: &[u8]) -> KeyHash {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(sha256_of_key);
        KeyHash(hex::encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for KeyPepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPepper(…)")
    }
}

impl KeyHash {
    /// The text stored in `licenses.key_hash`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_format_and_differ() {
        let a = LicenseKey::generate().unwrap();
        let b = LicenseKey::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(LicenseKey::parse(a.expose()).unwrap(), a);
        assert_eq!(a.expose().len(), KEY_LEN);
        assert!(
            !a.expose()[PREFIX.len()..]
                .chars()
                .any(|c| "01OIL".contains(c))
        );
    }

    #[test]
    fn parse_forgives_case_and_spaces_only() {
        let k = LicenseKey::parse("  coditect-pilot-abcd-efgh-jkmn \n").unwrap();
        assert_eq!(k.expose(), "CODITECT-PILOT-ABCD-EFGH-JKMN");
        assert_eq!(k.hint(), "JKMN");
        for bad in [
            "",
            "CODITECT-PILOT-ABCD-EFGH",
            "CODITECT-PILOT-ABCD-EFGH-JKM0",
            "CODITECT-PILOT-ABCD-EFGH-JKMNP",
            "CODITECT-PILOTX-ABC-EFGH-JKMN",
            "XODITECT-PILOT-ABCD-EFGH-JKMN",
            "CODITECT-PILOT-ABCDEEFGH-JKMN",
            "CODITECT-PILOT-ÄBCD-EFGH-JKM",
        ] {
            assert_eq!(LicenseKey::parse(bad), Err(KeyFormatError), "{bad}");
        }
    }

    #[test]
    fn the_hash_is_keyed_by_the_pepper_and_debug_hides_key_and_pepper() {
        let k = LicenseKey::parse("CODITECT-PILOT-ABCD-EFGH-JKMN").unwrap();
        let pepper = KeyPepper::new(b"pepper one, at least thirty-two bytes");
        let h = k.hash(&pepper);
        assert_eq!(h.as_str().len(), 64);
        let unkeyed = hex::encode(Sha256::digest(k.expose().as_bytes()));
        assert_ne!(h.as_str(), unkeyed);
        // Another pepper, another hash: the key is not found under it.
        assert_ne!(h, k.hash(&KeyPepper::new(b"pepper two")));
        assert_eq!(h, k.hash(&pepper));
        // Only the hint (last group) is shown.
        assert_eq!(format!("{k:?}"), "LicenseKey(…JKMN)");
        assert!(!format!("{pepper:?}").contains("pepper one"));
    }

    #[test]
    fn a_legacy_hash_converts_to_the_peppered_hash_of_its_key() {
        let k = LicenseKey::parse("CODITECT-PILOT-ABCD-EFGH-JKMN").unwrap();
        let pepper = KeyPepper::new(b"the pepper");
        let legacy = hex::encode(Sha256::digest(k.expose().as_bytes()));
        assert_eq!(pepper.upgrade_legacy(&legacy), Some(k.hash(&pepper)));
        assert_eq!(
            pepper.upgrade_legacy(&legacy.to_uppercase()),
            Some(k.hash(&pepper))
        );
        for bad in [
            "",
            "abc",
            &legacy[..62],
            &format!("{legacy}00"),
            &"zz".repeat(32),
        ] {
            assert_eq!(pepper.upgrade_legacy(bad), None, "{bad}");
        }
    }
}
