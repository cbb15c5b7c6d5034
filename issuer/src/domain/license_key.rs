//! License keys: `CODITECT-PILOT-XXXX-YYYY-ZZZZ`, twelve characters from a
//! CSPRNG over an alphabet without look-alikes (no 0/O, 1/I/L), about 59
//! bits. Only a SHA-256 hash of the key is stored; being random and long,
//! the key needs no slow hash. The format itself is defined once, in
//! `proto::license_key`, which the CLI and the rate limiter follow too.

use core::fmt;

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

    /// What the database stores.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
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
    fn hash_is_hex_sha256_and_debug_hides_the_key() {
        let k = LicenseKey::parse("CODITECT-PILOT-ABCD-EFGH-JKMN").unwrap();
        // SHA-256 of the key's text (computed independently: `sha256sum`).
        assert_eq!(
            k.hash(),
            "707fb012eda31ce6c3387e2f3eae2799d4b0c3f00c0b4f95e5aed073bfb4f65c"
        );
        assert!(
            k.hash()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        // Only the hint (last group) is shown.
        let debug = format!("{k:?}");
        assert_eq!(debug, "LicenseKey(…JKMN)");
    }
}
