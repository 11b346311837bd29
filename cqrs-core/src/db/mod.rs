//! Database connections for both backends: URL parsing, typed binds, write transactions, migrations.
//!
//! The pipeline writes SQL text with typed binds (ARCHITECTURE.md §9: the fastest path on both
//! backends, and the only way to express a multi-row conditional upsert on SQLite), so this module
//! is where a [`SqlValue`] meets a Diesel bind of the right SQL type for each backend.

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::{Pg, PgConnection};
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{self as st, Nullable};
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

pub mod dialect;
mod libpq;
pub mod listen;
pub mod migrations;
pub mod prepared;
pub mod typed;

/// Re-exported: messages about connections redact their URLs.
pub use crate::config::redact;
pub use dialect::Backend;

use crate::error::{Error, Result};
use crate::turns::Turn;
use crate::value::{ColumnType, SqlValue};

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Split a database URL into its backend and the string its driver takes.
///
/// ```
/// use cqrs::db::{parse_database_url, Backend};
/// assert_eq!(parse_database_url("sqlite:///tmp/a.db").unwrap(), (Backend::Sqlite, "/tmp/a.db".into()));
/// assert_eq!(parse_database_url("sqlite://data/a.db").unwrap().1, "data/a.db");
/// assert!(parse_database_url("mysql://x").is_err());
/// ```
pub fn parse_database_url(url: &str) -> Result<(Backend, String)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok((Backend::Postgres, url.to_string()))
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(Error::config("database URL `sqlite://` has no file path"));
        }
        Ok((Backend::Sqlite, path.to_string()))
    } else if let Some(path) = url.strip_prefix("sqlite:") {
        Ok((Backend::Sqlite, path.to_string()))
    } else {
        Err(Error::config(format!(
            "database URL {:?} has an unknown scheme: expected postgres://, postgresql:// or sqlite://",
            redact(url)
        )))
    }
}

/// A connection to either backend.
pub enum Db {
    /// PostgreSQL.
    Pg(PgConnection),
    /// SQLite.
    Sqlite(SqliteConnection),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db::{:?}", self.backend())
    }
}

