//! The hardware id that binds a token to one machine.
//!
//! `hardware_id = hex(HMAC-SHA256(key = PRODUCT_KEY, message = machine id))`.
//! The raw machine id never leaves the machine; only this keyed digest does.

use core::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The fixed product key of the hardware-id HMAC, as ASCII.
pub const HARDWARE_ID_KEY: &[u8] = b"coditect-hardware-id-v1";

/// A 32-byte machine fingerprint, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HardwareId([u8; 32]);

/// Why a hardware id string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HardwareIdError {
    /// Not exactly 64 hexadecimal characters.
    NotHex64,
    /// The machine id is empty (after trimming white space).
    EmptyMachineId,
}

impl HardwareId {
    /// Derives the hardware id from this machine's id (e.g. the contents of
    /// `/etc/machine-id`). Surrounding ASCII white space (the file's newline)
    /// is ignored; nothing else is changed.
    pub fn from_machine_id(machine_id: &str) -> Self {
        // HMAC pads a key shorter than the block with zeros, so this 64-byte
        // array is the same key as `HARDWARE_ID_KEY` itself.
        let mut key = [0u8; 64];
        for (dst, src) in key.iter_mut().zip(HARDWARE_ID_KEY) {
            *dst = *src;
        }
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&key.into());
        mac.update(trim_ascii_space(machine_id).as_bytes());
        HardwareId(mac.finalize().into_bytes().into())
    }

    /// Like [`HardwareId::from_machine_id`], but refuses an empty machine id,
    /// which would give every such machine the same fingerprint.
    pub fn try_from_machine_id(machine_id: &str) -> Result<Self, HardwareIdError> {
        if trim_ascii_space(machine_id).is_empty() {
            return Err(HardwareIdError::EmptyMachineId);
        }
        Ok(Self::from_machine_id(machine_id))
    }

    /// Parses the 64-character hex form (either case).
    pub fn from_hex(s: &str) -> Result<Self, HardwareIdError> {
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return Err(HardwareIdError::NotHex64);
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| HardwareIdError::NotHex64)?;
        Ok(HardwareId(out))
    }

    /// Wraps 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        HardwareId(bytes)
    }

    /// The raw 32 bytes, as carried in the token.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex characters sent to the issuer.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Compares in time independent of where the ids differ.
    pub(crate) fn ct_eq(&self, other: &HardwareId) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

fn trim_ascii_space(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_whitespace())
}

impl fmt::Debug for HardwareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HardwareId({})", self.to_hex())
    }
}

impl fmt::Display for HardwareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for HardwareIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HardwareIdError::NotHex64 => "hardware id must be 64 hexadecimal characters",
            HardwareIdError::EmptyMachineId => "the machine id is empty",
        })
    }
}

impl std::error::Error for HardwareIdError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hmac_with_the_short_key() {
        // Reference value computed independently:
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"coditect-hardware-id-v1",
        //   b"4c4c4544-0042-3510-8052-b4c04f4e4b31",hashlib.sha256).hexdigest())'
        let id = HardwareId::from_machine_id("4c4c4544-0042-3510-8052-b4c04f4e4b31\n");
        assert_eq!(id.to_hex().len(), 64);
        assert_eq!(
            id.to_hex(),
            "a5fa4ec0ad3ed8520b4194f1b1cbc8f916b2aacecb6b64e651b41f8fb5fb6da7"
        );
    }

    #[test]
    fn hex_round_trip_and_refusals() {
        let id = HardwareId::from_machine_id("abc");
        assert_eq!(HardwareId::from_hex(&id.to_hex()), Ok(id));
        assert_eq!(HardwareId::from_hex(&id.to_hex().to_uppercase()), Ok(id));
        assert_eq!(HardwareId::from_hex("ab"), Err(HardwareIdError::NotHex64));
        assert_eq!(
            HardwareId::from_hex(&"g".repeat(64)),
            Err(HardwareIdError::NotHex64)
        );
        assert_eq!(
            HardwareId::from_hex(&"é".repeat(32)),
            Err(HardwareIdError::NotHex64)
        );
        assert_eq!(
            HardwareId::try_from_machine_id("  \n"),
            Err(HardwareIdError::EmptyMachineId)
        );
    }

    #[test]
    fn different_machines_differ() {
        assert_ne!(
            HardwareId::from_machine_id("a"),
            HardwareId::from_machine_id("b")
        );
    }
}
