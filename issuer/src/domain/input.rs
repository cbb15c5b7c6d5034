//! The rules for what people and programs send: emails, passwords, names,
//! license keys, hardware ids. Each check turns text into the typed value
//! the use cases take, or a [`FieldError`] that names the field and says
//! what is expected (the API answers it as 422 `invalid_field`, the admin
//! commands as a usage error).

use verifier::HardwareId;

use super::license_key::LicenseKey;

/// A field that does not follow its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {detail}")]
pub struct FieldError {
    pub field: String,
    /// What the value must be, e.g. "must be 64 hexadecimal characters".
    pub detail: String,
}

impl FieldError {
    pub fn new(field: &str, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.to_owned(),
            detail: detail.into(),
        }
    }
}

pub const MAX_EMAIL: usize = 254;

/// The patterns the spec states for these fields (see `FIELD_PATTERNS`).
pub const EMAIL_PATTERN: &str = r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$";
pub const NAME_PATTERN: &str = r"^[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\s][^\x00-\x1f\x7f]*$";
pub const TEXT_PATTERN: &str = r"^[^\x00-\x1f\x7f]*$";
pub const KEY_PATTERN: &str =
    r"^CODITECT-PILOT-[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}$";
pub const HARDWARE_ID_PATTERN: &str = r"^[0-9a-fA-F]{64}$";
pub const MIN_PASSWORD: usize = 10;
pub const MAX_PASSWORD: usize = 128;
/// In bytes: the limit of a text claim of the license token, which
/// carries the organization's name.
pub const MAX_NAME: usize = verifier::MAX_TEXT_LEN;
pub const MAX_VERSION: usize = 64;

/// An email address as the schema's pattern describes it:
/// `local@domain.tld` with ASCII letters, digits and `._%+'-` in the local
/// part, labels of letters, digits and `-` in the domain; 6–254 characters.
pub fn email(field: &str, value: &str) -> Result<String, FieldError> {
    let v = value;
    let bad = || FieldError::new(field, "must be an email address such as name@example.com");
    if v.len() < 6 || v.len() > MAX_EMAIL {
        return Err(bad());
    }
    let (local, domain) = v.split_once('@').ok_or_else(bad)?;
    let local_ok = !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._%+'-".contains(&b));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !local_ok || !domain_ok {
        return Err(bad());
    }
    Ok(v.to_owned())
}

/// The control characters the schemas' patterns exclude (`\x00-\x1f`, `\x7f`).
fn is_ascii_control(c: char) -> bool {
    c.is_ascii_control()
}

pub fn password(field: &str, value: &str) -> Result<(), FieldError> {
    let n = value.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(FieldError::new(
            field,
            format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long"),
        ));
    }
    Ok(())
}

/// A name people typed (company, machine): trimmed, 1–255 bytes of UTF-8,
/// no control characters. Bytes, not characters: an organization's name
/// goes into every license token, whose text claims are limited to
/// `verifier::MAX_TEXT_LEN` (255) bytes, so a longer name would make a
/// license that can never be activated.
pub fn name(field: &str, value: &str) -> Result<String, FieldError> {
    let v = value.trim();
    if v.is_empty() || v.len() > MAX_NAME || v.chars().any(is_ascii_control) {
        return Err(FieldError::new(
            field,
            format!(
                "must be 1 to {MAX_NAME} bytes long in UTF-8 (letters outside ASCII take 2 to 4 bytes each), without control characters"
            ),
        ));
    }
    Ok(v.to_owned())
}

pub fn optional_name(field: &str, value: Option<&str>) -> Result<Option<String>, FieldError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => name(field, v).map(Some),
    }
}

/// A license key in its canonical form (upper case, no spaces), as the
/// spec's pattern says; the CLI normalises what people type.
pub fn license_key(field: &str, value: &str) -> Result<LicenseKey, FieldError> {
    LicenseKey::parse(value)
        .ok()
        .filter(|k| k.expose() == value)
        .ok_or_else(|| FieldError::new(field, "must look like CODITECT-PILOT-XXXX-YYYY-ZZZZ"))
}

pub fn hardware_id(field: &str, value: &str) -> Result<HardwareId, FieldError> {
    HardwareId::from_hex(value)
        .map_err(|_| FieldError::new(field, "must be 64 hexadecimal characters"))
}

pub fn client_version(field: &str, value: Option<&str>) -> Result<(), FieldError> {
    match value {
        Some(v) if v.chars().count() > MAX_VERSION || v.chars().any(is_ascii_control) => Err(
            FieldError::new(field, format!("must be at most {MAX_VERSION} characters")),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in [
            "ab@c.co",
            "hal@az1.ai",
            "first.last+tag@sub.example.org",
            "o'neil@x-y.io",
        ] {
            assert!(email("email", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            " hal@az1.ai",
            "a@b",
            "@b.co",
            "a@.co",
            "a@b.",
            "a b@c.de",
            "a@b..c",
            "a@@b.co",
        ] {
            let err = email("email", bad).unwrap_err();
            assert_eq!(err.field, "email", "{bad}");
        }
        assert!(email("email", &format!("{}@x.io", "a".repeat(250))).is_err());
    }

    #[test]
    fn names_and_passwords() {
        assert_eq!(name("company_name", "  Acme ").unwrap(), "Acme");
        assert!(name("company_name", "   ").is_err());
        assert!(name("company_name", "a\u{0}b").is_err());
        assert!(name("company_name", &"x".repeat(256)).is_err());
        // Counted in bytes: 255 characters of two bytes each are too long,
        // 127 of them (254 bytes) are not.
        assert!(name("company_name", &"é".repeat(255)).is_err());
        assert!(name("company_name", &"é".repeat(128)).is_err());
        assert_eq!(name("company_name", &"é".repeat(127)).unwrap().len(), 254);
        assert_eq!(name("company_name", &"x".repeat(255)).unwrap().len(), 255);
        assert!(password("password", "short").is_err());
        assert!(password("password", "long enough!").is_ok());
        assert!(password("password", &"p".repeat(129)).is_err());
    }
}