impl Db {
    /// Connect to `url`. SQLite connections get WAL, a busy timeout and foreign keys on.
    pub fn connect(url: &str) -> Result<Db> {
        let (backend, target) = parse_database_url(url)?;
        match backend {
            Backend::Postgres => {
                Ok(Db::Pg(PgConnection::establish(&target).map_err(|e| {
                    Error::from(e).context(format!("database {}", redact(url)))
                })?))
            }
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(&target)
                    .map_err(|e| Error::from(e).context(format!("database {url}")))?;
                // busy_timeout first: switching to WAL itself needs the lock. Two processes opening
                // a fresh file at once can still see SQLITE_BUSY from the switch (it does not wait
                // on the busy handler), so retry it briefly.
                let pragmas = format!(
                    "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                    crate::turns::MAX_WAIT.as_millis()
                );
                let mut tries = 0;
                loop {
                    match conn.batch_execute(&pragmas) {
                        Ok(()) => break,
                        Err(e) if tries < 50 && e.to_string().contains("locked") => {
                            tries += 1;
                            std::thread::sleep(std::time::Duration::from_millis(20 * tries));
                        }
                        Err(e) => return Err(Error::from_diesel(e, "configuring SQLite")),
                    }
                }
                Ok(Db::Sqlite(conn))
            }
        }
    }

    /// SQLite's `PRAGMA data_version`: a number that changes when another connection commits to
    /// the file (this connection's own commits leave it); `None` on PostgreSQL. Cheap (the WAL
    /// index in shared memory), so an idle loop can ask it every millisecond to wake at another
    /// process's commit.
    pub fn data_version(&mut self) -> Result<Option<i64>> {
        #[derive(diesel::QueryableByName)]
        struct Version {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            data_version: i64,
        }
        match self {
            Db::Pg(_) => Ok(None),
            Db::Sqlite(c) => diesel::sql_query("PRAGMA data_version")
                .get_result::<Version>(c)
                .map(|v| Some(v.data_version))
                .map_err(|e| Error::from_diesel(e, "PRAGMA data_version")),
        }
    }

    /// Replace this connection by a new one to `url` if it no longer answers or a lost
    /// connection left its transaction state broken (Diesel then refuses every transaction);
    /// returns whether it was replaced. A healthy connection (after a deadlock or a busy
    /// database) is kept. Long-running loops call it after a transient error.
    pub fn heal(&mut self, url: &str) -> Result<bool> {
        fn probe<C: Connection>(c: &mut C) -> bool {
            c.transaction::<_, diesel::result::Error, _>(|c| c.batch_execute("SELECT 1"))
                .is_ok()
        }
        let healthy = match self {
            Db::Pg(c) => probe(c),
            Db::Sqlite(c) => probe(c),
        };
        if healthy {
            return Ok(false);
        }
        *self = Db::connect(url)?;
        Ok(true)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Db::Pg(_) => Backend::Postgres,
            Db::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Run the embedded cqrs migrations (`cqrs_outbox`, `cqrs_tombstones`); returns the versions applied.
    pub fn migrate(&mut self) -> Result<Vec<String>> {
        match self {
            Db::Pg(c) => migrations::run(c, PG_MIGRATIONS),
            Db::Sqlite(c) => migrations::run(c, SQLITE_MIGRATIONS),
        }
    }

    /// Execute statements without binds (DDL, pragmas).
    pub fn batch_execute(&mut self, sql: &str) -> Result<()> {
        match self {
            Db::Pg(c) => c.batch_execute(sql),
            Db::Sqlite(c) => c.batch_execute(sql),
        }
        .map_err(|e| Error::from_diesel(e, "executing SQL"))
    }

    /// Execute one statement with typed binds; returns the affected row count.
    pub fn execute(&mut self, sql: &str, binds: Vec<SqlValue>) -> Result<usize> {
        match self {
            Db::Pg(c) => bind_all_pg(diesel::sql_query(sql).into_boxed(), binds).execute(c),
            Db::Sqlite(c) => bind_all_sqlite(diesel::sql_query(sql).into_boxed(), binds).execute(c),
        }
        .map_err(Error::from)
    }

    /// Lock `stripes` (sorted, so two writers take them in the same order) until the transaction
    /// ends: PostgreSQL transaction-scoped advisory locks, so two workers cannot interleave a
    /// delete and a save of the same row. SQLite needs none: its one writer holds the database.
    pub fn lock_stripes(&mut self, stripes: &[i64]) -> Result<()> {
        match self {
            Db::Pg(c) => {
                // Prepared: every consumer batch takes its locks.
                let mut statement = prepared::Statement::default();
                statement
                    .sql("SELECT pg_advisory_xact_lock(k) FROM unnest(")
                    .bind(SqlValue::Array(
                        ColumnType::BigInt,
                        stripes.iter().copied().map(SqlValue::BigInt).collect(),
                    ))?
                    .sql(") AS k");
                c.exec_prepared(&statement)
                    .map_err(|e| e.context("locking rows"))?;
                Ok(())
            }
            Db::Sqlite(_) => Ok(()),
        }
    }

    /// Run `f` in a write transaction: `BEGIN IMMEDIATE` on SQLite so the write lock is taken up
    /// front (a deferred transaction that upgrades later can fail with SQLITE_BUSY mid-batch).
    /// Commits if `f` returns `Ok`, rolls back otherwise.
    pub fn write_transaction<T>(&mut self, f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        in_transaction(self, f)
    }
}

