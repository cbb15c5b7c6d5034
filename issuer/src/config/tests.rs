use super::*;
use crate::keys;

fn load(env: &dyn Env) -> Result<Config, ConfigError> {
    Config::load(env, &Overrides::default(), &mut Vec::new())
}

#[test]
fn development_runs_with_nothing_but_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut notices = Vec::new();
    let cfg = Config::load(
        &[("CODITECT_DATA_DIR", d)],
        &Overrides::default(),
        &mut notices,
    )
    .unwrap();
    assert_eq!(cfg.environment, Environment::Development);
    assert!(cfg.signing_key_is_development);
    assert_eq!(cfg.signer.kid(), keys::DEVELOPMENT_KID);
    assert_eq!(
        cfg.database,
        DatabaseLocation::Sqlite(dir.path().join("issuer.sqlite3"))
    );
    assert_eq!(cfg.token_lifetime, Duration::from_secs(72 * 3600));
    assert_eq!(cfg.token_renew_after, Duration::from_secs(24 * 3600));
    assert!(notices.iter().any(|n| n.contains("DEVELOPMENT key")));
    assert!(
        notices
            .iter()
            .any(|n| n.contains("LICENSE_KEY_PEPPER is not set"))
    );
    // The generated JWT secret and pepper are stable across restarts.
    let again = load(&[("CODITECT_DATA_DIR", d)]).unwrap();
    assert_eq!(*cfg.jwt_secret, *again.jwt_secret);
    let key =
        crate::domain::license_key::LicenseKey::parse("CODITECT-PILOT-ABCD-EFGH-JKMN").unwrap();
    assert_eq!(
        key.hash(&cfg.license_key_pepper),
        key.hash(&again.license_key_pepper)
    );
    // Kept owner-only, and never printed.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("license-key-pepper"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let kept = std::fs::read_to_string(dir.path().join("license-key-pepper")).unwrap();
    assert!(!format!("{cfg:?} {:?}", cfg.license_key_pepper).contains(kept.trim()));
}

#[test]
fn production_refuses_missing_or_weak_secrets_and_the_dev_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let strong = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        load(&[("CODITECT_DATA_DIR", d), ("CODITECT_ENV", "production")]).unwrap_err(),
        ConfigError::WeakJwtSecret
    );
    assert_eq!(
        load(&[
            ("CODITECT_DATA_DIR", d),
            ("CODITECT_ENV", "production"),
            ("JWT_SECRET", "short")
        ])
        .unwrap_err(),
        ConfigError::WeakJwtSecret
    );
    assert_eq!(
        load(&[
            ("CODITECT_DATA_DIR", d),
            ("CODITECT_ENV", "production"),
            ("JWT_SECRET", strong)
        ])
        .unwrap_err(),
        ConfigError::MissingSigningKey
    );
    let dev_key = format!(
        "{}/../keys/development/coditect-dev.private.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    assert_eq!(
        load(&[
            ("CODITECT_DATA_DIR", d),
            ("CODITECT_ENV", "production"),
            ("JWT_SECRET", strong),
            ("SIGNING_KEY_FILE", &dev_key)
        ])
        .unwrap_err(),
        ConfigError::DevelopmentKeyInProduction
    );
    let prod = dir.path().join("prod-2026.pem");
    keys::write_pem_file(&prod, &keys::generate().unwrap()).unwrap();
    let prod = prod.to_str().unwrap();
    let base = [
        ("CODITECT_DATA_DIR", d),
        ("CODITECT_ENV", "production"),
        ("JWT_SECRET", strong),
        ("SIGNING_KEY_FILE", prod),
    ];
    assert_eq!(load(&base).unwrap_err(), ConfigError::MissingStripe);
    let stripe = [
        ("STRIPE_SECRET_KEY", "sk_live_abc"),
        ("STRIPE_PRICE_STARTER_MONTHLY", "price_sm"),
        ("STRIPE_PRICE_STARTER_ANNUAL", "price_sa"),
        ("STRIPE_PRICE_PRO_MONTHLY", "price_pm"),
        ("STRIPE_PRICE_PRO_ANNUAL", "price_pa"),
    ];
    let without_webhook_secret: Vec<(&str, &str)> =
        base.iter().chain(stripe.iter()).copied().collect();
    assert_eq!(
        load(&VecEnv(without_webhook_secret.clone())).unwrap_err(),
        ConfigError::MissingStripe
    );
    let mut full = without_webhook_secret;
    full.push(("STRIPE_WEBHOOK_SECRET", "whsec_abc"));
    assert_eq!(
        load(&VecEnv(full.clone())).unwrap_err(),
        ConfigError::MissingSmtp
    );
    full.push(("SMTP_URL", "smtp://mail.example.com:587"));
    // The pepper: required, at least 32 bytes, and never in a message.
    assert_eq!(
        load(&VecEnv(full.clone())).unwrap_err(),
        ConfigError::MissingKeyPepper
    );
    let mut short = full.clone();
    short.push(("LICENSE_KEY_PEPPER", "short-pepper"));
    let err = load(&VecEnv(short)).unwrap_err();
    assert_eq!(err, ConfigError::MissingKeyPepper);
    assert!(!err.to_string().contains("short-pepper"));
    assert!(
        !dir.path().join("license-key-pepper").exists(),
        "production generates none"
    );
    full.push(("LICENSE_KEY_PEPPER", strong));
    let mut redirected = full.clone();
    redirected.push(("STRIPE_API_BASE", "http://127.0.0.1:9"));
    assert!(matches!(
        load(&VecEnv(redirected)).unwrap_err(),
        ConfigError::Invalid {
            var: "STRIPE_API_BASE",
            ..
        }
    ));
    for var in ["GOOGLE_ISSUER_URL", "GITHUB_BASE_URL", "GITHUB_API_URL"] {
        let mut redirected = full.clone();
        redirected.push((var, "http://127.0.0.1:9"));
        assert!(
            matches!(load(&VecEnv(redirected)).unwrap_err(), ConfigError::Invalid { var: v, .. } if v == var),
            "{var}"
        );
    }
    let mut half = full.clone();
    half.push(("GITHUB_CLIENT_ID", "Iv1.abc"));
    assert!(matches!(
        load(&VecEnv(half)).unwrap_err(),
        ConfigError::Invalid {
            var: "GITHUB_CLIENT_SECRET",
            ..
        }
    ));
    let mut with_google = full.clone();
    with_google.push(("GOOGLE_CLIENT_ID", "id.apps.googleusercontent.com"));
    with_google.push(("GOOGLE_CLIENT_SECRET", "google-secret"));
    let cfg = load(&VecEnv(with_google)).unwrap();
    let google = cfg.providers.google.as_ref().unwrap();
    assert_eq!(google.issuer_url, "https://accounts.google.com");
    assert!(cfg.providers.github.is_none(), "GitHub is not configured");
    let cfg = load(&VecEnv(full)).unwrap();
    assert!(cfg.providers.google.is_none() && cfg.providers.github.is_none());
    assert_eq!(cfg.signer.kid(), "prod-2026");
    assert!(!cfg.signing_key_is_development);
    let stripe = cfg.stripe.as_ref().unwrap();
    assert_eq!(
        stripe.prices.price_for("pilot-professional", "year"),
        Some("price_pa")
    );
    assert_eq!(
        stripe.prices.plan_of("price_sm"),
        Some(("pilot-starter", "month"))
    );
    assert_eq!(stripe.prices.plan_of("price_other"), None);
}

