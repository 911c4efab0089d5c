//! Database connections (SQLite or PostgreSQL, chosen by URL) and migrations.
//!
//! Each stateful role owns its database and its migrations; no role reads
//! another's tables. SQLite (the embedded default) runs in WAL mode with a
//! single writer connection, so concurrent requests queue in the pool rather
//! than failing with `SQLITE_BUSY`; PostgreSQL gets a real pool.

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr,
};
use sea_orm_migration::MigratorTrait;

use crate::config::DatabaseConfig;

/// Connect to `url`, creating the SQLite file's directory when needed.
pub async fn connect(url: &str, cfg: &DatabaseConfig) -> Result<DatabaseConnection, DbErr> {
    let sqlite = url.starts_with("sqlite:");
    if sqlite
        && let Some(dir) = sqlite_path(url).and_then(|p| p.parent().map(|d| d.to_path_buf()))
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(&dir).map_err(|e| {
            DbErr::Custom(format!(
                "cannot create database directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    // Citizens' data: a new SQLite file is readable by its owner only (its
    // -wal and -shm files take the same mode); an existing one is tightened.
    if sqlite && let Some(path) = sqlite_path(url) {
        private_file(&path)?;
    }
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30));
    if sqlite {
        opts.max_connections(1).min_connections(1);
    } else {
        opts.max_connections(cfg.max_connections.max(1));
    }
    let db = Database::connect(opts).await?;
    if db.get_database_backend() == DatabaseBackend::Sqlite {
        db.execute_unprepared(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
        )
        .await?;
    }
    Ok(db)
}

/// Create `path` empty with mode 0600 when missing, else set 0600 on it.
fn private_file(path: &std::path::Path) -> Result<(), DbErr> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |e: std::io::Error| {
        DbErr::Custom(format!(
            "cannot prepare database file {}: {e}",
            path.display()
        ))
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

/// Connect and, when configured, bring the schema up to date.
pub async fn connect_and_migrate<M: MigratorTrait>(
    url: &str,
    cfg: &DatabaseConfig,
) -> Result<DatabaseConnection, DbErr> {
    let db = connect(url, cfg).await?;
    if cfg.migrate_on_start {
        M::up(&db, None).await?;
    }
    Ok(db)
}

/// The file path of a `sqlite:` URL (`sqlite://./data/x.db?mode=rwc`).
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// Whether an error is a unique-constraint violation (a concurrent or
/// repeated insert of the same key), on either backend.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// Atomically increment and return a named counter, in one statement on
/// both backends. `table` must have columns `key` (text, primary key) and
/// `last_value` (bigint); the first value is 1. Used for human numbering
/// (dossier references, ticket numbers) where gaps are acceptable but
/// duplicates are not.
pub async fn next_counter_value(
    conn: &impl ConnectionTrait,
    table: &'static str,
    key: &str,
) -> Result<i64, DbErr> {
    let backend = conn.get_database_backend();
    let placeholder = if backend == DatabaseBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    let sql = format!(
        "INSERT INTO {table} (key, last_value) VALUES ({placeholder}, 1) \
         ON CONFLICT (key) DO UPDATE SET last_value = {table}.last_value + 1 RETURNING last_value"
    );
    let row = conn
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            sql,
            [key.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom(format!("{table}: counter returned no row")))?;
    row.try_get::<i64>("", "last_value")
}

/// A raw statement built piece by piece, with placeholders in the
/// backend's style (`?` for SQLite, `$n` for PostgreSQL).
pub struct Sql {
    backend: sea_orm::DbBackend,
    text: String,
    values: Vec<sea_orm::Value>,
}

impl Sql {
    pub fn new(backend: sea_orm::DbBackend) -> Sql {
        Sql {
            backend,
            text: String::new(),
            values: Vec::new(),
        }
    }

    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    pub fn bind(&mut self, v: impl Into<sea_orm::Value>) -> &mut Self {
        self.values.push(v.into());
        if self.backend == sea_orm::DbBackend::Postgres {
            let n = self.values.len();
            self.text.push_str(&format!("${n}"));
        } else {
            self.text.push('?');
        }
        self
    }

    pub fn list(&mut self, items: &[String]) -> &mut Self {
        for (i, v) in items.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(v.clone());
        }
        self
    }

    pub fn build(self) -> sea_orm::Statement {
        sea_orm::Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/x.db?mode=rwc", dir.path().display());
        let cfg = DatabaseConfig {
            migrate_on_start: false,
            max_connections: 1,
        };
        let db = connect(&url, &cfg).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1);")
            .await
            .unwrap();
        for name in ["x.db", "x.db-wal"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
        }
        drop(db);
        // An existing, wider file is tightened at the next start.
        let path = dir.path().join("x.db");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _db = connect(&url, &cfg).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn sqlite_urls_give_their_file_path() {
        assert_eq!(
            sqlite_path("sqlite://./data/x.db?mode=rwc").unwrap(),
            std::path::PathBuf::from("./data/x.db")
        );
        assert_eq!(
            sqlite_path("sqlite:/tmp/y.db").unwrap(),
            std::path::PathBuf::from("/tmp/y.db")
        );
        assert!(sqlite_path("sqlite::memory:").is_none());
    }
}
