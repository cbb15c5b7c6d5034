//! The license claims and their one CBOR encoding (`schemas/license-token.cddl`).
//!
//! Encoding and decoding live side by side so that what the issuer signs and
//! what the CLI accepts cannot drift apart: a claims set is accepted only if
//! re-encoding the decoded claims gives back exactly the signed bytes.

#[cfg(feature = "sign")]
use ciborium::value::Integer;
use ciborium::value::Value;

use crate::error::Malformed;
use crate::hardware::HardwareId;

/// Registered CWT claim keys (RFC 8392 §4).
pub(crate) mod key {
    pub const ISS: i64 = 1;
    pub const SUB: i64 = 2;
    pub const EXP: i64 = 4;
    pub const NBF: i64 = 5;
    pub const IAT: i64 = 6;
    pub const CTI: i64 = 7;
    // Private claims, below -65536 (RFC 8392 §9.1 private use).
    pub const TIER: i64 = -65537;
    pub const ENTITLEMENTS: i64 = -65538;
    pub const HARDWARE_ID: i64 = -65539;
    pub const LICENSE_EXP: i64 = -65540;
    pub const RENEW_AFTER: i64 = -65541;
    pub const ORGANIZATION: i64 = -65542;
    pub const EMAIL: i64 = -65543;
    pub const DEVICES_USED: i64 = -65544;
    // Keys inside the entitlements map.
    pub const MAX_PROJECTS: i64 = 1;
    pub const AI_REQUESTS: i64 = 2;
    pub const MAX_DEVICES: i64 = 3;
}

/// Longest text claim accepted, in bytes (e-mail addresses, names).
pub const MAX_TEXT_LEN: usize = 255;

/// How many projects a license allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProjectLimit {
    /// At most this many projects.
    Limited(u32),
    /// No limit (encoded as CBOR `null`).
    Unlimited,
}

impl ProjectLimit {
    /// Whether one more project fits when `existing` are already there.
    pub fn allows(&self, existing: u32) -> bool {
        match self {
            ProjectLimit::Limited(max) => existing < *max,
            ProjectLimit::Unlimited => true,
        }
    }
}

/// What the license entitles its holder to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entitlements {
    /// Projects the CLI may initialise.
    pub max_projects: ProjectLimit,
    /// AI requests per billing period.
    pub ai_requests: u32,
    /// Machines that may be activated at once (the license's `max_activations`).
    pub max_devices: u32,
}

/// The claims of a license token, as signed by the issuer.
///
/// All times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LicenseClaims {
    /// `iss`: who issued the token.
    pub issuer: String,
    /// `sub`: the license id.
    pub license_id: String,
    /// `exp`: end of this token's offline validity.
    pub expires_at: u64,
    /// `nbf`: start of this token's validity.
    pub not_before: u64,
    /// `iat`: when the token was signed.
    pub issued_at: u64,
    /// `cti`: 16 random bytes naming this token.
    pub token_id: [u8; 16],
    /// The plan, e.g. `pilot-professional`.
    pub tier: String,
    /// What the plan allows.
    pub entitlements: Entitlements,
    /// The machine this token is bound to.
    pub hardware_id: HardwareId,
    /// When the license itself ends.
    pub license_expires_at: u64,
    /// From when the CLI should renew the token online.
    pub renew_after: u64,
    /// The organisation that holds the license.
    pub organization: String,
    /// The e-mail address of the license holder.
    pub email: String,
    /// Machines activated on the license when this token was issued
    /// (allowed: [`Entitlements::max_devices`]).
    pub devices_used: u32,
}

#[cfg(feature = "sign")]
fn int(k: i64) -> Value {
    Value::Integer(Integer::from(k))
}

#[cfg(feature = "sign")]
fn uint(v: u64) -> Value {
    Value::Integer(Integer::from(v))
}

impl LicenseClaims {
    #[cfg(feature = "sign")]
    /// The claims set as a CBOR value, keys in the order the CDDL gives.
    pub(crate) fn to_value(&self) -> Value {
        let ent = &self.entitlements;
        let max_projects = match ent.max_projects {
            ProjectLimit::Limited(n) => uint(n.into()),
            ProjectLimit::Unlimited => Value::Null,
        };
        Value::Map(vec![
            (int(key::ISS), Value::Text(self.issuer.clone())),
            (int(key::SUB), Value::Text(self.license_id.clone())),
            (int(key::EXP), uint(self.expires_at)),
            (int(key::NBF), uint(self.not_before)),
            (int(key::IAT), uint(self.issued_at)),
            (int(key::CTI), Value::Bytes(self.token_id.to_vec())),
            (int(key::TIER), Value::Text(self.tier.clone())),
            (
                int(key::ENTITLEMENTS),
                Value::Map(vec![
                    (int(key::MAX_PROJECTS), max_projects),
                    (int(key::AI_REQUESTS), uint(ent.ai_requests.into())),
                    (int(key::MAX_DEVICES), uint(ent.max_devices.into())),
                ]),
            ),
            (
                int(key::HARDWARE_ID),
                Value::Bytes(self.hardware_id.as_bytes().to_vec()),
            ),
            (int(key::LICENSE_EXP), uint(self.license_expires_at)),
            (int(key::RENEW_AFTER), uint(self.renew_after)),
            (
                int(key::ORGANIZATION),
                Value::Text(self.organization.clone()),
            ),
            (int(key::EMAIL), Value::Text(self.email.clone())),
            (int(key::DEVICES_USED), uint(self.devices_used.into())),
        ])
    }

