//! What the CLI reads from the machine: the clock, the machine id (turned
//! into the hardware id), the host name.
//!
//! Builds with the `test-hooks` feature (tests only) let CODITECT_TEST_NOW and
//! CODITECT_TEST_MACHINE_ID stand in for the clock and the machine id; other
//! builds have no such switch.

use std::time::{SystemTime, UNIX_EPOCH};

use verifier::HardwareId;

use crate::error::{CliError, CliResult};

/// Current Unix time.
pub fn now() -> u64 {
    #[cfg(feature = "test-hooks")]
    if let Some(t) = std::env::var("CODITECT_TEST_NOW")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return t;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This machine's hardware id: HMAC of the OS machine id (which never leaves
/// the machine).
pub fn hardware_id() -> CliResult<HardwareId> {
    #[cfg(feature = "test-hooks")]
    if let Ok(id) = std::env::var("CODITECT_TEST_MACHINE_ID") {
        return hardware_id_from(&id);
    }
    let id = machine_uid::get().map_err(|e| {
        CliError::user(
            "no_machine_id",
            format!("cannot read this machine's id: {e}"),
            Some(MACHINE_ID_HINT.to_owned()),
        )
    })?;
    hardware_id_from(&id)
}

/// Where the machine id comes from on this platform, and how to fix it.
const MACHINE_ID_HINT: &str = if cfg!(target_os = "windows") {
    "coditect reads the registry value HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Cryptography\\MachineGuid, which Windows sets when it is installed; check that it exists and that this account may read it"
} else if cfg!(target_os = "macos") {
    "coditect reads this Mac's hardware UUID (as `ioreg -rd1 -c IOPlatformExpertDevice` shows it); check that it is readable from this account"
} else {
    "on Linux, /etc/machine-id must exist: run `systemd-machine-id-setup` (or mount the host's /etc/machine-id into the container)"
};

fn hardware_id_from(machine_id: &str) -> CliResult<HardwareId> {
    HardwareId::try_from_machine_id(machine_id).map_err(|_| {
        CliError::user(
            "no_machine_id",
            "this machine's id is empty",
            Some(MACHINE_ID_HINT.to_owned()),
        )
    })
}

/// A default name for this machine.
pub fn machine_name() -> String {
    gethostname::gethostname()
        .to_string_lossy()
        .chars()
        .filter(|c| !c.is_control())
        .take(255)
        .collect()
}
