//! Licenses and their activations on SQLite: creating, activating a
//! machine (never beyond `max_activations`, also under concurrent
//! requests), validating, deactivating and revoking.
//!
//! Every function takes the connection and `now` (Unix seconds); seat
//! accounting runs inside `BEGIN IMMEDIATE` transactions, so SQLite's write
//! lock serialises concurrent activations of the same license.

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use verifier::{HardwareId, ProjectLimit};

use crate::domain::StorageError;
use crate::domain::license::{
    self as rules, Activation, Freed, Grant, License, LicenseError, LicenseStatus, NewLicense,
    Release, ReleaseFacts, Releaser, Seat, TRANSFER_WINDOW, VALIDATION_TIME_RESOLUTION,
    project_limit_column,
};
use crate::domain::license_key::{
    KEY_HASH_LEGACY, KEY_HASH_PEPPERED, KeyHash, KeyPepper, LicenseKey,
};

const LICENSE_COLUMNS: &str = "l.id, l.key_hint, l.organization_id, o.name, l.email, l.tier, \
     l.status, l.expires_at, l.max_activations, l.max_projects, l.ai_requests, l.created_at, \
     l.revoked_reason";

fn license_from_row(r: &Row<'_>) -> rusqlite::Result<License> {
    let max_projects: Option<u32> = r.get(9)?;
    Ok(License {
        id: r.get(0)?,
        key_hint: r.get(1)?,
        organization_id: r.get(2)?,
        organization_name: r.get(3)?,
        email: r.get(4)?,
        tier: r.get(5)?,
        status: {
            let s: String = r.get(6)?;
            LicenseStatus::parse(&s).ok_or_else(|| {
                rusqlite::Error::InvalidColumnType(
                    6,
                    format!("license status {s}"),
                    rusqlite::types::Type::Text,
                )
            })?
        },
        expires_at: r.get(7)?,
        max_activations: r.get(8)?,
        max_projects: max_projects.map_or(ProjectLimit::Unlimited, ProjectLimit::Limited),
        ai_requests: r.get(10)?,
        created_at: r.get(11)?,
        revoked_reason: r.get(12)?,
    })
}

const ACTIVATION_COLUMNS: &str = "id, license_id, hardware_id, machine_name, status, \
     activated_at, last_validated_at, deactivated_at, offline_until";

fn activation_from_row(r: &Row<'_>) -> rusqlite::Result<Activation> {
    Ok(Activation {
        id: r.get(0)?,
        license_id: r.get(1)?,
        hardware_id: r.get(2)?,
        machine_name: r.get(3)?,
        active: r.get::<_, String>(4)? == "active",
        activated_at: r.get(5)?,
        last_validated_at: r.get(6)?,
        deactivated_at: r.get(7)?,
        offline_until: r.get(8)?,
    })
}

/// Creates a license; returns it with its key, which is shown only now.
pub fn create(
    conn: &Connection,
    new: &NewLicense<'_>,
    pepper: &KeyPepper,
    now: i64,
) -> Result<(License, LicenseKey), LicenseError> {
    let key = LicenseKey::generate().map_err(|e| StorageError::Failed(e.to_string()))?;
    let id = uuid::Uuid::new_v4().to_string();
    let ent = new.plan.entitlements;
    let max_projects = project_limit_column(ent.max_projects);
    conn.execute(
        "INSERT INTO licenses (id, key_hash, key_hint, organization_id, email, tier, status,
             expires_at, max_activations, max_projects, ai_requests, stripe_subscription_id,
             created_at, updated_at, key_hash_version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13)",
        params![
            id,
            key.hash(pepper).as_str(),
            key.hint(),
            new.organization_id,
            new.email,
            new.plan.id,
            new.expires_at,
            new.max_devices.unwrap_or(ent.max_devices),
            max_projects,
            ent.ai_requests,
            new.stripe_subscription_id,
            now,
            KEY_HASH_PEPPERED,
        ],
    )?;
    let license = get(conn, &id)?.ok_or(LicenseError::NotFound)?;
    Ok((license, key))
}

/// The license with this id.
pub fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<License>> {
    conn.query_row(
        &format!(
            "SELECT {LICENSE_COLUMNS} FROM licenses l
                 LEFT JOIN organizations o ON o.id = l.organization_id WHERE l.id = ?1"
        ),
        [id],
        license_from_row,
    )
    .optional()
}

/// The license with this key (by its peppered hash).
pub fn find_by_key(conn: &Connection, key: &KeyHash) -> rusqlite::Result<Option<License>> {
    conn.prepare_cached(&format!(
        "SELECT {LICENSE_COLUMNS} FROM licenses l
             LEFT JOIN organizations o ON o.id = l.organization_id WHERE l.key_hash = ?1"
    ))?
    .query_row([key.as_str()], license_from_row)
    .optional()
}

