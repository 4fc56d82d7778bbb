//! Schema migrations, embedded in the binary: `migrations/postgres` and `migrations/sqlite`.

use std::borrow::Cow;

use sqlx::AnyPool;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::ControlPlaneError;

/// `(version, description, postgres sql, sqlite sql)`, in order.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[(
    1,
    "foundation",
    include_str!("../../../../migrations/postgres/0001_foundation.sql"),
    include_str!("../../../../migrations/sqlite/0001_foundation.sql"),
)];

/// Applies every pending migration for the pool's backend.
pub(crate) async fn run(pool: &AnyPool, postgres: bool) -> Result<(), ControlPlaneError> {
    let migrations = MIGRATIONS
        .iter()
        .map(|&(version, description, pg, lite)| {
            let sql = if postgres { pg } else { lite };
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations).run(pool).await?;
    Ok(())
}
