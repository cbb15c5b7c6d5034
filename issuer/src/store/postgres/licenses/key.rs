//! Replacing a lost license key on PostgreSQL (`Store::replace_key`).

use super::*;

/// `Store::replace_key`: the new key's hash and hint, and its mail, in one
/// transaction.
pub(super) async fn replace_key(
    store: &PgStore,
    license_id: &str,
    organization_id: &str,
    key: &LicenseKey,
    mail: &crate::domain::mail::Mail,
    now: i64,
) -> Result<License, LicenseError> {
    let mut conn = store.db.conn().await?;
    let tx = conn.transaction().await?;
    let stmt = tx
        .prepare_cached(
            "UPDATE licenses SET key_hash = $3, key_hint = $4, key_hash_version = $5, updated_at = $6
             WHERE id = $1 AND organization_id = $2 AND status <> 'revoked'",
        )
        .await?;
    let changed = tx
        .execute(
            &stmt,
            &[
                &license_id,
                &organization_id,
                &key.hash(&store.pepper).as_str(),
                &key.hint(),
                &KEY_HASH_PEPPERED,
                &now,
            ],
        )
        .await?;
    if changed == 0 {
        return Err(LicenseError::NotFound);
    }
    super::super::outbox::insert_mail(&tx, mail, now).await?;
    let license = license_by_id(&tx, license_id)
        .await?
        .ok_or(LicenseError::NotFound)?;
    tx.commit().await?;
    Ok(license)
}
