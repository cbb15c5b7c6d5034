//! Licenses and their activations on PostgreSQL.
//!
//! The seat invariant: an activation and a freed seat take a row lock on
//! the license (`SELECT … FOR UPDATE`) before they count seats, so
//! concurrent activations of one license, from any number of issuer
//! processes, take their turn on that row; other licenses are not held
//! up. A renewal is one query (license, this machine's activation, the
//! seat count and, for an expired license, the failed payment), plus an
//! update of the last renewal time at most once a minute: at most two
//! round trips.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use verifier::{HardwareId, ProjectLimit};

use super::{PgStore, column, to_u32};
use crate::domain::StorageError;
use crate::domain::license::{
    self as rules, Activation, Freed, Grant, License, LicenseError, LicenseStatus, NewLicense,
    Release, ReleaseFacts, Releaser, Seat, TRANSFER_WINDOW, VALIDATION_TIME_RESOLUTION,
    project_limit_column,
};
use crate::domain::license_key::{
    KEY_HASH_LEGACY, KEY_HASH_PEPPERED, KeyHash, KeyPepper, LicenseKey,
};
use crate::store::Licenses;

mod free;
mod key;

/// The license columns, 13 of them, read by [`license_from_row`].
const LICENSE_COLUMNS: &str = "l.id, l.key_hint, l.organization_id, o.name, l.email, l.tier, \
     l.status, l.expires_at, l.max_activations, l.max_projects, l.ai_requests, l.created_at, \
     l.revoked_reason";
const LICENSE_WIDTH: usize = 13;

/// When the license's subscription is in a failed-payment state: since
/// when (one column, after the license's).
const FAILED_PAYMENT: &str = "(SELECT s.past_due_since FROM subscriptions s
      WHERE s.stripe_subscription_id = l.stripe_subscription_id
        AND s.status IN ('past_due', 'unpaid'))";

/// The activation columns, 9 of them, read by [`activation_from_row`].
const ACTIVATION_COLUMNS: &str = "a.id, a.license_id, a.hardware_id, a.machine_name, a.status, \
     a.activated_at, a.last_validated_at, a.deactivated_at, a.offline_until";

/// How many of the license's active machines were activated before the
/// activation `a` (its place in `domain::license::seat_rank_allowed`).
const SEAT_RANK: &str = "(SELECT count(*) FROM activations r
      WHERE r.license_id = a.license_id AND r.status = 'active'
        AND (r.activated_at, r.id COLLATE \"C\") < (a.activated_at, a.id COLLATE \"C\"))";

/// When the seats of license `l` freed by its holder after `$3` were
/// freed, oldest first (NULL for none).
const TRANSFERS: &str = "(SELECT array_agg(t.freed_at ORDER BY t.freed_at) FROM seat_transfers t
      WHERE t.license_id = l.id AND t.freed_at > $3)";

fn bad(what: &str) -> StorageError {
    StorageError::Failed(format!("unexpected {what} in the database"))
}

/// The license in the row's columns from `at`.
pub(super) fn license_from_row(r: &Row, at: usize) -> Result<License, StorageError> {
    let status: String = r.try_get(at + 6)?;
    let max_projects: Option<i64> = r.try_get(at + 9)?;
    Ok(License {
        id: r.try_get(at)?,
        key_hint: r.try_get(at + 1)?,
        organization_id: r.try_get(at + 2)?,
        organization_name: r.try_get(at + 3)?,
        email: r.try_get(at + 4)?,
        tier: r.try_get(at + 5)?,
        status: LicenseStatus::parse(&status).ok_or_else(|| bad("license status"))?,
        expires_at: r.try_get(at + 7)?,
        max_activations: to_u32(r.try_get(at + 8)?)?,
        max_projects: match max_projects {
            None => ProjectLimit::Unlimited,
            Some(n) => ProjectLimit::Limited(to_u32(n)?),
        },
        ai_requests: to_u32(r.try_get(at + 10)?)?,
        created_at: r.try_get(at + 11)?,
        revoked_reason: r.try_get(at + 12)?,
    })
}

