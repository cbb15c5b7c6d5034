//! The database an end-to-end test runs the issuer on: the embedded SQLite
//! file in the test's data folder, or a PostgreSQL database of its own on
//! the server named by `CODITECT_TEST_POSTGRES` (default
//! `postgresql://postgres@127.0.0.1:5432/test`, the development and CI
//! machines' server; `scripts/test.sh` starts a throwaway one where none
//! answers).
//!
//! A PostgreSQL database gets a random name, is written into the data
//! folder (`.database-url`, which [`crate::issuer::issuer_command`] turns
//! into `DATABASE_URL` for the server and every admin command on that
//! folder), and is dropped with the [`TestDatabase`].
//!
//! Tests that prove an invariant run on both: [`on_both_backends!`] makes
//! a `sqlite` and a `postgres` test of one body.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Where a test's issuer keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The file in a data folder that names the test's PostgreSQL database.
pub const DATABASE_URL_FILE: &str = ".database-url";

/// The PostgreSQL server the tests use (a URL with its maintenance
/// database, which is never changed).
pub fn postgres_server_url() -> String {
    std::env::var("CODITECT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test".into())
}

/// The same server, another database.
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server, None),
    };
    let root = match base.rfind('/') {
        Some(i) if i > "postgresql://".len() - 1 => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

fn connect(url: &str) -> Result<postgres::Client, postgres::Error> {
    postgres::Client::connect(url, postgres::NoTls)
}

/// A test's database; a PostgreSQL one is dropped with this value.
pub struct TestDatabase {
    backend: Backend,
    data_dir: PathBuf,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// The database for the issuer working on `data_dir`. `None` when the
    /// backend is PostgreSQL and no server answers outside CI (the test
    /// then ends, saying so); under `CI=true` that fails the test.
    pub fn create(backend: Backend, data_dir: &Path) -> Option<TestDatabase> {
        let mut db = TestDatabase {
            backend,
            data_dir: data_dir.to_path_buf(),
            postgres: None,
        };
        if backend == Backend::Sqlite {
            return Some(db);
        }
        let server = postgres_server_url();
        let mut client = match connect(&server) {
            Ok(c) => c,
            Err(e) if crate::in_ci() => {
                panic!(
                    "PostgreSQL ({server}) does not answer: {e}; CI must run the PostgreSQL tests"
                )
            }
            Err(e) => {
                eprintln!(
                    "skipped: PostgreSQL ({server}) does not answer: {e}; scripts/test.sh starts one"
                );
                return None;
            }
        };
        // Unique per process and per call: two tests of one binary can read
        // the same clock value (seen in CI), so a counter comes with it.
        static CREATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "coditect_e2e_{}_{}_{}",
            std::process::id(),
            CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        client
            // From template0, which nobody connects to (a copy of template1
            // fails while another session is connected to it).
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}: {:?}", e.as_db_error()));
        let url = with_database(&server, &name);
        std::fs::write(data_dir.join(DATABASE_URL_FILE), &url).expect("write .database-url");
        db.postgres = Some((url, name));
        Some(db)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The rows of a query, each as a JSON object by column name (integers
    /// as numbers, booleans as booleans, everything else as text).
    pub fn rows(&self, sql: &str) -> Vec<Value> {
        match &self.postgres {
            None => {
                let conn = rusqlite::Connection::open_with_flags(
                    self.data_dir.join("issuer.sqlite3"),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .expect("open the issuer's database");
                crate::billing::query_rows(&conn, sql)
            }
            Some((url, _)) => {
                let mut client = connect(url).expect("connect to the test database");
                let rows = client
                    .query(sql, &[])
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.iter().map(pg_row_json).collect()
            }
        }
    }

    /// Runs statements that change the database (a test setting up a
    /// state the issuer must cope with).
    pub fn execute(&self, sql: &str) {
        match &self.postgres {
            None => {
                let conn = rusqlite::Connection::open(self.data_dir.join("issuer.sqlite3"))
                    .expect("open the issuer's database");
                conn.execute_batch(sql)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            Some((url, _)) => {
                let mut client = connect(url).expect("connect to the test database");
                client
                    .batch_execute(sql)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
    }

    /// The PostgreSQL database's URL (`None` on SQLite).
    pub fn url(&self) -> Option<&str> {
        self.postgres.as_ref().map(|(url, _)| url.as_str())
    }

    /// The first column of the first row, as a number.
    pub fn count(&self, sql: &str) -> i64 {
        let rows = self.rows(sql);
        let first = rows
            .first()
            .and_then(|r| r.as_object())
            .and_then(|o| o.values().next())
            .cloned()
            .unwrap_or(Value::Null);
        first
            .as_i64()
            .unwrap_or_else(|| panic!("{sql} gave no number: {rows:?}"))
    }

    /// The one row of a query.
    pub fn one(&self, sql: &str) -> Value {
        let rows = self.rows(sql);
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows.into_iter().next().unwrap_or(Value::Null)
    }
}

fn pg_row_json(row: &postgres::Row) -> Value {
    use postgres::types::Type;
    let mut map = serde_json::Map::new();
    for (i, col) in row.columns().iter().enumerate() {
        let t = col.type_();
        let v = if *t == Type::INT8 {
            json!(row.get::<_, Option<i64>>(i))
        } else if *t == Type::INT4 {
            json!(row.get::<_, Option<i32>>(i))
        } else if *t == Type::INT2 {
            json!(row.get::<_, Option<i16>>(i))
        } else if *t == Type::BOOL {
            json!(row.get::<_, Option<bool>>(i))
        } else if *t == Type::TEXT || *t == Type::VARCHAR || *t == Type::NAME {
            json!(row.get::<_, Option<String>>(i))
        } else {
            json!(format!("<{t}>"))
        };
        map.insert(col.name().to_owned(), v);
    }
    Value::Object(map)
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((_, name)) = &self.postgres
            && let Ok(mut client) = connect(&postgres_server_url())
        {
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// The `DATABASE_URL` a data folder's test database asks for, if any.
pub fn database_url_for(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(DATABASE_URL_FILE)).ok()
}

/// Runs each named test body (`fn name(backend: Backend)`) twice, as
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::database::Backend::Sqlite);
            }
            #[test]
            fn postgres() {
                super::$name($crate::database::Backend::Postgres);
            }
        }
    )*};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_database_on_the_same_server() {
        assert_eq!(
            with_database("postgresql://postgres@127.0.0.1:5432/test", "x"),
            "postgresql://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgresql://u@h/test?sslmode=disable", "x"),
            "postgresql://u@h/x?sslmode=disable"
        );
    }
}
