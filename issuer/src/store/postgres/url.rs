//! `DATABASE_URL` for PostgreSQL: `postgres://` or `postgresql://`, with
//! libpq's meaning of `sslmode` (`disable`, `prefer`, `require`,
//! `verify-ca`, `verify-full`) and `sslrootcert`, and Cloud SQL's
//! unix-socket form `postgresql://USER@/DB?host=/cloudsql/PROJECT:REGION:INSTANCE`.
//!
//! The URL can hold a password: [`PgUrl`] never prints it (its `Debug` and
//! [`PgUrl::redacted`] leave it out).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::config::{Host, SslMode};

/// How the connection is protected, as libpq's `sslmode` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Never TLS (`disable`).
    Off,
    /// TLS if the server offers it, certificate not checked (`prefer`,
    /// libpq's default).
    Prefer,
    /// TLS or no connection; the certificate is checked only against an
    /// `sslrootcert` if one is given (`require`).
    Require,
    /// TLS, the certificate chain checked (`verify-ca`).
    VerifyCa,
    /// TLS, the chain and the host name checked (`verify-full`).
    VerifyFull,
}

/// A parsed PostgreSQL `DATABASE_URL`.
#[derive(Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    tls: Tls,
    root_cert: Option<PathBuf>,
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgUrl")
            .field("url", &self.redacted())
            .field("tls", &self.tls)
            .finish()
    }
}

impl PartialEq for PgUrl {
    fn eq(&self, other: &Self) -> bool {
        self.redacted() == other.redacted()
            && self.tls == other.tls
            && self.root_cert == other.root_cert
            && self.config.get_password() == other.config.get_password()
    }
}

impl Eq for PgUrl {}

impl PgUrl {
    /// Whether `url` names PostgreSQL at all (then [`PgUrl::parse`] decides
    /// whether it is a good one).
    pub fn is_postgres(url: &str) -> bool {
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }

    /// Parses a URL; the error says what is wrong without repeating the
    /// URL (it may hold a password).
    pub fn parse(url: &str) -> Result<PgUrl, String> {
        if !Self::is_postgres(url) {
            return Err("must start with postgres:// or postgresql://".into());
        }
        // Take out what tokio-postgres does not know (the verify modes and
        // the root certificate), and give it the rest.
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let mut tls = Tls::Prefer;
        let mut root_cert = None;
        let mut rest = Vec::new();
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            match pair.split_once('=') {
                Some(("sslmode", mode)) => {
                    tls = match mode {
                        "disable" => Tls::Off,
                        "prefer" | "allow" => Tls::Prefer,
                        "require" => Tls::Require,
                        "verify-ca" => Tls::VerifyCa,
                        "verify-full" => Tls::VerifyFull,
                        _ => {
                            return Err(format!(
                                "sslmode={mode} is not one of disable, prefer, require, verify-ca, verify-full"
                            ));
                        }
                    }
                }
                Some(("sslrootcert", path)) if !path.is_empty() => {
                    root_cert = Some(PathBuf::from(path));
                }
                _ => rest.push(pair),
            }
        }
        let rebuilt = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config = tokio_postgres::Config::from_str(&rebuilt)
            .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        config.ssl_mode(tls.into());
        if config.get_user().is_none() {
            return Err("names no user (postgresql://USER@HOST/DATABASE)".into());
        }
        if config.get_hosts().is_empty() {
            return Err(
                "names no host (a host name, or ?host=/cloudsql/PROJECT:REGION:INSTANCE)".into(),
            );
        }
        if config.get_dbname().is_none() {
            return Err("names no database (postgresql://USER@HOST/DATABASE)".into());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("coditect-issuer");
        }
        Ok(PgUrl {
            config,
            tls,
            root_cert,
        })
    }

    /// The URL without its password, for logs and admin output.
    pub fn redacted(&self) -> String {
        let user = self.config.get_user().unwrap_or_default();
        let db = self.config.get_dbname().unwrap_or_default();
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        match self.config.get_hosts().first() {
            Some(Host::Tcp(host)) => format!("postgresql://{user}@{host}:{port}/{db}"),
            #[cfg(unix)]
            Some(Host::Unix(dir)) => {
                format!("postgresql://{user}@/{db}?host={}", dir.display())
            }
            None => format!("postgresql://{user}@/{db}"),
        }
    }

    /// The name of the database.
    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or_default()
    }

    /// The same server, another database (tests make their own).
    pub fn with_dbname(&self, dbname: &str) -> PgUrl {
        let mut other = self.clone();
        other.config.dbname(dbname);
        other
    }

    /// How the connection is protected.
    pub fn tls_mode(&self) -> Tls {
        self.tls
    }

    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The TLS connector for this URL's mode.
    pub(crate) fn tls(&self) -> Result<MakeTlsConnector, String> {
        let mut builder = native_tls::TlsConnector::builder();
        let checked_chain = match self.tls {
            Tls::Off | Tls::Prefer => false,
            Tls::Require => self.root_cert.is_some(),
            Tls::VerifyCa | Tls::VerifyFull => true,
        };
        if let Some(path) = &self.root_cert {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
            let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| {
                format!(
                    "sslrootcert {} is not a PEM certificate: {e}",
                    path.display()
                )
            })?;
            builder.add_root_certificate(cert);
        }
        builder.danger_accept_invalid_certs(!checked_chain);
        builder.danger_accept_invalid_hostnames(self.tls != Tls::VerifyFull);
        let connector = builder
            .build()
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        Ok(MakeTlsConnector::new(connector))
    }
}