/// The activation in the row's columns from `at`, or `None` when they are
/// NULL (an outer join found none).
fn activation_from_row(r: &Row, at: usize) -> Result<Option<Activation>, StorageError> {
    let Some(id) = r.try_get::<_, Option<String>>(at)? else {
        return Ok(None);
    };
    let status: String = r.try_get(at + 4)?;
    Ok(Some(Activation {
        id,
        license_id: r.try_get(at + 1)?,
        hardware_id: r.try_get(at + 2)?,
        machine_name: r.try_get(at + 3)?,
        active: status == "active",
        activated_at: r.try_get(at + 5)?,
        last_validated_at: r.try_get(at + 6)?,
        deactivated_at: r.try_get(at + 7)?,
        offline_until: r.try_get(at + 8)?,
    }))
}

/// Inserts a license inside the caller's transaction (a checkout's
/// completion creates one too); returns it with its key, shown only now.
pub(super) async fn insert_license<C: GenericClient>(
    client: &C,
    new: &NewLicense<'_>,
    pepper: &KeyPepper,
    now: i64,
) -> Result<(License, LicenseKey), LicenseError> {
    let key = LicenseKey::generate().map_err(|e| StorageError::Failed(e.to_string()))?;
    let id = uuid::Uuid::new_v4().to_string();
    let ent = new.plan.entitlements;
    let max_projects = project_limit_column(ent.max_projects).map(i64::from);
    let max_devices = i64::from(new.max_devices.unwrap_or(ent.max_devices));
    let stmt = client
        .prepare_cached(&format!(
            "WITH l AS (
                 INSERT INTO licenses (id, key_hash, key_hint, organization_id, email, tier,
                     status, expires_at, max_activations, max_projects, ai_requests,
                     stripe_subscription_id, created_at, updated_at, key_hash_version)
                 VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9, $10, $11, $12, $12,
                     $13)
                 RETURNING *)
             SELECT {LICENSE_COLUMNS} FROM l LEFT JOIN organizations o ON o.id = l.organization_id"
        ))
        .await?;
    let row = client
        .query_one(
            &stmt,
            &[
                &id,
                &key.hash(pepper).as_str(),
                &key.hint(),
                &new.organization_id,
                &new.email,
                &new.plan.id,
                &new.expires_at,
                &max_devices,
                &max_projects,
                &i64::from(ent.ai_requests),
                &new.stripe_subscription_id,
                &now,
                &KEY_HASH_PEPPERED,
            ],
        )
        .await?;
    Ok((license_from_row(&row, 0)?, key))
}

/// The license with this id.
pub(super) async fn license_by_id<C: GenericClient>(
    client: &C,
    id: &str,
) -> Result<Option<License>, StorageError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {LICENSE_COLUMNS} FROM licenses l
             LEFT JOIN organizations o ON o.id = l.organization_id WHERE l.id = $1"
        ))
        .await?;
    match client.query_opt(&stmt, &[&id]).await? {
        Some(row) => Ok(Some(license_from_row(&row, 0)?)),
        None => Ok(None),
    }
}

/// The license as its holder may use it at `now`; an expired license
/// whose subscription failed to pay says so.
fn usable(license: License, failed_at: Option<i64>, now: i64) -> Result<License, LicenseError> {
    match license.check_usable(now) {
        Ok(()) => Ok(license),
        Err(LicenseError::Expired { since }) => Err(match failed_at {
            Some(failed_at) => LicenseError::PaymentOverdue { since, failed_at },
            None => LicenseError::Expired { since },
        }),
        Err(other) => Err(other),
    }
}

/// Converts every key hash of the scheme before the pepper (hex SHA-256)
/// to the peppered one, in one transaction; returns how many. Idempotent,
/// and safe while other processes do the same: the rows are locked as
/// they are read, and a row another process converted meanwhile no
/// longer matches.
pub(super) async fn upgrade_legacy_key_hashes(
    client: &mut deadpool_postgres::Object,
    pepper: &KeyPepper,
) -> Result<u64, StorageError> {
    let tx = client.transaction().await?;
    let (legacy, peppered) = (KEY_HASH_LEGACY, KEY_HASH_PEPPERED);
    let rows = tx
        .query(
            "SELECT id, key_hash FROM licenses WHERE key_hash_version = $1 FOR UPDATE",
            &[&legacy],
        )
        .await?;
    let mut converted = 0;
    for row in &rows {
        let (id, old): (String, String) = (column(row, 0)?, column(row, 1)?);
        match pepper.upgrade_legacy(&old) {
            Some(new) => {
                converted += tx
                    .execute(
                        "UPDATE licenses SET key_hash = $2, key_hash_version = $3
                         WHERE id = $1 AND key_hash_version = $4",
                        &[&id, &new.as_str(), &peppered, &legacy],
                    )
                    .await?;
            }
            None => {
                tracing::warn!(license = %id, "stored key hash is not a SHA-256; left as it is")
            }
        }
    }
    tx.commit().await?;
    Ok(converted)
}