/// Converts every key hash of the scheme before the pepper (hex SHA-256)
/// to the peppered one, in one transaction; returns how many. Running it
/// again finds none (idempotent); a row that is not a hash is left alone.
pub fn upgrade_legacy_key_hashes(
    conn: &mut Connection,
    pepper: &KeyPepper,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let legacy: Vec<(String, String)> = tx
        .prepare("SELECT id, key_hash FROM licenses WHERE key_hash_version = ?1")?
        .query_map([KEY_HASH_LEGACY], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut converted = 0;
    for (id, old) in &legacy {
        match pepper.upgrade_legacy(old) {
            Some(new) => {
                converted += tx.execute(
                    "UPDATE licenses SET key_hash = ?2, key_hash_version = ?3
                     WHERE id = ?1 AND key_hash_version = ?4",
                    params![id, new.as_str(), KEY_HASH_PEPPERED, KEY_HASH_LEGACY],
                )?;
            }
            None => {
                tracing::warn!(license = %id, "stored key hash is not a SHA-256; left as it is")
            }
        }
    }
    tx.commit()?;
    Ok(converted)
}

/// All licenses, newest first, or those of one organization.
pub fn list(conn: &Connection, organization_id: Option<&str>) -> rusqlite::Result<Vec<License>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {LICENSE_COLUMNS} FROM licenses l
         LEFT JOIN organizations o ON o.id = l.organization_id
         WHERE ?1 IS NULL OR l.organization_id = ?1
         ORDER BY l.created_at DESC, l.id"
    ))?;
    let rows = stmt.query_map([organization_id], license_from_row)?;
    rows.collect()
}

/// All licenses (or an organization's) with their activations, in one
/// read transaction.
pub fn list_with_activations(
    conn: &mut Connection,
    organization_id: Option<&str>,
) -> rusqlite::Result<Vec<(License, Vec<Activation>)>> {
    let read = conn.transaction()?;
    let licenses = list(&read, organization_id)?
        .into_iter()
        .map(|l| {
            let acts = activations(&read, &l.id)?;
            Ok((l, acts))
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    read.commit()?;
    Ok(licenses)
}

/// The activations of a license, active ones first.
pub fn activations(conn: &Connection, license_id: &str) -> rusqlite::Result<Vec<Activation>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ACTIVATION_COLUMNS} FROM activations WHERE license_id = ?1
         ORDER BY status = 'active' DESC, activated_at, id"
    ))?;
    let rows = stmt.query_map([license_id], activation_from_row)?;
    rows.collect()
}

fn active_count(conn: &Connection, license_id: &str) -> rusqlite::Result<u32> {
    conn.prepare_cached(
        "SELECT count(*) FROM activations WHERE license_id = ?1 AND status = 'active'",
    )?
    .query_row([license_id], |r| r.get(0))
}

fn activation_for(
    conn: &Connection,
    license_id: &str,
    hardware_id: &HardwareId,
) -> rusqlite::Result<Option<Activation>> {
    conn.prepare_cached(&format!(
        "SELECT {ACTIVATION_COLUMNS} FROM activations WHERE license_id = ?1 AND hardware_id = ?2"
    ))?
    .query_row(
        params![license_id, hardware_id.to_hex()],
        activation_from_row,
    )
    .optional()
}