/// What the pipeline needs from a Diesel connection: SQL text with typed binds, JSON rows, and
/// write transactions. Implemented for [`PgConnection`], [`SqliteConnection`] and [`Db`], so
/// capture can run on the application's own connection.
pub trait SqlConn {
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// Execute one statement with typed binds; returns the affected row count.
    fn exec(&mut self, sql: &str, binds: Vec<SqlValue>) -> Result<usize>;
    /// Execute a statement this connection runs again and again with other values: on
    /// PostgreSQL parsed and planned once per connection ([`prepared`]); elsewhere as
    /// [`exec`](Self::exec). Returns the affected row count.
    fn exec_prepared(&mut self, statement: &prepared::Statement) -> Result<usize> {
        let (sql, binds) = statement.render(self.backend());
        self.exec(&sql, binds)
    }
    /// Execute several statements without binds (a script: DDL, function bodies).
    fn exec_script(&mut self, sql: &str) -> Result<()>;
    /// Rows of a query whose single column `j` is text (JSON documents built in SQL).
    fn load_text(&mut self, sql: &str, binds: Vec<SqlValue>) -> Result<Vec<String>>;
    /// Begin a write transaction (`BEGIN IMMEDIATE` on SQLite), or a savepoint when one is open.
    fn begin(&mut self) -> Result<()>;
    /// Commit the innermost transaction or savepoint.
    fn commit(&mut self) -> Result<()>;
    /// Roll back the innermost transaction or savepoint.
    fn rollback(&mut self) -> Result<()>;
    /// How many transactions and savepoints are open on it (Diesel's count: 0 outside one).
    fn transaction_depth(&mut self) -> Result<u32>;
    /// This connection as a trait object (for hooks).
    fn as_dyn(&mut self) -> &mut dyn SqlConn;
    /// Wait for this process's turn to write, if this is a SQLite file outside a transaction
    /// (see [`crate::turns`]); hold the result until the transaction ends.
    fn write_turn(&mut self) -> Result<Option<Turn>> {
        Ok(None)
    }
}

#[derive(diesel::QueryableByName)]
struct TextRow {
    #[diesel(sql_type = st::Text)]
    j: String,
}

macro_rules! sql_conn_impl {
    ($conn:ty, $backend:expr, $bind:ident, $begin:expr, { $($extra:item)* }) => {
        impl SqlConn for $conn {
            $($extra)*
            fn backend(&self) -> Backend {
                $backend
            }
            fn exec(&mut self, sql: &str, binds: Vec<SqlValue>) -> Result<usize> {
                $bind(diesel::sql_query(sql).into_boxed(), binds)
                    .execute(self)
                    .map_err(Error::from)
            }
            fn exec_script(&mut self, sql: &str) -> Result<()> {
                diesel::connection::SimpleConnection::batch_execute(self, sql).map_err(Error::from)
            }
            fn load_text(&mut self, sql: &str, binds: Vec<SqlValue>) -> Result<Vec<String>> {
                $bind(diesel::sql_query(sql).into_boxed(), binds)
                    .load::<TextRow>(self)
                    .map(|rows| rows.into_iter().map(|r| r.j).collect())
                    .map_err(Error::from)
            }
            fn begin(&mut self) -> Result<()> {
                let depth = AnsiTransactionManager::transaction_manager_status_mut(self)
                    .transaction_depth()
                    .map_err(|e| Error::from_diesel(e, "reading the transaction state"))?;
                match depth {
                    None => AnsiTransactionManager::begin_transaction_sql(self, $begin),
                    Some(_) => AnsiTransactionManager::begin_transaction(self),
                }
                .map_err(|e| Error::from_diesel(e, "beginning a transaction"))
            }
            fn commit(&mut self) -> Result<()> {
                AnsiTransactionManager::commit_transaction(self)
                    .map_err(|e| Error::from_diesel(e, "committing"))
            }
            fn rollback(&mut self) -> Result<()> {
                AnsiTransactionManager::rollback_transaction(self)
                    .map_err(|e| Error::from_diesel(e, "rolling back"))
            }
            fn transaction_depth(&mut self) -> Result<u32> {
                AnsiTransactionManager::transaction_manager_status_mut(self)
                    .transaction_depth()
                    .map(|d| d.map_or(0, |d| d.get()))
                    .map_err(|e| Error::from_diesel(e, "reading the transaction state"))
            }
            fn as_dyn(&mut self) -> &mut dyn SqlConn {
                self
            }
            fn write_turn(&mut self) -> Result<Option<Turn>> {
                if $backend != Backend::Sqlite {
                    return Ok(None);
                }
                let depth = AnsiTransactionManager::transaction_manager_status_mut(self)
                    .transaction_depth()
                    .map_err(|e| Error::from_diesel(e, "reading the transaction state"))?;
                if depth.is_some() {
                    return Ok(None);
                }
                let file = self.load_text(
                    "SELECT file AS j FROM pragma_database_list WHERE name = 'main'",
                    vec![],
                )?;
                // An in-memory database has no file and no other connections.
                Ok(file
                    .first()
                    .filter(|f| !f.is_empty())
                    .map(|f| crate::turns::take(f)))
            }
        }
    };
}