/// The license with this key, locked until the transaction ends, with its
/// failed payment (if any).
async fn lock_by_key<C: GenericClient>(
    client: &C,
    key: &KeyHash,
) -> Result<Option<(License, Option<i64>)>, StorageError> {
    lock_where(client, "l.key_hash", key.as_str()).await
}

/// The license whose `column` is `value`, locked until the transaction
/// ends, with its failed payment (if any).
async fn lock_where<C: GenericClient>(
    client: &C,
    column: &str,
    value: &str,
) -> Result<Option<(License, Option<i64>)>, StorageError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {LICENSE_COLUMNS}, {FAILED_PAYMENT} FROM licenses l
             LEFT JOIN organizations o ON o.id = l.organization_id
             WHERE {column} = $1 FOR UPDATE OF l"
        ))
        .await?;
    match client.query_opt(&stmt, &[&value]).await? {
        Some(row) => Ok(Some((
            license_from_row(&row, 0)?,
            row.try_get(LICENSE_WIDTH)?,
        ))),
        None => Ok(None),
    }
}

/// The seats in use on a license, this machine's activation (if it has
/// one) and its seat rank, in one query.
async fn seats_and_machine<C: GenericClient>(
    client: &C,
    license_id: &str,
    hardware_id: &HardwareId,
) -> Result<(u32, Option<(Activation, u32)>), StorageError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT (SELECT count(*) FROM activations
                     WHERE license_id = $1 AND status = 'active'), {SEAT_RANK},
                    {ACTIVATION_COLUMNS}
             FROM (SELECT 1) one
             LEFT JOIN activations a ON a.license_id = $1 AND a.hardware_id = $2"
        ))
        .await?;
    let row = client
        .query_one(&stmt, &[&license_id, &hardware_id.to_hex()])
        .await?;
    let machine = match activation_from_row(&row, 2)? {
        Some(a) => Some((a, to_u32(row.try_get(1)?)?)),
        None => None,
    };
    Ok((to_u32(row.try_get(0)?)?, machine))
}

/// When the license's seats freed by its holder after `since` were freed,
/// oldest first.
async fn transfers_since<C: GenericClient>(
    client: &C,
    license_id: &str,
    since: i64,
) -> Result<Vec<i64>, StorageError> {
    let stmt = client
        .prepare_cached(
            "SELECT freed_at FROM seat_transfers WHERE license_id = $1 AND freed_at > $2
             ORDER BY freed_at",
        )
        .await?;
    let rows = client.query(&stmt, &[&license_id, &since]).await?;
    rows.iter()
        .map(|r| r.try_get(0).map_err(StorageError::from))
        .collect()
}

#[async_trait]
impl Licenses for PgStore {
    async fn replace_key(
        &self,
        license_id: &str,
        organization_id: &str,
        new_key: &LicenseKey,
        mail: &crate::domain::mail::Mail,
        now: i64,
    ) -> Result<License, LicenseError> {
        key::replace_key(self, license_id, organization_id, new_key, mail, now).await
    }

    async fn create_license(
        &self,
        new: &NewLicense<'_>,
        now: i64,
    ) -> Result<(License, LicenseKey), LicenseError> {
        let conn = self.db.conn().await?;
        insert_license(&conn, new, &self.pepper, now).await
    }

    async fn license(&self, id: &str) -> Result<Option<License>, StorageError> {
        let conn = self.db.conn().await?;
        license_by_id(&conn, id).await
    }