fn usable_license(conn: &Connection, key: &KeyHash, now: i64) -> Result<License, LicenseError> {
    let license = find_by_key(conn, key)?.ok_or(LicenseError::NotFound)?;
    match license.check_usable(now) {
        Ok(()) => Ok(license),
        // Say why, when the cause is a failed payment.
        Err(LicenseError::Expired { since }) => {
            let failed_at: Option<i64> = conn
                .query_row(
                    "SELECT s.past_due_since FROM subscriptions s
                     JOIN licenses l ON l.stripe_subscription_id = s.stripe_subscription_id
                     WHERE l.id = ?1 AND s.status IN ('past_due', 'unpaid')",
                    [&license.id],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            Err(match failed_at {
                Some(failed_at) => LicenseError::PaymentOverdue { since, failed_at },
                None => LicenseError::Expired { since },
            })
        }
        Err(other) => Err(other),
    }
}

/// Activates this machine on the license. The same machine again gets its
/// existing activation back; a new machine needs a free seat.
pub fn activate(
    conn: &mut Connection,
    key: &KeyHash,
    hardware_id: &HardwareId,
    machine_name: Option<&str>,
    offline_until: Option<i64>,
    now: i64,
) -> Result<Grant, LicenseError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let license = usable_license(&tx, key, now)?;
    let existing = activation_for(&tx, &license.id, hardware_id)?;
    let used = active_count(&tx, &license.id)?;
    match existing.as_ref().filter(|a| a.active) {
        Some(a) => rules::seat_rank_allowed(&license, seat_rank(&tx, a)?, used)?,
        None if used >= license.max_activations => {
            return Err(LicenseError::TooManyActivations {
                max: license.max_activations,
            });
        }
        None => {}
    }
    let already_active = existing.as_ref().is_some_and(|a| a.active);
    let activation_id = match existing {
        Some(a) => {
            tx.execute(
                "UPDATE activations SET status = 'active', deactivated_at = NULL,
                     machine_name = coalesce(?2, machine_name), last_validated_at = ?3,
                     activated_at = CASE WHEN status = 'active' THEN activated_at ELSE ?3 END,
                     offline_until = max(coalesce(offline_until, ?4), coalesce(?4, offline_until))
                 WHERE id = ?1",
                params![a.id, machine_name, now, offline_until],
            )?;
            a.id
        }
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            tx.execute(
                "INSERT INTO activations (id, license_id, hardware_id, machine_name, status,
                     activated_at, last_validated_at, offline_until)
                 VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?5, ?6)",
                params![
                    id,
                    license.id,
                    hardware_id.to_hex(),
                    machine_name,
                    now,
                    offline_until
                ],
            )?;
            id
        }
    };
    let grant = grant(&tx, license, &activation_id, already_active, now)?;
    tx.commit()?;
    Ok(grant)
}

/// How many of the license's active machines were activated before this
/// one (its place in `domain::license::seat_rank_allowed`).
fn seat_rank(conn: &Connection, activation: &Activation) -> rusqlite::Result<u32> {
    conn.prepare_cached(
        "SELECT count(*) FROM activations
         WHERE license_id = ?1 AND status = 'active' AND (activated_at, id) < (?2, ?3)",
    )?
    .query_row(
        params![
            activation.license_id,
            activation.activated_at,
            activation.id
        ],
        |r| r.get(0),
    )
}

/// When the license's seats freed by its holder within the transfer
/// window were freed, oldest first.
pub fn transfers_since(
    conn: &Connection,
    license_id: &str,
    since: i64,
) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT freed_at FROM seat_transfers WHERE license_id = ?1 AND freed_at > ?2
         ORDER BY freed_at",
    )?;
    let rows = stmt.query_map(params![license_id, since], |r| r.get(0))?;
    rows.collect()
}

fn grant(
    conn: &Connection,
    license: License,
    activation_id: &str,
    already_active: bool,
    now: i64,
) -> Result<Grant, LicenseError> {
    let activation = conn
        .prepare_cached(&format!(
            "SELECT {ACTIVATION_COLUMNS} FROM activations WHERE id = ?1"
        ))?
        .query_row([activation_id], activation_from_row)?;
    let devices_used = active_count(conn, &license.id)?;
    let recent_transfers = transfers_since(conn, &license.id, now - TRANSFER_WINDOW)?;
    Ok(Grant {
        license,
        activation,
        devices_used,
        already_active,
        recent_transfers,
    })
}

/// Renews an activated machine's standing: only a machine with an active
/// activation on a usable license passes; `last_validated_at` moves to `now`
/// (to the minute).
pub fn validate(
    conn: &mut Connection,
    key: &KeyHash,
    hardware_id: &HardwareId,
    now: i64,
) -> Result<Grant, LicenseError> {
    // One read transaction for the three reads: one snapshot, one lock.
    let read = conn.transaction()?;
    let license = usable_license(&read, key, now)?;
    let mut activation = activation_for(&read, &license.id, hardware_id)?
        .filter(|a| a.active)
        .ok_or(LicenseError::NotActivated)?;
    let devices_used = active_count(&read, &license.id)?;
    rules::seat_rank_allowed(&license, seat_rank(&read, &activation)?, devices_used)?;
    let recent_transfers = transfers_since(&read, &license.id, now - TRANSFER_WINDOW)?;
    read.commit()?;
    if now.saturating_sub(activation.last_validated_at) >= VALIDATION_TIME_RESOLUTION {
        // Only ever moves forward, and only while the machine is active.
        conn.prepare_cached(
            "UPDATE activations SET last_validated_at = ?2
             WHERE id = ?1 AND status = 'active' AND last_validated_at < ?2",
        )?
        .execute(params![activation.id, now])?;
        activation.last_validated_at = now;
    }
    Ok(Grant {
        license,
        activation,
        devices_used,
        already_active: true,
        recent_transfers,
    })
}