sql_conn_impl!(PgConnection, Backend::Postgres, bind_all_pg, "BEGIN", {
    fn exec_prepared(&mut self, statement: &prepared::Statement) -> Result<usize> {
        prepared::OnPg(statement).execute(self).map_err(Error::from)
    }
});
sql_conn_impl!(
    SqliteConnection,
    Backend::Sqlite,
    bind_all_sqlite,
    "BEGIN IMMEDIATE",
    {}
);

impl SqlConn for Db {
    fn backend(&self) -> Backend {
        Db::backend(self)
    }
    fn exec(&mut self, sql: &str, binds: Vec<SqlValue>) -> Result<usize> {
        self.execute(sql, binds)
    }
    fn exec_prepared(&mut self, statement: &prepared::Statement) -> Result<usize> {
        match self {
            Db::Pg(c) => c.exec_prepared(statement),
            Db::Sqlite(c) => c.exec_prepared(statement),
        }
    }
    fn exec_script(&mut self, sql: &str) -> Result<()> {
        self.batch_execute(sql)
    }
    fn load_text(&mut self, sql: &str, binds: Vec<SqlValue>) -> Result<Vec<String>> {
        match self {
            Db::Pg(c) => c.load_text(sql, binds),
            Db::Sqlite(c) => c.load_text(sql, binds),
        }
    }
    fn begin(&mut self) -> Result<()> {
        match self {
            Db::Pg(c) => c.begin(),
            Db::Sqlite(c) => c.begin(),
        }
    }
    fn commit(&mut self) -> Result<()> {
        match self {
            Db::Pg(c) => c.commit(),
            Db::Sqlite(c) => c.commit(),
        }
    }
    fn rollback(&mut self) -> Result<()> {
        match self {
            Db::Pg(c) => c.rollback(),
            Db::Sqlite(c) => c.rollback(),
        }
    }
    fn transaction_depth(&mut self) -> Result<u32> {
        match self {
            Db::Pg(c) => c.transaction_depth(),
            Db::Sqlite(c) => c.transaction_depth(),
        }
    }
    fn as_dyn(&mut self) -> &mut dyn SqlConn {
        self
    }
    fn write_turn(&mut self) -> Result<Option<Turn>> {
        match self {
            Db::Pg(_) => Ok(None),
            Db::Sqlite(c) => c.write_turn(),
        }
    }
}

/// Run `f` inside a write transaction (or a savepoint if one is open) on any [`SqlConn`]:
/// commit on `Ok`, roll back on `Err`.
pub fn in_transaction<C: SqlConn + ?Sized, T>(
    conn: &mut C,
    f: impl FnOnce(&mut C) -> Result<T>,
) -> Result<T> {
    let _turn = conn.write_turn()?;
    conn.begin()?;
    match f(conn) {
        Ok(v) => {
            conn.commit()?;
            Ok(v)
        }
        Err(e) => {
            // The original error matters more than a failed rollback on a broken connection.
            let _ = conn.rollback();
            Err(e)
        }
    }
}