impl From<Tls> for SslMode {
    fn from(t: Tls) -> SslMode {
        match t {
            Tls::Off => SslMode::Disable,
            Tls::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_urls_parse_and_print_without_the_password() {
        let u = PgUrl::parse("postgresql://app:s3cret@db.internal:6543/licenses").unwrap();
        assert_eq!(u.redacted(), "postgresql://app@db.internal:6543/licenses");
        assert!(!format!("{u:?}").contains("s3cret"));
        assert_eq!(u.tls_mode(), Tls::Prefer);
        assert_eq!(u.dbname(), "licenses");
        let u = PgUrl::parse("postgres://postgres@127.0.0.1/test").unwrap();
        assert_eq!(u.redacted(), "postgresql://postgres@127.0.0.1:5432/test");
    }

    #[test]
    fn the_cloud_sql_socket_form_parses() {
        let u =
            PgUrl::parse("postgresql://issuer:pw@/licenses?host=/cloudsql/acme:europe-west1:pilot")
                .unwrap();
        assert_eq!(
            u.redacted(),
            "postgresql://issuer@/licenses?host=/cloudsql/acme:europe-west1:pilot"
        );
    }

    #[test]
    fn sslmode_follows_libpq() {
        for (mode, tls) in [
            ("disable", Tls::Off),
            ("prefer", Tls::Prefer),
            ("require", Tls::Require),
            ("verify-ca", Tls::VerifyCa),
            ("verify-full", Tls::VerifyFull),
        ] {
            let u = PgUrl::parse(&format!("postgresql://u@h/d?sslmode={mode}")).unwrap();
            assert_eq!(u.tls_mode(), tls, "{mode}");
            assert_eq!(u.config().get_ssl_mode(), SslMode::from(tls));
            assert!(u.tls().is_ok());
        }
        let err = PgUrl::parse("postgresql://u@h/d?sslmode=sometimes").unwrap_err();
        assert!(err.contains("sslmode=sometimes"), "{err}");
        let u = PgUrl::parse("postgresql://u@h/d?sslmode=verify-full&sslrootcert=/nonexistent.pem")
            .unwrap();
        assert!(u.tls().err().unwrap().contains("/nonexistent.pem"));
    }

    #[test]
    fn incomplete_urls_say_what_is_missing_and_never_echo_the_password() {
        for (url, says) in [
            ("postgresql://h/d", "no user"),
            ("postgresql://u:pw@/d", "no host"),
            ("postgresql://u:pw@h", "no database"),
            ("postgresql://u:pw@h/d?colour=blue", "not a PostgreSQL URL"),
            ("mysql://u:pw@h/d", "postgres://"),
        ] {
            let err = PgUrl::parse(url).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("pw"), "{url}: {err}");
        }
    }
}
