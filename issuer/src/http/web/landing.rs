//! `GET /`: what CODITECT is, the two pilot plans, how to install, and the
//! way in ("Start your pilot").

use poem::web::Data;
use poem::{Response, handler};

use super::html::{Page, escape};
use super::offers::offers;
use crate::app::AppState;

/// The install and activate steps (also on the success page).
pub fn install_steps(key: &str) -> String {
    format!(
        "<ol class=\"steps\">\n\
         <li>Install the CLI:<pre><code>npm install -g @coditect-ai/coditect-core</code></pre>\
         <p class=\"hint\">If npm answers that the package is not found, it is not published yet: \
         write to us (the address is at the foot of the page) and we send you the CLI for your system.</p></li>\n\
         <li>Activate this machine with your license key:<pre><code>coditect activate {key}</code></pre></li>\n\
         <li>Check the license:<pre><code>coditect license status</code></pre></li>\n\
         </ol>",
        key = escape(key)
    )
}

#[handler]
pub fn page(state: Data<&AppState>) -> Response {
    let mut tiers = String::new();
    for offer in offers(&state) {
        let price = match (&offer.monthly, &offer.annual) {
            (Some(m), Some(y)) => format!(
                "<p class=\"price\">{}<small>/month</small></p>\n\
                 <p class=\"hint\">or {}/year, billed annually</p>",
                escape(&m.show()),
                escape(&y.show())
            ),
            _ => format!(
                "<p class=\"price\"><small>{}</small></p>",
                escape(&offer.prices())
            ),
        };
        let features: String = offer
            .features()
            .iter()
            .map(|f| format!("<li>{}</li>", escape(f)))
            .collect();
        tiers.push_str(&format!(
            "<div class=\"tier\" id=\"tier-{id}\">\n<h3>{name}</h3>\n{price}\n\
             <ul>{features}</ul>\n\
             <a class=\"button secondary\" href=\"/signup?plan={id}\">Choose {short}</a>\n</div>\n",
            id = escape(offer.plan.id),
            name = escape(offer.plan.name),
            short = escape(offer.short_name()),
        ));
    }
    let body = format!(
        "<section class=\"hero\">\n<h1>CODITECT: your AI development framework, on your machine</h1>\n\
         <p>Plan, build and ship with CODITECT's command line. The pilot gives you the full \
         framework on your own devices, and it keeps working offline.</p>\n\
         <p><a class=\"button\" id=\"start\" href=\"/signup\">Start your pilot</a></p>\n</section>\n\
         <section id=\"plans\">\n<h2>Pilot plans</h2>\n<div class=\"tiers\">\n{tiers}</div>\n\
         <p class=\"hint\">Prices in US dollars. Cancel any time from the billing portal.</p>\n</section>\n\
         <section id=\"install\">\n<h2>Install</h2>\n\
         <p>After checkout you get a license key on screen and by email. Then:</p>\n{steps}\n</section>\n\
         <section id=\"integrators\">\n<h2>For integrators</h2>\n\
         <p>The licensing API (activation, renewal, public keys) is documented at \
         <a href=\"/docs\">/docs</a> (OpenAPI: <a href=\"/openapi.json\">/openapi.json</a>).</p>\n</section>",
        steps = install_steps("CODITECT-PILOT-XXXX-YYYY-ZZZZ"),
    );
    Page::new("Start your pilot", body).respond(&state)
}
