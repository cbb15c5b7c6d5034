//! The license key format, `CODITECT-PILOT-XXXX-YYYY-ZZZZ`: the one
//! definition that the issuer (keys it makes and reads, its rate limiter)
//! and the CLI (keys a person types) all follow.
//!
//! The twelve characters after the prefix come from an alphabet without
//! look-alikes (no 0/O, 1/I/L). A person may type the key in lower case and
//! with surrounding spaces; [`canonical`] forgives exactly that and refuses
//! everything else.

use core::fmt;

/// What every key starts with.
pub const PREFIX: &str = "CODITECT-PILOT-";
/// The characters of the three groups: A–Z and 2–9 without 0, O, 1, I, L.
pub const ALPHABET: &[u8; 31] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// Length of `CODITECT-PILOT-XXXX-YYYY-ZZZZ`.
pub const KEY_LEN: usize = 29;

/// The input is not in the `CODITECT-PILOT-XXXX-YYYY-ZZZZ` format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFormatError;

impl fmt::Display for KeyFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("license key must look like CODITECT-PILOT-XXXX-YYYY-ZZZZ")
    }
}

impl std::error::Error for KeyFormatError {}

/// The canonical (upper-case) form of a key as a person types or pastes
/// it: surrounding white space and lower case are forgiven, anything else
/// must match the format (the prefix, then three groups of four alphabet
/// characters separated by `-`).
pub fn canonical(input: &str) -> Result<String, KeyFormatError> {
    let key = input.trim().to_ascii_uppercase();
    if key.len() != KEY_LEN {
        return Err(KeyFormatError);
    }
    let rest = key.strip_prefix(PREFIX).ok_or(KeyFormatError)?;
    let mut groups = 0;
    for group in rest.split('-') {
        groups += 1;
        if group.len() != 4 || !group.bytes().all(|b| ALPHABET.contains(&b)) {
            return Err(KeyFormatError);
        }
    }
    if groups != 3 {
        return Err(KeyFormatError);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), so that the
    /// property-style tests below see many keys and always the same ones.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }

        /// A key as the issuer generates them.
        fn key(&mut self) -> String {
            let chars: Vec<char> = (0..12)
                .map(|_| char::from(ALPHABET[self.below(ALPHABET.len())]))
                .collect();
            let group = |i: usize| chars[i * 4..i * 4 + 4].iter().collect::<String>();
            format!("{PREFIX}{}-{}-{}", group(0), group(1), group(2))
        }
    }

    #[test]
    fn the_constants_agree() {
        assert_eq!(KEY_LEN, PREFIX.len() + 3 * 4 + 2);
        let mut sorted = ALPHABET.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALPHABET.len(), "no character twice");
        for look_alike in *b"0O1IL" {
            assert!(
                !ALPHABET.contains(&look_alike),
                "{}",
                char::from(look_alike)
            );
        }
    }

    #[test]
    fn forgives_case_and_spaces_only() {
        assert_eq!(
            canonical("  coditect-pilot-abcd-efgh-jkmn \n").unwrap(),
            "CODITECT-PILOT-ABCD-EFGH-JKMN"
        );
        for bad in [
            "",
            "hello",
            "CODITECT-PILOT-ABCD-EFGH",
            "CODITECT-PILOT-ABCD-EFGH-JKM0",
            "CODITECT-PILOT-ABCD-EFGH-JKMNP",
            "CODITECT-PILOTX-ABC-EFGH-JKMN",
            "XODITECT-PILOT-ABCD-EFGH-JKMN",
            "CODITECT-PILOT-ABCDEEFGH-JKMN",
            "CODITECT-PILOT-ABCD-EFGH-JKM",
            "CODITECT-PILOT-ÄBCD-EFGH-JKM",
            "CODITECT-PILOT-AB!D-EFGH-JKMN",
            "CODITECT-PILOT-ABCD EFGH-JKMN",
            "CODITECT-PILOT-ABCD-EFGH--JKM",
            "CODITECT-PILOT--ABCD-EFGH-JKM",
            "CODITECT PILOT ABCD-EFGH-JKMN",
            "CODITECT-PILOT-ABCD-EFGH-JK\u{0}N",
        ] {
            assert_eq!(canonical(bad), Err(KeyFormatError), "{bad:?}");
        }
    }

    #[test]
    fn the_error_says_what_a_key_looks_like() {
        assert_eq!(
            KeyFormatError.to_string(),
            "license key must look like CODITECT-PILOT-XXXX-YYYY-ZZZZ"
        );
    }

    #[test]
    fn every_generated_key_round_trips_in_any_case_and_padding() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..5_000 {
            let key = rng.key();
            assert_eq!(canonical(&key).as_deref(), Ok(key.as_str()));
            assert_eq!(
                canonical(&key.to_ascii_lowercase()).as_deref(),
                Ok(key.as_str())
            );
            let padded = format!(" \t{key}\r\n");
            assert_eq!(canonical(&padded).as_deref(), Ok(key.as_str()));
            // Canonical is a fixed point.
            assert_eq!(
                canonical(&canonical(&key).unwrap()).as_deref(),
                Ok(key.as_str())
            );
        }
    }

    #[test]
    fn look_alikes_anywhere_in_the_groups_are_refused() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for _ in 0..2_000 {
            let key = rng.key();
            // Positions of the twelve key characters (not the dashes).
            let positions: Vec<usize> = (PREFIX.len()..KEY_LEN)
                .filter(|&i| key.as_bytes()[i] != b'-')
                .collect();
            assert_eq!(positions.len(), 12);
            let at = positions[rng.below(positions.len())];
            for look_alike in ['0', 'O', '1', 'I', 'L', 'o', 'i', 'l'] {
                let mut bad = key.clone();
                bad.replace_range(at..=at, &look_alike.to_string());
                assert_eq!(canonical(&bad), Err(KeyFormatError), "{bad}");
            }
        }
    }

    #[test]
    fn a_changed_shape_is_refused() {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        for _ in 0..1_000 {
            let key = rng.key();
            // One character fewer or more, or a dash moved.
            assert!(canonical(&key[..KEY_LEN - 1]).is_err());
            assert!(canonical(&format!("{key}A")).is_err());
            let mut moved = key.clone().into_bytes();
            moved.swap(PREFIX.len() + 4, PREFIX.len() + 5);
            let moved = String::from_utf8(moved).unwrap();
            assert!(canonical(&moved).is_err(), "{moved}");
        }
    }
}