    #[cfg(feature = "sign")]
    /// The deterministic CBOR encoding of the claims set.
    pub(crate) fn to_cbor(&self) -> Result<Vec<u8>, Malformed> {
        self.check_text_lengths()?;
        let mut out = Vec::with_capacity(256);
        ciborium::ser::into_writer(&self.to_value(), &mut out).map_err(|_| Malformed::NotCbor)?;
        Ok(out)
    }

    #[cfg(feature = "sign")]
    fn check_text_lengths(&self) -> Result<(), Malformed> {
        for (name, text) in [
            ("iss", &self.issuer),
            ("sub", &self.license_id),
            ("tier", &self.tier),
            ("organization", &self.organization),
            ("email", &self.email),
        ] {
            if text.len() > MAX_TEXT_LEN {
                return Err(Malformed::Claim(name));
            }
        }
        Ok(())
    }

    /// Reads a claims set that has already passed the generic CBOR checks
    /// (canonical, no duplicate keys). Keys must come exactly in CDDL order.
    pub(crate) fn from_value(value: Value) -> Result<Self, Malformed> {
        let Value::Map(entries) = value else {
            return Err(Malformed::Claim("claims set"));
        };
        let mut it = entries.into_iter();
        let mut next = |k: i64, name: &'static str| -> Result<Value, Malformed> {
            match it.next() {
                Some((Value::Integer(got), v)) if i128::from(got) == i128::from(k) => Ok(v),
                _ => Err(Malformed::Claim(name)),
            }
        };
        let issuer = text(next(key::ISS, "iss")?, "iss")?;
        let license_id = text(next(key::SUB, "sub")?, "sub")?;
        let expires_at = time(next(key::EXP, "exp")?, "exp")?;
        let not_before = time(next(key::NBF, "nbf")?, "nbf")?;
        let issued_at = time(next(key::IAT, "iat")?, "iat")?;
        let token_id = fixed_bytes::<16>(next(key::CTI, "cti")?, "cti")?;
        let tier = text(next(key::TIER, "tier")?, "tier")?;
        let entitlements = entitlements(next(key::ENTITLEMENTS, "entitlements")?)?;
        let hardware_id =
            HardwareId::from_bytes(fixed_bytes::<32>(next(key::HARDWARE_ID, "hwid")?, "hwid")?);
        let license_expires_at = time(next(key::LICENSE_EXP, "license_exp")?, "license_exp")?;
        let renew_after = time(next(key::RENEW_AFTER, "renew_after")?, "renew_after")?;
        let organization = text(next(key::ORGANIZATION, "organization")?, "organization")?;
        let email = text(next(key::EMAIL, "email")?, "email")?;
        let devices_used = small(next(key::DEVICES_USED, "devices_used")?, "devices_used")?;
        if it.next().is_some() {
            return Err(Malformed::Claim("unknown claim"));
        }
        Ok(LicenseClaims {
            issuer,
            license_id,
            expires_at,
            not_before,
            issued_at,
            token_id,
            tier,
            entitlements,
            hardware_id,
            license_expires_at,
            renew_after,
            organization,
            email,
            devices_used,
        })
    }
}

fn entitlements(v: Value) -> Result<Entitlements, Malformed> {
    const NAME: &str = "entitlements";
    let Value::Map(entries) = v else {
        return Err(Malformed::Claim(NAME));
    };
    let mut it = entries.into_iter();
    let mut next = |k: i64| -> Result<Value, Malformed> {
        match it.next() {
            Some((Value::Integer(got), v)) if i128::from(got) == i128::from(k) => Ok(v),
            _ => Err(Malformed::Claim(NAME)),
        }
    };
    let max_projects = match next(key::MAX_PROJECTS)? {
        Value::Null => ProjectLimit::Unlimited,
        other => ProjectLimit::Limited(small(other, NAME)?),
    };
    let ai_requests = small(next(key::AI_REQUESTS)?, NAME)?;
    let max_devices = small(next(key::MAX_DEVICES)?, NAME)?;
    if it.next().is_some() {
        return Err(Malformed::Claim(NAME));
    }
    Ok(Entitlements {
        max_projects,
        ai_requests,
        max_devices,
    })
}

fn text(v: Value, name: &'static str) -> Result<String, Malformed> {
    match v {
        Value::Text(s) if s.len() <= MAX_TEXT_LEN => Ok(s),
        _ => Err(Malformed::Claim(name)),
    }
}

fn time(v: Value, name: &'static str) -> Result<u64, Malformed> {
    match v {
        Value::Integer(i) => u64::try_from(i).map_err(|_| Malformed::Claim(name)),
        _ => Err(Malformed::Claim(name)),
    }
}

fn small(v: Value, name: &'static str) -> Result<u32, Malformed> {
    match v {
        Value::Integer(i) => u32::try_from(i).map_err(|_| Malformed::Claim(name)),
        _ => Err(Malformed::Claim(name)),
    }
}

fn fixed_bytes<const N: usize>(v: Value, name: &'static str) -> Result<[u8; N], Malformed> {
    match v {
        Value::Bytes(b) => <[u8; N]>::try_from(b.as_slice()).map_err(|_| Malformed::Claim(name)),
        _ => Err(Malformed::Claim(name)),
    }
}