fn bind_all_pg<'a>(
    mut q: BoxedSqlQuery<'a, Pg, SqlQuery>,
    binds: Vec<SqlValue>,
) -> BoxedSqlQuery<'a, Pg, SqlQuery> {
    for v in binds {
        q = match v {
            SqlValue::Null(ty) => bind_null_pg(q, ty),
            SqlValue::Bool(b) => q.bind::<st::Bool, _>(b),
            SqlValue::SmallInt(i) => q.bind::<st::SmallInt, _>(i),
            SqlValue::Integer(i) => q.bind::<st::Integer, _>(i),
            SqlValue::BigInt(i) => q.bind::<st::BigInt, _>(i),
            SqlValue::Float(f) => q.bind::<st::Float, _>(f),
            SqlValue::Double(f) => q.bind::<st::Double, _>(f),
            SqlValue::Text(s) => q.bind::<st::Text, _>(s),
            SqlValue::Numeric(d) => q.bind::<st::Numeric, _>(d),
            SqlValue::Date(d) => q.bind::<st::Date, _>(d),
            SqlValue::Timestamp(t) => q.bind::<st::Timestamp, _>(t),
            SqlValue::Timestamptz(t) => q.bind::<st::Timestamptz, _>(t),
            SqlValue::Uuid(u) => q.bind::<st::Uuid, _>(u),
            SqlValue::Json(j, ColumnType::Jsonb) => q.bind::<st::Jsonb, _>(j),
            SqlValue::Json(j, _) => q.bind::<st::Json, _>(j),
            SqlValue::Array(ty, items) => bind_array_pg(q, ty, items),
        };
    }
    q
}

/// One `type[]` parameter; NULL items stay NULL ([`SqlValue::array`] checked the types).
fn bind_array_pg(
    q: BoxedSqlQuery<'_, Pg, SqlQuery>,
    ty: ColumnType,
    items: Vec<SqlValue>,
) -> BoxedSqlQuery<'_, Pg, SqlQuery> {
    macro_rules! column {
        ($st:ty, $pat:pat => $out:expr) => {
            q.bind::<st::Array<Nullable<$st>>, _>(
                items
                    .into_iter()
                    .map(|v| match v {
                        $pat => Some($out),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            )
        };
    }
    match ty {
        ColumnType::Bool => column!(st::Bool, SqlValue::Bool(b) => b),
        ColumnType::SmallInt => column!(st::SmallInt, SqlValue::SmallInt(i) => i),
        ColumnType::Integer => column!(st::Integer, SqlValue::Integer(i) => i),
        ColumnType::BigInt => column!(st::BigInt, SqlValue::BigInt(i) => i),
        ColumnType::Float => column!(st::Float, SqlValue::Float(f) => f),
        ColumnType::Double => column!(st::Double, SqlValue::Double(f) => f),
        ColumnType::Text => column!(st::Text, SqlValue::Text(t) => t),
        ColumnType::Numeric => column!(st::Numeric, SqlValue::Numeric(d) => d),
        ColumnType::Date => column!(st::Date, SqlValue::Date(d) => d),
        ColumnType::Timestamp => column!(st::Timestamp, SqlValue::Timestamp(t) => t),
        ColumnType::Timestamptz => column!(st::Timestamptz, SqlValue::Timestamptz(t) => t),
        ColumnType::Uuid => column!(st::Uuid, SqlValue::Uuid(u) => u),
        ColumnType::Json => column!(st::Json, SqlValue::Json(j, _) => j),
        ColumnType::Jsonb => column!(st::Jsonb, SqlValue::Json(j, _) => j),
    }
}

fn bind_null_pg(
    q: BoxedSqlQuery<'_, Pg, SqlQuery>,
    ty: ColumnType,
) -> BoxedSqlQuery<'_, Pg, SqlQuery> {
    match ty {
        ColumnType::Bool => q.bind::<Nullable<st::Bool>, _>(None::<bool>),
        ColumnType::SmallInt => q.bind::<Nullable<st::SmallInt>, _>(None::<i16>),
        ColumnType::Integer => q.bind::<Nullable<st::Integer>, _>(None::<i32>),
        ColumnType::BigInt => q.bind::<Nullable<st::BigInt>, _>(None::<i64>),
        ColumnType::Float => q.bind::<Nullable<st::Float>, _>(None::<f32>),
        ColumnType::Double => q.bind::<Nullable<st::Double>, _>(None::<f64>),
        ColumnType::Text => q.bind::<Nullable<st::Text>, _>(None::<String>),
        ColumnType::Numeric => q.bind::<Nullable<st::Numeric>, _>(None::<bigdecimal::BigDecimal>),
        ColumnType::Date => q.bind::<Nullable<st::Date>, _>(None::<chrono::NaiveDate>),
        ColumnType::Timestamp => {
            q.bind::<Nullable<st::Timestamp>, _>(None::<chrono::NaiveDateTime>)
        }
        ColumnType::Timestamptz => {
            q.bind::<Nullable<st::Timestamptz>, _>(None::<chrono::DateTime<chrono::Utc>>)
        }
        ColumnType::Uuid => q.bind::<Nullable<st::Uuid>, _>(None::<uuid::Uuid>),
        ColumnType::Json => q.bind::<Nullable<st::Json>, _>(None::<serde_json::Value>),
        ColumnType::Jsonb => q.bind::<Nullable<st::Jsonb>, _>(None::<serde_json::Value>),
    }
}

