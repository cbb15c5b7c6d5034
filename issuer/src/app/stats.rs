//! The pilot's figures (`domain::stats`): read from the store, with the
//! plans' prices as Stripe charges them. One function, [`pilot_stats`],
//! serves every place that shows them (`coditect-issuer stats`, and any
//! gauge built on the same figures).

use crate::config::Config;
use crate::domain::StorageError;
use crate::domain::stats::{PilotStats, RecurringPrice};
use crate::store::SharedStore;

use super::billing::prices::PriceBook;

/// The figures of the period from `since` (0: the beginning) to `now`.
/// Revenue is priced through `book` (the configured prices' amounts, as
/// read from Stripe); a subscription on a price it does not know counts as
/// unpriced.
pub async fn pilot_stats(
    store: &SharedStore,
    config: &Config,
    book: Option<&PriceBook>,
    since: i64,
    now: i64,
) -> Result<PilotStats, StorageError> {
    let facts = store.pilot_facts(since, now).await?;
    let price = |price_id: &str| -> Option<RecurringPrice> {
        let (plan, interval) = config.stripe.as_ref()?.prices.plan_of(price_id)?;
        let amount = book?.amount(plan, interval)?;
        Some(RecurringPrice {
            minor: amount.minor,
            currency: amount.currency,
            months: if interval == "year" { 12 } else { 1 },
        })
    };
    Ok(crate::domain::stats::pilot_stats(
        &facts, since, now, &price,
    ))
}

/// Reads the configured prices' amounts from Stripe once (for a command;
/// a server keeps its `AppState::prices` current). `None` when payments
/// are not configured; `Err` names what could not be read.
pub async fn read_prices(config: &Config) -> Result<Option<PriceBook>, String> {
    let Some(stripe) = config.stripe.as_ref() else {
        return Ok(None);
    };
    let api = super::billing::stripe_api::StripeApi::new(stripe).map_err(|e| e.to_string())?;
    let book = PriceBook::default();
    if book.load(&api, &stripe.prices).await {
        Ok(Some(book))
    } else {
        Err("some of the configured STRIPE_PRICE_* could not be read from Stripe".into())
    }
}