    async fn license_by_key(&self, key: &LicenseKey) -> Result<Option<License>, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {LICENSE_COLUMNS} FROM licenses l
                 LEFT JOIN organizations o ON o.id = l.organization_id WHERE l.key_hash = $1"
            ))
            .await?;
        match conn
            .query_opt(&stmt, &[&key.hash(&self.pepper).as_str()])
            .await?
        {
            Some(row) => Ok(Some(license_from_row(&row, 0)?)),
            None => Ok(None),
        }
    }

    async fn licenses_with_activations(
        &self,
        organization_id: Option<&str>,
    ) -> Result<Vec<(License, Vec<Activation>)>, StorageError> {
        let mut conn = self.db.conn().await?;
        // One snapshot for both reads.
        let tx = conn
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {LICENSE_COLUMNS} FROM licenses l
                     LEFT JOIN organizations o ON o.id = l.organization_id
                     WHERE $1::text IS NULL OR l.organization_id = $1
                     ORDER BY l.created_at DESC, l.id COLLATE \"C\""
                ),
                &[&organization_id],
            )
            .await?;
        let licenses = rows
            .iter()
            .map(|r| license_from_row(r, 0))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<&str> = licenses.iter().map(|l| l.id.as_str()).collect();
        let rows = tx
            .query(
                &format!(
                    "SELECT {ACTIVATION_COLUMNS} FROM activations a
                     WHERE a.license_id = ANY($1)
                     ORDER BY a.status = 'active' DESC, a.activated_at, a.id COLLATE \"C\""
                ),
                &[&ids],
            )
            .await?;
        tx.commit().await?;
        let mut out: Vec<(License, Vec<Activation>)> =
            licenses.into_iter().map(|l| (l, Vec::new())).collect();
        let index: std::collections::HashMap<String, usize> = out
            .iter()
            .enumerate()
            .map(|(i, (l, _))| (l.id.clone(), i))
            .collect();
        for row in &rows {
            if let Some(a) = activation_from_row(row, 0)?
                && let Some(&i) = index.get(&a.license_id)
            {
                out[i].1.push(a);
            }
        }
        Ok(out)
    }

    async fn activations(&self, license_id: &str) -> Result<Vec<Activation>, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {ACTIVATION_COLUMNS} FROM activations a WHERE a.license_id = $1
                 ORDER BY a.status = 'active' DESC, a.activated_at, a.id COLLATE \"C\""
            ))
            .await?;
        let rows = conn.query(&stmt, &[&license_id]).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.extend(activation_from_row(row, 0)?);
        }
        Ok(out)
    }

    async fn activate_seat(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
        machine_name: Option<&str>,
        offline_until: Option<i64>,
        now: i64,
    ) -> Result<Grant, LicenseError> {
        let mut conn = self.db.conn().await?;
        let tx = conn.transaction().await?;
        let (license, failed_at) = lock_by_key(&tx, &key.hash(&self.pepper))
            .await?
            .ok_or(LicenseError::NotFound)?;
        let license = usable(license, failed_at, now)?;
        let (used, existing) = seats_and_machine(&tx, &license.id, hardware_id).await?;
        match existing.as_ref().filter(|(a, _)| a.active) {
            Some((_, rank)) => rules::seat_rank_allowed(&license, *rank, used)?,
            None if used >= license.max_activations => {
                return Err(LicenseError::TooManyActivations {
                    max: license.max_activations,
                });
            }
            None => {}
        }
        let already_active = existing.as_ref().is_some_and(|(a, _)| a.active);
        let row = match existing {
            Some((a, _)) => {
                let stmt = tx
                    .prepare_cached(&format!(
                        "UPDATE activations a SET status = 'active', deactivated_at = NULL,
                             machine_name = coalesce($2, a.machine_name), last_validated_at = $3,
                             activated_at = CASE WHEN a.status = 'active'
                                                 THEN a.activated_at ELSE $3 END,
                             offline_until = greatest(a.offline_until, $4)
                         WHERE a.id = $1 RETURNING {ACTIVATION_COLUMNS}"
                    ))
                    .await?;
                tx.query_one(&stmt, &[&a.id, &machine_name, &now, &offline_until])
                    .await?
            }
            None => {
                let stmt = tx
                    .prepare_cached(&format!(
                        "INSERT INTO activations AS a (id, license_id, hardware_id, machine_name,
                             status, activated_at, last_validated_at, offline_until)
                         VALUES ($1, $2, $3, $4, 'active', $5, $5, $6)
                         RETURNING {ACTIVATION_COLUMNS}"
                    ))
                    .await?;
                let id = uuid::Uuid::new_v4().to_string();
                tx.query_one(
                    &stmt,
                    &[
                        &id,
                        &license.id,
                        &hardware_id.to_hex(),
                        &machine_name,
                        &now,
                        &offline_until,
                    ],
                )
                .await?
            }
        };
        let activation = activation_from_row(&row, 0)?.ok_or_else(|| bad("missing activation"))?;
        let recent_transfers = transfers_since(&tx, &license.id, now - TRANSFER_WINDOW).await?;
        tx.commit().await?;
        Ok(Grant {
            license,
            activation,
            devices_used: if already_active { used } else { used + 1 },
            already_active,
            recent_transfers,
        })
    }

    async fn renew_seat(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
        now: i64,
    ) -> Result<Grant, LicenseError> {
        let conn = self.db.conn().await?;
        // One round trip reads everything a renewal decides on.
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {LICENSE_COLUMNS}, {FAILED_PAYMENT},
                        (SELECT count(*) FROM activations c
                         WHERE c.license_id = l.id AND c.status = 'active'),
                        {SEAT_RANK}, {TRANSFERS},
                        {ACTIVATION_COLUMNS}
                 FROM licenses l
                 LEFT JOIN organizations o ON o.id = l.organization_id
                 LEFT JOIN activations a ON a.license_id = l.id AND a.hardware_id = $2
                 WHERE l.key_hash = $1"
            ))
            .await?;
        let row = conn
            .query_opt(
                &stmt,
                &[
                    &key.hash(&self.pepper).as_str(),
                    &hardware_id.to_hex(),
                    &(now - TRANSFER_WINDOW),
                ],
            )
            .await?
            .ok_or(LicenseError::NotFound)?;
        let license = license_from_row(&row, 0)?;
        let failed_at: Option<i64> = row.try_get(LICENSE_WIDTH)?;
        let devices_used = to_u32(row.try_get(LICENSE_WIDTH + 1)?)?;
        let rank: i64 = row.try_get(LICENSE_WIDTH + 2)?;
        let recent_transfers: Option<Vec<i64>> = row.try_get(LICENSE_WIDTH + 3)?;
        let activation = activation_from_row(&row, LICENSE_WIDTH + 4)?;
        let license = usable(license, failed_at, now)?;
        let mut activation = activation
            .filter(|a| a.active)
            .ok_or(LicenseError::NotActivated)?;
        rules::seat_rank_allowed(&license, to_u32(rank)?, devices_used)?;
        if now.saturating_sub(activation.last_validated_at) >= VALIDATION_TIME_RESOLUTION {
            // Only ever moves forward, and only while the machine is active.
            let stmt = conn
                .prepare_cached(
                    "UPDATE activations SET last_validated_at = $2
                     WHERE id = $1 AND status = 'active' AND last_validated_at < $2",
                )
                .await?;
            conn.execute(&stmt, &[&activation.id, &now]).await?;
            activation.last_validated_at = now;
        }
        Ok(Grant {
            license,
            activation,
            devices_used,
            already_active: true,
            recent_transfers: recent_transfers.unwrap_or_default(),
        })
    }

    async fn free_seat(
        &self,
        by: &Releaser<'_>,
        seat: Seat<'_>,
        now: i64,
    ) -> Result<Freed, LicenseError> {
        free::free_seat(self, by, seat, now).await
    }

    async fn seat_transfers(&self, license_id: &str, since: i64) -> Result<Vec<i64>, StorageError> {
        let conn = self.db.conn().await?;
        transfers_since(&conn, license_id, since).await
    }

    async fn revoke_license(
        &self,
        id: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<License, LicenseError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "WITH l AS (
                     UPDATE licenses SET status = 'revoked', revoked_at = $2, revoked_reason = $3,
                         updated_at = $2
                     WHERE id = $1 RETURNING *)
                 SELECT {LICENSE_COLUMNS} FROM l LEFT JOIN organizations o ON o.id = l.organization_id"
            ))
            .await?;
        let row = conn
            .query_opt(&stmt, &[&id, &now, &reason])
            .await?
            .ok_or(LicenseError::NotFound)?;
        Ok(license_from_row(&row, 0)?)
    }
}