fn bind_all_sqlite<'a>(
    mut q: BoxedSqlQuery<'a, Sqlite, SqlQuery>,
    binds: Vec<SqlValue>,
) -> BoxedSqlQuery<'a, Sqlite, SqlQuery> {
    for v in binds {
        q = match v {
            // SQLite's NULL carries no type; any nullable bind will do.
            SqlValue::Null(_) => q.bind::<Nullable<st::Text>, _>(None::<String>),
            SqlValue::Bool(b) => q.bind::<st::Bool, _>(b),
            SqlValue::SmallInt(i) => q.bind::<st::SmallInt, _>(i),
            SqlValue::Integer(i) => q.bind::<st::Integer, _>(i),
            SqlValue::BigInt(i) => q.bind::<st::BigInt, _>(i),
            SqlValue::Float(f) => q.bind::<st::Float, _>(f),
            SqlValue::Double(f) => q.bind::<st::Double, _>(f),
            SqlValue::Text(s) => q.bind::<st::Text, _>(s),
            // Exact text: Diesel's SQLite Numeric goes through f64 and would round.
            SqlValue::Numeric(d) => q.bind::<st::Text, _>(d.to_string()),
            SqlValue::Date(d) => q.bind::<st::Date, _>(d),
            SqlValue::Timestamp(t) => q.bind::<st::Timestamp, _>(t),
            SqlValue::Timestamptz(t) => q.bind::<st::TimestamptzSqlite, _>(t),
            SqlValue::Uuid(u) => q.bind::<st::Text, _>(u.hyphenated().to_string()),
            SqlValue::Json(j, _) => q.bind::<st::Text, _>(j.to_string()),
            array @ SqlValue::Array(..) => q.bind::<st::Text, _>(array.to_json().to_string()),
        };
    }
    q
}

/// Load rows of `(key text, revision, updated)`: the state the apply engine decides against.
pub(crate) fn load_states(
    db: &mut Db,
    sql: &str,
    binds: Vec<SqlValue>,
) -> Result<Vec<(String, i32, chrono::DateTime<chrono::Utc>)>> {
    #[derive(diesel::QueryableByName)]
    struct PgState {
        #[diesel(sql_type = st::Text)]
        k: String,
        #[diesel(sql_type = st::Integer)]
        r: i32,
        #[diesel(sql_type = st::Timestamptz)]
        u: chrono::DateTime<chrono::Utc>,
    }
    #[derive(diesel::QueryableByName)]
    struct SqliteState {
        #[diesel(sql_type = st::Text)]
        k: String,
        #[diesel(sql_type = st::Integer)]
        r: i32,
        #[diesel(sql_type = st::TimestamptzSqlite)]
        u: chrono::DateTime<chrono::Utc>,
    }
    // Not prepared: with a batch of hundreds of keys PostgreSQL's generic plan for these reads
    // halved a drain (BENCHMARKS.md, "Prepared batch statements").
    match db {
        Db::Pg(c) => bind_all_pg(diesel::sql_query(sql).into_boxed(), binds)
            .load::<PgState>(c)
            .map(|rows| rows.into_iter().map(|s| (s.k, s.r, s.u)).collect()),
        Db::Sqlite(c) => bind_all_sqlite(diesel::sql_query(sql).into_boxed(), binds)
            .load::<SqliteState>(c)
            .map(|rows| rows.into_iter().map(|s| (s.k, s.r, s.u)).collect()),
    }
    .map_err(|e| Error::from_diesel(e, "reading current revisions"))
}
