//! A database of its own for each test, on the PostgreSQL server named by
//! `CODITECT_TEST_POSTGRES` (default `postgresql://postgres@127.0.0.1:5432/test`,
//! the development and CI machines' server). The database gets a random
//! name and is dropped when the test ends.
//!
//! When no server answers: under `CI=true` the test fails (PostgreSQL is
//! never skipped silently there); elsewhere it is skipped with a notice
//! (`scripts/test.sh` starts a throwaway server, so the README's test
//! command always runs these).

use super::PgUrl;
use crate::store::SharedStore;

/// The server the tests use.
pub fn server_url() -> PgUrl {
    let url = std::env::var("CODITECT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test?sslmode=disable".into());
    match PgUrl::parse(&url) {
        Ok(u) => u,
        Err(e) => panic!("CODITECT_TEST_POSTGRES: {e}"),
    }
}

/// A test's own database; dropped with this value.
pub struct TestDatabase {
    url: PgUrl,
}

impl TestDatabase {
    /// Creates an empty database, or `None` (outside CI) when no server
    /// answers.
    pub async fn create() -> Option<TestDatabase> {
        let server = server_url();
        let client = match connect(&server).await {
            Ok(c) => c,
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
                "PostgreSQL at {} does not answer ({e}); CI must run the PostgreSQL tests",
                server.redacted()
            ),
            Err(e) => {
                eprintln!(
                    "skipped: PostgreSQL at {} does not answer ({e}); scripts/test.sh starts one",
                    server.redacted()
                );
                return None;
            }
        };
        let name = format!("coditect_test_{}", uuid::Uuid::new_v4().simple());
        client
            // From template0, which nobody connects to (a copy of template1
            // fails while another session is connected to it).
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}: {:?}", e.as_db_error()));
        Some(TestDatabase {
            url: server.with_dbname(&name),
        })
    }

    /// The database's URL.
    #[allow(dead_code)]
    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    /// A migrated store on the database.
    pub async fn open(&self) -> SharedStore {
        crate::store::open_postgres(
            &self.url,
            crate::store::Migrations::Apply,
            crate::store::test_pepper(),
        )
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", self.url.redacted()))
    }
}

async fn connect(url: &PgUrl) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = url
        .config()
        .connect(url.tls()?)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(client)
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on
        // itself: the database is dropped from a thread of its own.
        let server = server_url();
        let name = self.url.dbname().to_owned();
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(client) = connect(&server).await {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = done.join();
    }
}
