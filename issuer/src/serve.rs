//! `coditect-issuer serve`: logging, start-up checks, the listener and a
//! graceful shutdown. This is where the parts are put together: the
//! configuration, the store it names, the use cases' state and the HTTP
//! application.

use std::net::SocketAddr;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpListener};

use crate::admin::AdminError;
use crate::app::AppState;
use crate::config::{Config, DatabaseLocation, Environment, Overrides, ProcessEnv};
use crate::store::{Migrations, SharedStore};

/// Starts the log (`crate::logging`: JSON lines for Cloud Logging in
/// production or with `LOG_FORMAT=json`, colour only on a terminal).
pub fn init_logging() {
    crate::logging::init();
}

/// Loads the configuration, quietly: what it notes for the operator (the
/// development key, a generated secret, mail written to the log) concerns
/// a server, and `serve` logs it ([`load_config_for_serving`]).
pub fn load_config(overrides: &Overrides) -> Result<Config, AdminError> {
    let mut notices = Vec::new();
    Ok(Config::load(&ProcessEnv, overrides, &mut notices)?)
}

/// Loads the configuration and logs its notices.
fn load_config_for_serving(overrides: &Overrides) -> Result<Config, AdminError> {
    let mut notices = Vec::new();
    let config = Config::load(&ProcessEnv, overrides, &mut notices)?;
    for n in &notices {
        tracing::warn!("{n}");
    }
    Ok(config)
}

/// Opens the configured database. SQLite (one process) migrates as it
/// opens. On PostgreSQL a production server only checks that the schema
/// is current (migrations run as their own step, `coditect-issuer
/// migrate`, before a new version takes traffic); elsewhere it migrates.
pub async fn open_store(
    config: &Config,
    migrations: Migrations,
) -> Result<SharedStore, AdminError> {
    Ok(match &config.database {
        DatabaseLocation::Sqlite(path) => {
            crate::store::open_sqlite(path, config.license_key_pepper.clone())?
        }
        DatabaseLocation::Postgres(url) => {
            crate::store::open_postgres(url, migrations, config.license_key_pepper.clone()).await?
        }
    })
}

/// What a server or an everyday admin command may do to the schema.
pub fn migrations_for(config: &Config) -> Migrations {
    if config.environment == Environment::Production {
        Migrations::Require
    } else {
        Migrations::Apply
    }
}

pub fn run(bind: Option<SocketAddr>) -> Result<(), AdminError> {
    let config = load_config_for_serving(&Overrides { bind })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| AdminError::Unexpected(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let store = open_store(&config, migrations_for(&config)).await?;
        let acceptor = TcpListener::bind(config.bind)
            .into_acceptor()
            .await
            .map_err(|e| AdminError::User(format!("cannot listen on {}: {e}", config.bind)))?;
        let local = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .unwrap_or(config.bind);
        let mut config = config;
        if !config.public_base_url_configured {
            let mut shown = local;
            if shown.ip().is_unspecified() {
                shown.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            config.public_base_url = format!("http://{shown}");
        }
        tracing::info!(
            kid = config.signer.kid(),
            database = %store.location(),
            environment = ?config.environment,
            "listening on http://{local}"
        );
        let metrics_acceptor = match config.metrics.bind {
            Some(addr) => Some(TcpListener::bind(addr).into_acceptor().await.map_err(|e| {
                AdminError::User(format!("cannot listen on {addr} (METRICS_BIND): {e}"))
            })?),
            None => None,
        };
        let state = AppState::new(config, store);
        if let Some(acceptor) = metrics_acceptor {
            serve_metrics(acceptor, state.clone());
        }
        let draining = state.clone();
        let served = poem::Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(
                crate::http::app(state.clone()),
                async move {
                    shutdown_signal().await;
                    draining.begin_draining();
                },
                Some(IN_FLIGHT_GRACE),
            )
            .await;
        // No request is in flight any more (or the grace ran out): stop the
        // workers, give unsent mail back, write the audit log's queue.
        state.finish(WORKERS_GRACE).await;
        served.map_err(|e| AdminError::Unexpected(format!("server stopped: {e}")))
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// Serves `/metrics` alone on the `METRICS_BIND` listener, until the
/// process ends.
fn serve_metrics<A: Acceptor + 'static>(acceptor: A, state: AppState) {
    let shown = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .map_or_else(|| "?".to_owned(), |a| a.to_string());
    tracing::info!("serving metrics at http://{shown}/metrics");
    if state.config.metrics.token.is_none()
        && state
            .config
            .metrics
            .bind
            .is_some_and(|a| !a.ip().is_loopback())
    {
        tracing::warn!(
            "METRICS_BIND listens on {shown}, reachable from other machines, and METRICS_TOKEN is not set: anyone who reaches that port reads the metrics"
        );
    }
    tokio::spawn(async move {
        if let Err(e) = poem::Server::new_with_acceptor(acceptor)
            .run(crate::http::middleware::metrics::endpoint(state))
            .await
        {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
}

/// After SIGTERM the platform (Cloud Run) allows 10 s before it kills the
/// process: up to 7 s for requests in flight to finish…
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(7);
/// …then up to 2 s for the mail sender and the audit log.
const WORKERS_GRACE: Duration = Duration::from_secs(2);

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}
