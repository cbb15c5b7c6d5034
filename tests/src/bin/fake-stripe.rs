//! Runs the fake Stripe of the tests on its own, for local runs of the
//! issuer with payments and for scripts (schemathesis): prints the
//! variables that point an issuer at it, then serves until killed.
//!
//! Usage: `fake-stripe [--webhook URL]`
//!
//! A subscription moves on with `POST /_fake/subscriptions/{id}/ACTION`,
//! ACTION being `advance_period` (a paid renewal), `fail_next_payment`
//! (`invoice.payment_failed`) or `recover_payment`.

use std::io::Write;

use coditect_tests::billing::stripe_env;
use coditect_tests::fake_stripe::{Config, FakeStripe};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut config = Config::default();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--webhook", Some(url)) => config.webhook_url = Some(url),
            _ => {
                eprintln!("usage: fake-stripe [--webhook URL]");
                std::process::exit(2);
            }
        }
    }
    let stripe = FakeStripe::start(config);
    let mut out = std::io::stdout().lock();
    for (name, value) in stripe_env(&stripe) {
        let _ = writeln!(out, "{name}={value}");
    }
    let _ = writeln!(out, "# fake Stripe listening on {}", stripe.base_url());
    let _ = writeln!(
        out,
        "# move a subscription on: curl -X POST {}/_fake/subscriptions/SUB_ID/fail_next_payment (or advance_period, recover_payment)",
        stripe.base_url()
    );
    let _ = out.flush();
    drop(out);
    loop {
        std::thread::park();
    }
}