/// Zero configuration starts on loopback only: reachable from outside
/// (`PORT`, or a non-loopback `--bind`) it needs CODITECT_ENV said
/// explicitly, even `development`.
#[test]
fn a_server_reachable_from_outside_must_name_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let err = load(&[("CODITECT_DATA_DIR", d), ("PORT", "8080")]).unwrap_err();
    assert!(
        matches!(err, ConfigError::EnvironmentNotChosen { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("set CODITECT_ENV=production"),
        "{err}"
    );
    let outside = Overrides {
        bind: Some("0.0.0.0:8080".parse().unwrap()),
    };
    let err = Config::load(&[("CODITECT_DATA_DIR", d)], &outside, &mut Vec::new())
        .err()
        .unwrap();
    assert!(err.to_string().contains("0.0.0.0:8080"), "{err}");
    assert!(err.to_string().contains("CODITECT_ENV"), "{err}");
    // Loopback, and an explicit development mode, still start.
    for bind in ["127.0.0.1:8080", "[::1]:8080"] {
        let local = Overrides {
            bind: Some(bind.parse().unwrap()),
        };
        Config::load(&[("CODITECT_DATA_DIR", d)], &local, &mut Vec::new()).unwrap();
    }
    load(&[("CODITECT_DATA_DIR", d)]).unwrap();
    let cfg = load(&[
        ("CODITECT_DATA_DIR", d),
        ("PORT", "8080"),
        ("CODITECT_ENV", "development"),
    ])
    .unwrap();
    assert_eq!(cfg.environment, Environment::Development);
    Config::load(
        &[("CODITECT_DATA_DIR", d), ("CODITECT_ENV", "development")],
        &outside,
        &mut Vec::new(),
    )
    .unwrap();
}

struct VecEnv<'a>(Vec<(&'a str, &'a str)>);

impl Env for VecEnv<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[test]
fn database_urls() {
    assert_eq!(
        parse_database_url("sqlite:///var/lib/x.db"),
        Ok(DatabaseLocation::Sqlite("/var/lib/x.db".into()))
    );
    assert_eq!(
        parse_database_url("data/x.db"),
        Ok(DatabaseLocation::Sqlite("data/x.db".into()))
    );
    assert!(matches!(
        parse_database_url("postgres://u@h/db"),
        Ok(DatabaseLocation::Postgres(u)) if u.redacted() == "postgresql://u@h:5432/db"
    ));
    assert!(matches!(
        parse_database_url("postgresql://u:pw@/db?host=/cloudsql/p:r:i"),
        Ok(DatabaseLocation::Postgres(_))
    ));
    let Err(err) = parse_database_url("postgresql://u:hunter2@h") else {
        panic!("a URL without a database was accepted")
    };
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(parse_database_url("mysql://h/db").is_err());
    assert!(parse_database_url("sqlite://").is_err());
}

#[test]
fn bad_values_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for (var, value) in [
        ("JWT_EXPIRY", "soon"),
        ("TOKEN_LIFETIME", "0s"),
        ("PORT", "eighty"),
        ("ENABLE_PILOT_SIGNUP", "maybe"),
        ("PILOT_USERS_LIMIT", "-1"),
        ("CODITECT_ENV", "staging"),
        ("PUBLIC_BASE_URL", "ftp://x"),
    ] {
        let err = load(&[("CODITECT_DATA_DIR", d), (var, value)]).unwrap_err();
        assert!(err.to_string().contains(var), "{var}: {err}");
        assert!(!err.to_string().contains(value) || var == "PORT", "{err}");
    }
    let err = load(&[
        ("CODITECT_DATA_DIR", d),
        ("TOKEN_LIFETIME", "1h"),
        ("TOKEN_RENEW_AFTER", "2h"),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("TOKEN_RENEW_AFTER"));
}
