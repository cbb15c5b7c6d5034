//! Starting a paid subscription (Checkout), the billing portal, and handing
//! the new license key to the browser that paid for it.

use sha2::{Digest, Sha256};

use super::BillingError;
use super::stripe_api::NewCheckout;
use crate::app::AppState;
use crate::domain::account::User;
use crate::domain::audit::{Client, Event};
use crate::domain::billing::{CHECKOUT_LIFETIME, CheckoutRecord, Reveal};

/// A Checkout Session to send the buyer to.
#[derive(Debug, Clone)]
pub struct CheckoutStart {
    pub session_id: String,
    pub url: String,
}

/// What the database keeps of the cookie of the browser that started a
/// checkout (only it may see the key on the success page).
pub fn browser_hash(cookie: &str) -> String {
    hex::encode(Sha256::digest(cookie.as_bytes()))
}

/// Starts a Checkout Session for the user's organization: its Stripe
/// customer (created once), the plan's price, and one open checkout per
/// organization. `browser` is the hash of the web signup's cookie (only
/// the web signup sets it). Audited as `checkout_started`.
pub async fn start(
    state: &AppState,
    user: &User,
    plan: &str,
    interval: &str,
    browser: Option<String>,
    client: &Client,
    now: i64,
) -> Result<CheckoutStart, BillingError> {
    let via = if browser.is_some() { " (web)" } else { "" };
    let (stripe, cfg) = state.stripe()?;
    let price = cfg
        .prices
        .price_for(plan, interval)
        .ok_or_else(|| BillingError::UnknownPlan {
            plan: plan.to_owned(),
            interval: interval.to_owned(),
        })?
        .to_owned();
    let org = &user.organization_id;
    let store = &state.store;
    if store.has_live_subscription(org).await? {
        return Err(BillingError::AlreadySubscribed);
    }
    // The pilot's places are the organizations that paid: a new one may
    // start paying only while a place is free (one that paid before keeps
    // its place).
    if store.paid_organization_count(Some(org)).await? >= state.config.pilot_users_limit {
        return Err(BillingError::PilotFull);
    }
    let customer = match store.stripe_customer(org).await? {
        Some(c) => c,
        None => {
            let created = stripe
                .create_customer(org, &user.organization_name, &user.email)
                .await?;
            // Ours, or the one a simultaneous first checkout stored.
            store.set_stripe_customer(org, &created).await?
        }
    };
    // One checkout open per organization: the earlier ones are expired at
    // Stripe first, so that nobody pays for the same pilot twice (two tabs,
    // a back button). One that was paid meanwhile means there is nothing to
    // buy.
    let open = store
        .open_checkouts(org, now.saturating_sub(CHECKOUT_LIFETIME))
        .await?;
    for id in open {
        let status = stripe.expire_checkout(&id).await?;
        if status == "complete" {
            return Err(BillingError::AlreadySubscribed);
        }
        store.checkout_expired(&id, now).await?;
    }
    let base = &state.config.public_base_url;
    let session = stripe
        .create_checkout(&NewCheckout {
            customer_id: &customer,
            price_id: &price,
            organization_id: org,
            user_id: &user.id,
            plan,
            interval,
            success_url: format!("{base}/signup/success?session_id={{CHECKOUT_SESSION_ID}}"),
            cancel_url: format!("{base}/signup/cancel"),
            trial_days: cfg.trial_days,
        })
        .await?;
    store
        .record_checkout(
            &CheckoutRecord {
                session_id: session.id.clone(),
                organization_id: org.clone(),
                user_id: user.id.clone(),
                plan: plan.to_owned(),
                interval: interval.to_owned(),
                browser_hash: browser,
            },
            now,
        )
        .await?;
    state
        .audit
        .log(
            Event::new(now, "checkout_started", "ok")
                .actor(format!("user:{}", user.id))
                .subject("organization", org.clone())
                .client(client)
                .detail(format!("{plan}/{interval} {}{via}", session.id)),
        )
        .await;
    Ok(CheckoutStart {
        session_id: session.id,
        url: session.url,
    })
}

/// The billing portal of the user's organization.
pub async fn portal(state: &AppState, user: &User) -> Result<String, BillingError> {
    let (stripe, _) = state.stripe()?;
    let customer = state
        .store
        .stripe_customer(&user.organization_id)
        .await?
        .ok_or(BillingError::NoCustomer)?;
    let return_url = format!(
        "{}/account",
        state.config.public_base_url.trim_end_matches('/')
    );
    Ok(stripe.create_portal(&customer, &return_url).await?)
}

/// The key of a completed checkout for the browser whose cookie hashes to
/// `browser`: shown once, then wiped.
pub async fn reveal(
    state: &AppState,
    session_id: &str,
    browser: &str,
    now: i64,
) -> Result<Reveal, BillingError> {
    Ok(state.store.reveal_key(session_id, browser, now).await?)
}
