//! Databases for tests: a fresh PostgreSQL database per test on the server at
//! `ROUTERO_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432`), or a SQLite file.
//!
//! Without a reachable PostgreSQL server, plain `cargo test` skips the PostgreSQL half of each
//! test, saying so; `make test` sets `ROUTERO_REQUIRE_POSTGRES=1`, which makes it a failure.

use sqlx::{AssertSqlSafe, Connection};

/// The URL of a new, empty PostgreSQL database.
pub async fn fresh_postgres() -> Result<String, sqlx::Error> {
    let server = std::env::var("ROUTERO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("routero_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::any::install_default_drivers();
    let mut admin = sqlx::AnyConnection::connect(&format!("{server}/postgres")).await?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    Ok(format!("{server}/{name}"))
}

/// A fresh PostgreSQL database for a test, or `None` (with a message saying why the test's
/// PostgreSQL half is skipped) when the server cannot be reached and
/// `ROUTERO_REQUIRE_POSTGRES` is not set.
///
/// # Panics
/// When the database cannot be made and PostgreSQL is required.
#[expect(
    clippy::panic,
    clippy::print_stderr,
    reason = "a test helper reports a skip, or fails the test"
)]
pub async fn postgres_or_skip(test: &str) -> Option<String> {
    match fresh_postgres().await {
        Ok(url) => Some(url),
        Err(error) if std::env::var_os("ROUTERO_REQUIRE_POSTGRES").is_none() => {
            eprintln!(
                "{test}: PostgreSQL half skipped: no server reachable ({error}); set \
                 ROUTERO_TEST_POSTGRES_URL, or run `make test`, which starts one"
            );
            None
        }
        Err(error) => panic!("{test}: PostgreSQL is required (ROUTERO_REQUIRE_POSTGRES): {error}"),
    }
}

/// The URL of a SQLite file in `dir`.
pub fn sqlite_in(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("test.db").display())
}

#[doc(hidden)]
pub use tempfile;

/// Runs each listed `async fn test(store)` once on SQLite and once on a fresh PostgreSQL
/// database; `$open` is an `async fn(&str) -> Store` that opens the store at a URL.
#[macro_export]
macro_rules! on_both_databases {
    ($open:ident; $($test:ident),* $(,)?) => {
        mod on_sqlite {
            $( #[tokio::test] async fn $test() {
                let dir = $crate::databases::tempfile::tempdir().unwrap();
                super::$test(super::$open(&$crate::databases::sqlite_in(dir.path())).await).await
            } )*
        }
        mod on_postgres {
            $( #[tokio::test] async fn $test() {
                let Some(url) = $crate::databases::postgres_or_skip(stringify!($test)).await else {
                    return;
                };
                super::$test(super::$open(&url).await).await
            } )*
        }
    };
}
