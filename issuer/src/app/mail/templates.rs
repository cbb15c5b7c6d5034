//! The mails the issuer writes.

use crate::config::Config;
use crate::domain::mail::Mail;

/// What the license-key mail says.
pub struct LicenseMail<'a> {
    pub to: &'a str,
    pub key: &'a str,
    pub plan_name: &'a str,
    pub organization_name: &'a str,
    /// RFC 3339 end of the paid period.
    pub renews_or_ends: &'a str,
}

/// The confirmation mail of the launch plan (Part 4, step 5): the license
/// key, how to install and activate, and whom to ask for help.
pub fn license_key_mail(config: &Config, m: &LicenseMail<'_>) -> Mail {
    let base = &config.public_base_url;
    let support = &config.mail.support_email;
    let body = format!(
        "Welcome to CODITECT!\n\
         \n\
         Thank you for joining the pilot. Your {plan} license for {org} is ready.\n\
         \n\
         License key: {key}\n\
         \n\
         Keep this key private: anyone who has it can activate a machine on your license.\n\
         \n\
         Install and activate\n\
         \n\
         1. Install the CLI:        npm install -g @coditect-ai/coditect-core\n\
         2. Activate this machine:  coditect activate {key}\n\
         3. Check the license:      coditect license status\n\
         \n\
         The license renews with your subscription (current period: until {until}).\n\
         Manage billing and devices at {base}/.\n\
         \n\
         Installation guide: {base}/#install\n\
         Support: {support}, or reply to this mail.\n\
         \n\
         -- The CODITECT team\n",
        plan = m.plan_name,
        org = m.organization_name,
        key = m.key,
        until = m.renews_or_ends,
    );
    Mail {
        kind: "license_key",
        to: m.to.to_owned(),
        subject: format!("Your CODITECT license key ({})", m.plan_name),
        body,
    }
}
