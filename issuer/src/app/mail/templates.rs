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
         Manage billing and devices at {base}/account.\n\
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

/// The mail that confirms a new account's address. `link` carries the
/// single-use token; after a web signup it continues to the payment.
pub fn verify_email_mail(
    config: &Config,
    to: &str,
    link: &str,
    continues_to_payment: bool,
) -> Mail {
    let support = &config.mail.support_email;
    let next = if continues_to_payment {
        "Open this link to confirm your address and continue to the payment of your pilot"
    } else {
        "Open this link to confirm your address"
    };
    let body = format!(
        "Welcome to CODITECT!\n\
         \n\
         {next} (it works once, within 24 hours):\n\
         \n\
         {link}\n\
         \n\
         An account that is neither confirmed nor paid for is deleted after a few days.\n\
         If you did not sign up, ignore this mail.\n\
         \n\
         Support: {support}\n\
         \n\
         -- The CODITECT team\n"
    );
    Mail {
        kind: "verify_email",
        to: to.to_owned(),
        subject: "Confirm your email for CODITECT".into(),
        body,
    }
}

/// The password-reset mail. `link` carries the single-use token.
pub fn password_reset_mail(config: &Config, to: &str, link: &str) -> Mail {
    let support = &config.mail.support_email;
    let body = format!(
        "Someone asked to reset the password of your CODITECT account.\n\
         \n\
         To choose a new password, open this link (it works once, within an hour):\n\
         \n\
         {link}\n\
         \n\
         Setting a new password signs out every session of the account.\n\
         If you did not ask for this, ignore this mail: your password stays as it is.\n\
         \n\
         Support: {support}\n\
         \n\
         -- The CODITECT team\n"
    );
    Mail {
        kind: "password_reset",
        to: to.to_owned(),
        subject: "Reset your CODITECT password".into(),
        body,
    }
}

/// The mail to the owner of an address someone tried to sign up with
/// again: how to sign in, and a password-reset link.
pub fn signup_existing_mail(config: &Config, to: &str, link: &str) -> Mail {
    let base = &config.public_base_url;
    let support = &config.mail.support_email;
    let body = format!(
        "Someone tried to create a CODITECT account with this address, which already has one.\n\
         \n\
         If it was you: sign in with your password (the signup form at {base}/signup\n\
         continues with your existing account when the password is right), or choose\n\
         a new password with this link (it works once, within an hour):\n\
         \n\
         {link}\n\
         \n\
         If it was not you, ignore this mail: nothing has changed.\n\
         \n\
         Support: {support}\n\
         \n\
         -- The CODITECT team\n"
    );
    Mail {
        kind: "signup_existing",
        to: to.to_owned(),
        subject: "Your CODITECT account".into(),
        body,
    }
}

/// The mail with a license's new key, after its holder asked for one on
/// the account page (the old key no longer works).
pub fn replaced_key_mail(config: &Config, to: &str, key: &str, plan_name: &str) -> Mail {
    let base = &config.public_base_url;
    let support = &config.mail.support_email;
    let body = format!(
        "Your {plan_name} license has a new key, as asked on your account page.\n\
         \n\
         License key: {key}\n\
         \n\
         The old key no longer works. On each machine, run:\n\
         \n\
         \x20   coditect activate {key}\n\
         \n\
         Machines keep their seats. If you did not ask for this, write to {support} now.\n\
         \n\
         Your account: {base}/account\n\
         \n\
         -- The CODITECT team\n"
    );
    Mail {
        kind: "license_key",
        to: to.to_owned(),
        subject: format!("Your new CODITECT license key ({plan_name})"),
        body,
    }
}
