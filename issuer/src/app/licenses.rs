//! Licenses for their holders and the operator: activating a machine,
//! renewing its token, freeing a seat, listing, and the operator's create,
//! revoke and air-gapped activation. Each call audits its outcome (a
//! refusal with its code) and turns grants into signed tokens.

use verifier::HardwareId;

use super::AppState;
use crate::domain::audit::{Client, Event};
use crate::domain::license::{
    Activation, Freed, Grant, License, LicenseError, NewLicense, Releaser, Seat, TRANSFER_WINDOW,
};
use crate::domain::license_key::LicenseKey;
use crate::domain::tokens::{self, IssuedToken};

/// A grant and the token that carries it.
pub struct Issued {
    pub grant: Grant,
    pub token: IssuedToken,
}

/// Audits an activation or validation, refused or not (server faults are
/// logged, not audited).
async fn audited(
    state: &AppState,
    client: &Client,
    event: &str,
    now: i64,
    result: Result<Grant, LicenseError>,
) -> Result<Grant, LicenseError> {
    match &result {
        Ok(grant) => {
            state
                .audit
                .log(
                    Event::new(now, event, "ok")
                        .actor(format!("license:{}", grant.license.id))
                        .subject("activation", grant.activation.id.clone())
                        .client(client),
                )
                .await;
        }
        Err(e) => {
            if let Some(code) = e.code() {
                state
                    .audit
                    .log(Event::new(now, event, code).client(client))
                    .await;
            }
        }
    }
    result
}

fn sign(state: &AppState, grant: Grant, now: i64) -> Result<Issued, LicenseError> {
    let token = tokens::issue(&state.config.signer, &grant, state.token_policy(), now)
        .map_err(|e| LicenseError::Signing(e.to_string()))?;
    Ok(Issued { grant, token })
}

/// Activates this machine and signs its first token. `grant.already_active`
/// says whether a seat was taken now.
pub async fn activate(
    state: &AppState,
    client: &Client,
    key: &LicenseKey,
    hardware_id: &HardwareId,
    machine_name: Option<&str>,
    now: i64,
) -> Result<Issued, LicenseError> {
    let result = state
        .store
        .activate_seat(key, hardware_id, machine_name, None, now)
        .await;
    let grant = audited(state, client, "activate", now, result).await?;
    sign(state, grant, now)
}

/// Renews an activated machine's token.
pub async fn renew(
    state: &AppState,
    client: &Client,
    key: &LicenseKey,
    hardware_id: &HardwareId,
    now: i64,
) -> Result<Issued, LicenseError> {
    let result = state.store.renew_seat(key, hardware_id, now).await;
    let grant = audited(state, client, "validate", now, result).await?;
    sign(state, grant, now)
}

/// A key holder frees a seat (see `domain::license::release` for who may
/// free which seat, and when it counts as a transfer).
pub async fn deactivate(
    state: &AppState,
    client: &Client,
    by: &Releaser<'_>,
    seat: Seat<'_>,
    now: i64,
) -> Result<Freed, LicenseError> {
    let result = state.store.free_seat(by, seat, now).await;
    let event = match &result {
        Ok(freed) => Event::new(now, "deactivate", "ok")
            .actor(format!("license:{}", freed.license.id))
            .subject("activation", freed.activation.id.clone())
            .detail(if freed.counted {
                "seat transfer"
            } else {
                "not counted as a transfer"
            }),
        Err(e) => Event::new(now, "deactivate", e.code().unwrap_or("internal_error")),
    };
    state.audit.log(event.client(client)).await;
    result
}

/// The operator frees a seat (audited as `admin`): any seat, an offline
/// one too, never counted as a transfer.
pub async fn free_by_operator(
    store: &crate::store::SharedStore,
    license_id: &str,
    activation_id: &str,
    now: i64,
) -> Result<Freed, LicenseError> {
    let freed = store
        .free_seat(
            &Releaser::Operator { license_id },
            Seat::Activation(activation_id),
            now,
        )
        .await?;
    store
        .append_audit(&[Event::new(now, "deactivate", "ok")
            .actor("admin")
            .subject("activation", freed.activation.id.clone())
            .detail(match freed.activation.offline_until {
                Some(until) if until > now => "offline seat freed by the operator",
                _ => "freed by the operator",
            })])
        .await?;
    Ok(freed)
}

/// An organization's licenses with their machines and their holder's
/// seat transfers in the window.
pub async fn of_organization(
    state: &AppState,
    organization_id: &str,
    now: i64,
) -> Result<Vec<(License, Vec<Activation>, Vec<i64>)>, LicenseError> {
    let rows = state
        .store
        .licenses_with_activations(Some(organization_id))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (license, activations) in rows {
        let transfers = state
            .store
            .seat_transfers(&license.id, now - TRANSFER_WINDOW)
            .await?;
        out.push((license, activations, transfers));
    }
    Ok(out)
}

