//! Databases for tests: a fresh PostgreSQL database per test on the server at
//! `ROUTERO_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432`), or a SQLite file.

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
                let url = $crate::databases::fresh_postgres().await.unwrap();
                super::$test(super::$open(&url).await).await
            } )*
        }
    };
}