/// Frees a seat under `domain::license::release`, in one write
/// transaction. Freeing an already free seat is not an error (the result
/// is the same); an unknown one is.
pub fn deactivate(
    conn: &mut Connection,
    key: Option<&KeyHash>,
    by: &Releaser<'_>,
    seat: Seat<'_>,
    now: i64,
) -> Result<Freed, LicenseError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // A holder names the license by its key (hashed by the store), the
    // operator by its id.
    let license = match (by, key) {
        (Releaser::Holder { .. }, Some(hash)) => find_by_key(&tx, hash)?,
        (Releaser::Holder { .. }, None) => None,
        (Releaser::Operator { license_id }, _) | (Releaser::Organization { license_id, .. }, _) => {
            get(&tx, license_id)?
        }
    }
    .ok_or(LicenseError::NotFound)?;
    let target = match seat {
        Seat::Machine(hw) => activation_for(&tx, &license.id, hw)?,
        Seat::Activation(id) => tx
            .query_row(
                &format!(
                    "SELECT {ACTIVATION_COLUMNS} FROM activations WHERE id = ?1 AND license_id = ?2"
                ),
                params![id, license.id],
                activation_from_row,
            )
            .optional()?,
    };
    let target = match (target, seat) {
        (Some(a), _) => a,
        (None, Seat::Machine(_)) => return Err(LicenseError::NotActivated),
        (None, Seat::Activation(_)) => return Err(LicenseError::ActivationNotFound),
    };
    let asker_active = match by {
        Releaser::Holder { machine, .. } => {
            activation_for(&tx, &license.id, machine)?.is_some_and(|a| a.active)
        }
        Releaser::Operator { .. } | Releaser::Organization { .. } => false,
    };
    let mut recent_transfers = transfers_since(&tx, &license.id, now - TRANSFER_WINDOW)?;
    let release = rules::release(
        by,
        ReleaseFacts {
            license: &license,
            target: &target,
            asker_active,
            devices_used: active_count(&tx, &license.id)?,
            recent_transfers: &recent_transfers,
        },
        now,
    )?;
    let counted = release == Release::Free { counted: true };
    if let Release::Free { .. } = release {
        tx.execute(
            "UPDATE activations SET status = 'deactivated', deactivated_at = ?2
             WHERE id = ?1 AND status = 'active'",
            params![target.id, now],
        )?;
    }
    if counted {
        tx.execute(
            "INSERT INTO seat_transfers (license_id, activation_id, freed_at) VALUES (?1, ?2, ?3)",
            params![license.id, target.id, now],
        )?;
        recent_transfers.push(now);
    }
    let activation = tx.query_row(
        &format!("SELECT {ACTIVATION_COLUMNS} FROM activations WHERE id = ?1"),
        [&target.id],
        activation_from_row,
    )?;
    let devices_used = active_count(&tx, &license.id)?;
    tx.commit()?;
    Ok(Freed {
        license,
        activation,
        devices_used,
        recent_transfers,
        counted,
    })
}

/// Revokes a license: renewals are refused from now on, so every machine's
/// token lapses within its lifetime.
pub fn revoke(
    conn: &Connection,
    id: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<License, LicenseError> {
    let changed = conn.execute(
        "UPDATE licenses SET status = 'revoked', revoked_at = ?2, revoked_reason = ?3, updated_at = ?2
         WHERE id = ?1",
        params![id, now, reason],
    )?;
    if changed == 0 {
        return Err(LicenseError::NotFound);
    }
    get(conn, id)?.ok_or(LicenseError::NotFound)
}

#[cfg(test)]
mod tests;

/// `Store::replace_key`: the new key's hash and hint, and its mail, in one
/// transaction.
pub fn replace_key(
    conn: &mut Connection,
    pepper: &KeyPepper,
    license_id: &str,
    organization_id: &str,
    key: &LicenseKey,
    mail: &crate::domain::mail::Mail,
    now: i64,
) -> Result<License, LicenseError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let changed = tx.execute(
        "UPDATE licenses SET key_hash = ?3, key_hint = ?4, key_hash_version = ?5, updated_at = ?6
         WHERE id = ?1 AND organization_id = ?2 AND status <> 'revoked'",
        params![
            license_id,
            organization_id,
            key.hash(pepper).as_str(),
            key.hint(),
            KEY_HASH_PEPPERED,
            now
        ],
    )?;
    if changed == 0 {
        return Err(LicenseError::NotFound);
    }
    super::outbox::enqueue(&tx, mail, now)?;
    let license = get(&tx, license_id)?.ok_or(LicenseError::NotFound)?;
    tx.commit()?;
    Ok(license)
}