/// The license a key names.
pub async fn by_key(state: &AppState, key: &LicenseKey) -> Result<License, LicenseError> {
    state
        .store
        .license_by_key(key)
        .await?
        .ok_or(LicenseError::NotFound)
}

/// A license named by id or by key (the operator's commands).
pub async fn find(
    state_store: &crate::store::SharedStore,
    which: &str,
) -> Result<Option<License>, LicenseError> {
    Ok(match LicenseKey::parse(which) {
        Ok(key) => state_store.license_by_key(&key).await?,
        Err(_) => state_store.license(which.trim()).await?,
    })
}

/// The operator creates a license (audited as `admin`).
pub async fn create(
    store: &crate::store::SharedStore,
    new: &NewLicense<'_>,
    now: i64,
) -> Result<(License, LicenseKey), LicenseError> {
    let (license, key) = store.create_license(new, now).await?;
    store
        .append_audit(&[Event::new(now, "license_created", "ok")
            .actor("admin")
            .subject("license", license.id.clone())
            .detail(format!("tier {}", license.tier))])
        .await?;
    Ok((license, key))
}

/// The operator revokes a license (audited as `admin`).
pub async fn revoke(
    store: &crate::store::SharedStore,
    license_id: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<License, LicenseError> {
    let revoked = store.revoke_license(license_id, reason, now).await?;
    let mut event = Event::new(now, "license_revoked", "ok")
        .actor("admin")
        .subject("license", revoked.id.clone());
    if let Some(r) = reason {
        event = event.detail(r.chars().take(200).collect::<String>());
    }
    store.append_audit(&[event]).await?;
    Ok(revoked)
}

/// The operator answers an air-gapped machine's activation request: a seat
/// and a token good for `valid_for` seconds (at most until the license
/// ends), which never asks to be renewed.
pub async fn activate_offline(
    store: &crate::store::SharedStore,
    signer: &verifier::TokenSigner,
    key: &LicenseKey,
    hardware_id: &HardwareId,
    machine_name: Option<&str>,
    valid_for: Option<u64>,
    now: i64,
) -> Result<Issued, LicenseError> {
    // The seat is marked with the token's expiry: until then only the
    // operator frees it.
    let license = store
        .license_by_key(key)
        .await?
        .ok_or(LicenseError::NotFound)?;
    let now_u = u64::try_from(now).unwrap_or(0);
    let license_end = u64::try_from(license.expires_at).unwrap_or(0);
    let expires_at = valid_for
        .map_or(license_end, |secs| now_u.saturating_add(secs))
        .min(license_end);
    let offline_until = i64::try_from(expires_at).unwrap_or(i64::MAX);
    let grant = store
        .activate_seat(key, hardware_id, machine_name, Some(offline_until), now)
        .await?;
    // An air-gapped machine cannot renew: the token is good for its whole
    // validity and renewal is never due.
    let token = tokens::issue_until(signer, &grant, now_u, expires_at, expires_at)
        .map_err(|e| LicenseError::Signing(e.to_string()))?;
    Ok(Issued { grant, token })
}

/// A signed-in member of the license's organization asks for a new key
/// (the old one was lost): a new key replaces it and is mailed to the
/// member, in one transaction; audited. `NotFound` for a license of
/// another organization or a revoked one.
pub async fn replace_key(
    state: &AppState,
    client: &Client,
    user: &crate::domain::account::User,
    license_id: &str,
    now: i64,
) -> Result<License, LicenseError> {
    let license = state
        .store
        .license(license_id)
        .await?
        .filter(|l| l.organization_id.as_deref() == Some(user.organization_id.as_str()))
        .ok_or(LicenseError::NotFound)?;
    let key = LicenseKey::generate().map_err(|e| {
        LicenseError::Storage(crate::domain::StorageError::Failed(format!(
            "cannot make a key: {e}"
        )))
    })?;
    let plan = crate::domain::plans::find(&license.tier).map_or(license.tier.as_str(), |p| p.name);
    let mail =
        super::mail::templates::replaced_key_mail(&state.config, &user.email, key.expose(), plan);
    let result = state
        .store
        .replace_key(license_id, &user.organization_id, &key, &mail, now)
        .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code().unwrap_or("internal_error"),
    };
    state
        .audit
        .log(
            Event::new(now, "key_replaced", outcome)
                .actor(format!("user:{}", user.id))
                .subject("license", license_id.to_owned())
                .client(client),
        )
        .await;
    if result.is_ok() {
        state.mailer.wake();
    }
    result
}
