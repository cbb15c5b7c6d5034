//! Freeing a seat on PostgreSQL: the license locked, the target, the
//! asking machine's standing, the seats and the transfers read in one
//! query, `domain::license::release` deciding, then the update and the
//! transfer's row, in one transaction.

use super::*;

pub(super) async fn free_seat(
    store: &PgStore,
    by: &Releaser<'_>,
    seat: Seat<'_>,
    now: i64,
) -> Result<Freed, LicenseError> {
    let mut conn = store.db.conn().await?;
    let tx = conn.transaction().await?;
    let locked = match by {
        Releaser::Holder { key, .. } => lock_by_key(&tx, &key.hash(&store.pepper)).await?,
        Releaser::Operator { license_id } | Releaser::Organization { license_id, .. } => {
            lock_where(&tx, "l.id", license_id).await?
        }
    };
    let (license, _) = locked.ok_or(LicenseError::NotFound)?;
    let (column, value, missing) = match seat {
        Seat::Machine(hw) => ("hardware_id", hw.to_hex(), LicenseError::NotActivated),
        Seat::Activation(id) => ("id", id.to_owned(), LicenseError::ActivationNotFound),
    };
    // The target, whether the asking machine is active, the seats in
    // use and the transfers in the window, in one query.
    let asker = match by {
        Releaser::Holder { machine, .. } => Some(machine.to_hex()),
        Releaser::Operator { .. } | Releaser::Organization { .. } => None,
    };
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {ACTIVATION_COLUMNS},
                    EXISTS (SELECT 1 FROM activations m WHERE m.license_id = a.license_id
                            AND m.hardware_id = $4 AND m.status = 'active'),
                    (SELECT count(*) FROM activations c
                     WHERE c.license_id = a.license_id AND c.status = 'active'),
                    (SELECT array_agg(t.freed_at ORDER BY t.freed_at) FROM seat_transfers t
                     WHERE t.license_id = a.license_id AND t.freed_at > $3)
             FROM activations a WHERE a.license_id = $1 AND a.{column} = $2"
        ))
        .await?;
    let row = tx
        .query_opt(
            &stmt,
            &[&license.id, &value, &(now - TRANSFER_WINDOW), &asker],
        )
        .await?
        .ok_or(missing)?;
    let target = activation_from_row(&row, 0)?.ok_or_else(|| bad("missing activation"))?;
    let asker_active: bool = row.try_get(9)?;
    let devices_used = to_u32(row.try_get(10)?)?;
    let mut recent_transfers: Vec<i64> =
        row.try_get::<_, Option<Vec<i64>>>(11)?.unwrap_or_default();
    let release = rules::release(
        by,
        ReleaseFacts {
            license: &license,
            target: &target,
            asker_active,
            devices_used,
            recent_transfers: &recent_transfers,
        },
        now,
    )?;
    let counted = release == Release::Free { counted: true };
    let (activation, devices_used) = match release {
        Release::AlreadyFree => (target, devices_used),
        Release::Free { .. } => {
            let stmt = tx
                .prepare_cached(&format!(
                    "UPDATE activations a SET status = 'deactivated', deactivated_at = $2
                     WHERE a.id = $1 RETURNING {ACTIVATION_COLUMNS}"
                ))
                .await?;
            let row = tx.query_one(&stmt, &[&target.id, &now]).await?;
            let freed = activation_from_row(&row, 0)?.ok_or_else(|| bad("missing activation"))?;
            (freed, devices_used.saturating_sub(1))
        }
    };
    if counted {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO seat_transfers (license_id, activation_id, freed_at)
                 VALUES ($1, $2, $3)",
            )
            .await?;
        tx.execute(&stmt, &[&license.id, &activation.id, &now])
            .await?;
        recent_transfers.push(now);
    }
    tx.commit().await?;
    Ok(Freed {
        license,
        activation,
        devices_used,
        recent_transfers,
        counted,
    })
}
