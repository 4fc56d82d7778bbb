//! One way to open a database for every Routero store: a sqlx `Any` pool on `postgres://…` or
//! `sqlite://…`, and embedded migrations (one SQL text per backend) recorded in a ledger table
//! of the store's own, so several stores can share one database.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::path::Path;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr, any::AnyPoolOptions};
use thiserror::Error;

/// Errors of opening and migrating a database.
#[derive(Debug, Error)]
pub enum SqlError {
    /// The URL names neither PostgreSQL nor SQLite.
    #[error("database_url must start with postgres:// or sqlite:")]
    UnsupportedUrl,
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migrate: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database file could not be created owner-only.
    #[error("database file: {0}")]
    File(std::io::Error),
}

/// A migration: `(version, description, PostgreSQL text, SQLite text)`.
pub type EmbeddedMigration = (i64, &'static str, &'static str, &'static str);

/// The file of a `sqlite://<path>[?…]` or `sqlite:<path>` URL (not an in-memory database).
fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.starts_with(":memory:")).then_some(path)
}

/// Opens `url` and applies `migrations`, recording them in the table `ledger`.
pub async fn open(
    url: &str,
    ledger: &'static str,
    migrations: &[EmbeddedMigration],
) -> Result<AnyPool, SqlError> {
    sqlx::any::install_default_drivers();
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !postgres && !url.starts_with("sqlite:") {
        return Err(SqlError::UnsupportedUrl);
    }
    if let Some(path) = sqlite_file(url) {
        // Created owner-only before SQLite opens it; its journal files take its permissions.
        routero_files::touch_private(Path::new(path)).map_err(SqlError::File)?;
    }
    let url = if postgres || url.contains("mode=") {
        url.to_owned()
    } else {
        format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
    };
    let pool = AnyPoolOptions::new()
        // SQLite takes one writer at a time; one connection avoids SQLITE_BUSY under load.
        .max_connections(if postgres { 16 } else { 1 })
        .connect(&url)
        .await?;
    let migrations = migrations
        .iter()
        .map(|&(version, description, pg, lite)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                (if postgres { pg } else { lite }).into_sql_str(),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(ledger);
    migrator.run(&pool).await?;
    Ok(pool)
}
