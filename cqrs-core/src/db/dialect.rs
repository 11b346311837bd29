//! The SQL dialect of each backend: every fragment of SQL text that differs between PostgreSQL
//! and SQLite is here, behind exhaustive matches on [`Backend`], so the pipeline writes one
//! statement shape and a new backend is one more arm in each method (the compiler lists them).
//!
//! What differs: placeholders and bind limits, membership tests (`= ANY` of an array vs `IN`
//! lists), multi-row inserts (`unnest` of column arrays vs `VALUES`), JSON row rendering, row
//! locks and `SKIP LOCKED`, boolean literals and the text lookups of filters. Statements that
//! need the connection itself (advisory locks) are methods of [`Db`](super::Db).

use crate::error::{Error, ErrorKind, Result};
use crate::value::{ColumnType, SqlValue};

/// Which database a URL or connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (`postgres://`, `postgresql://`).
    Postgres,
    /// SQLite (`sqlite://relative.db`, `sqlite:///abs.db`, `sqlite://:memory:`).
    Sqlite,
}

impl Backend {
    /// Most bind parameters one statement may carry (PostgreSQL 65,535; SQLite 32,766).
    pub fn bind_limit(self) -> usize {
        match self {
            Backend::Postgres => 65_535,
            Backend::Sqlite => 32_766,
        }
    }

    /// The placeholder for the `n`th bind (1-based).
    pub fn placeholder(self, n: usize, out: &mut String) {
        use std::fmt::Write;
        match self {
            Backend::Postgres => write!(out, "${n}").expect("writing to a String"),
            Backend::Sqlite => out.push('?'),
        }
    }

    /// Append a membership test of `values` (all of type `ty`) for the column before it, numbered
    /// on from `*next`, and return its binds: ` = ANY(ARRAY(SELECT unnest($n)))` with one array
    /// parameter on PostgreSQL (parsing and binding thousands of placeholders cost more than the
    /// query), ` IN (?, ?, ...)` on SQLite (chunk `values` under [`Backend::bind_limit`] there).
    ///
    /// PostgreSQL plans a bare `= ANY($n)` with the array's values in view: on a table without
    /// statistics (a replica being bulk-loaded) it picks a sequential scan for 5,000 keys, 73 ms
    /// against 5 ms by the index on a million rows. Behind `ARRAY(SELECT ..)` it estimates a few
    /// keys and looks each one up.
    ///
    /// ```
    /// use cqrs::db::Backend;
    /// use cqrs::value::{ColumnType, SqlValue};
    /// let ids = [SqlValue::BigInt(1), SqlValue::BigInt(2)];
    /// let mut sql = String::from("DELETE FROM t WHERE id");
    /// let binds = Backend::Postgres.member_of(&mut sql, &mut 0, ColumnType::BigInt, &ids).unwrap();
    /// assert_eq!(sql, "DELETE FROM t WHERE id = ANY(ARRAY(SELECT unnest($1)))");
    /// assert_eq!(binds.len(), 1);
    /// let mut sql = String::from("DELETE FROM t WHERE id");
    /// let binds = Backend::Sqlite.member_of(&mut sql, &mut 0, ColumnType::BigInt, &ids).unwrap();
    /// assert_eq!((sql.as_str(), binds.len()), ("DELETE FROM t WHERE id IN (?,?)", 2));
    /// ```
    pub fn member_of(
        self,
        out: &mut String,
        next: &mut usize,
        ty: ColumnType,
        values: &[SqlValue],
    ) -> Result<Vec<SqlValue>> {
        match self {
            Backend::Postgres => {
                *next += 1;
                out.push_str(" = ANY(ARRAY(SELECT unnest(");
                self.placeholder(*next, out);
                out.push_str(")))");
                let array = SqlValue::array(ty, values.to_vec())
                    .map_err(|e| Error::new(ErrorKind::Apply, e))?;
                Ok(vec![array])
            }
            Backend::Sqlite => {
                out.push_str(" IN ");
                self.placeholder_list(out, next, values.len());
                Ok(values.to_vec())
            }
        }
    }

    /// Append `(p1, p2, ...)`: `count` placeholders numbered on from `*next`, which advances.
    pub fn placeholder_list(self, out: &mut String, next: &mut usize, count: usize) {
        out.push('(');
        for i in 0..count {
            if i > 0 {
                out.push(',');
            }
            *next += 1;
            self.placeholder(*next, out);
        }
        out.push(')');
    }

    /// `value` as a SQL boolean literal (SQLite has none: 1 and 0).
    pub fn boolean(self, value: bool) -> &'static str {
        match (self, value) {
            (Backend::Postgres, true) => "TRUE",
            (Backend::Postgres, false) => "FALSE",
            (Backend::Sqlite, true) => "1",
            (Backend::Sqlite, false) => "0",
        }
    }

    /// The expression that puts column `col` of type `ty` into a JSON document with no loss:
    /// exact decimals as text (read back through the column type), SQLite's JSON text as JSON.
    pub fn json_value(self, col: &str, ty: ColumnType) -> String {
        match (self, ty) {
            (Backend::Postgres | Backend::Sqlite, ColumnType::Numeric) => {
                format!("CAST({col} AS TEXT)")
            }
            (Backend::Sqlite, ColumnType::Json | ColumnType::Jsonb) => format!("json({col})"),
            // A float's text depends on the session's extra_float_digits (with 0, fifteen
            // digits, which lose the last bits): 17 significant digits in exponent form always
            // read back as the same float, whatever the session says. The non-finite ones as
            // their names.
            (Backend::Postgres, ColumnType::Float | ColumnType::Double) => format!(
                "CASE WHEN {col} IN ('NaN', 'Infinity', '-Infinity') THEN CAST({col} AS TEXT) \
                 ELSE to_char(CAST({col} AS DOUBLE PRECISION), '9.9999999999999999EEEE') END"
            ),
            (Backend::Postgres | Backend::Sqlite, _) => col.to_string(),
        }
    }

    /// A JSON object of `pairs` (`'name', expression`), read back as text aliased `j`.
    ///
    /// ```
    /// use cqrs::db::Backend;
    /// let pairs = ["'id', \"id\"".to_string()];
    /// assert_eq!(Backend::Sqlite.json_object(&pairs), "json_object('id', \"id\") AS j");
    /// ```
    pub fn json_object(self, pairs: &[String]) -> String {
        match self {
            // A function takes at most 100 arguments: a wider row is built in parts of 50 pairs
            // joined as jsonb. Key order does not matter; jsonb writes some values differently
            // (a float as a plain number, a json column normalised) but they read back through
            // the column types the same, except that -0.0 becomes 0.
            Backend::Postgres if pairs.len() > PG_MAX_PAIRS => {
                format!("CAST(({}) AS TEXT) AS j", jsonb_object(pairs))
            }
            Backend::Postgres => {
                format!("CAST(json_build_object({}) AS TEXT) AS j", pairs.join(", "))
            }
            Backend::Sqlite => format!("json_object({}) AS j", pairs.join(", ")),
        }
    }

    /// The statements that leave mark `$1` in the innermost open savepoint, undone if it rolls
    /// back (the mark is bound to the last one): a transaction-local setting on PostgreSQL, a row
    /// of a temporary table on SQLite (whose DDL is transactional too).
    pub(crate) fn set_mark(self) -> &'static [&'static str] {
        match self {
            // One setting whatever the mark (a setting per mark would stay in the session).
            Backend::Postgres => &["SELECT set_config('cqrs.capture_mark', $1, true)"],
            Backend::Sqlite => &[
                "CREATE TEMP TABLE IF NOT EXISTS cqrs_capture_marks (mark TEXT PRIMARY KEY)",
                "INSERT OR IGNORE INTO temp.cqrs_capture_marks (mark) VALUES (?)",
            ],
        }
    }

    /// The query that reads `on` (aliased `j`) while mark `$1` holds: on PostgreSQL while it is
    /// the latest mark left (an older one holds if a newer one does). On SQLite it fails once a
    /// rollback took the temporary table with it, which also means the mark is gone.
    pub(crate) fn probe_mark(self) -> &'static str {
        match self {
            Backend::Postgres => {
                "SELECT CASE WHEN current_setting('cqrs.capture_mark', true) = $1 THEN 'on' ELSE '' END AS j"
            }
            Backend::Sqlite => "SELECT 'on' AS j FROM temp.cqrs_capture_marks WHERE mark = ?",
        }
    }

    /// What follows a `SELECT` to lock the rows it reads until the transaction ends. SQLite has no
    /// row locks: its write transaction (`BEGIN IMMEDIATE`) already excludes other writers.
    pub fn for_update(self) -> &'static str {
        match self {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// [`Backend::for_update`] for rows that will be updated with their key unchanged: a
    /// weaker lock, which other sessions inserting rows that reference them do not wait for.
    pub fn for_no_key_update(self) -> &'static str {
        match self {
            Backend::Postgres => " FOR NO KEY UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// What follows a `SELECT` so concurrent claimers take different rows instead of waiting
    /// (`SKIP LOCKED`); SQLite has one writer at a time, so nothing.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }

    /// Seconds from the timestamp `col` to now, as a number.
    pub fn age_seconds(self, col: &str) -> String {
        match self {
            Backend::Postgres => format!("EXTRACT(EPOCH FROM (clock_timestamp() - {col}))"),
            Backend::Sqlite => format!("((julianday('now') - julianday({col})) * 86400.0)"),
        }
    }

    /// `col` is one of the keys the subquery `select` returns. PostgreSQL plans `IN (SELECT ..)`
    /// under an `UPDATE` as a hash join over the whole table (a claim would cost as much as the
    /// backlog is long); `= ANY(ARRAY(..))` evaluates the subquery once and looks each key up.
    pub fn in_subquery(self, col: &str, select: &str) -> String {
        match self {
            Backend::Postgres => format!("{col} = ANY(ARRAY({select}))"),
            Backend::Sqlite => format!("{col} IN ({select})"),
        }
    }

    /// A condition that `col` (a text column or expression) contains, starts with or ends with
    /// `value`, case-insensitively if asked, with `value` bound through `bind` (which returns its
    /// placeholder). PostgreSQL: `LIKE`/`ILIKE` with `\`, `%` and `_` escaped. SQLite, whose LIKE
    /// ignores ASCII case: `instr`/`substr`, on `LOWER` of both sides when insensitive.
    ///
    /// ```
    /// use cqrs::db::{Backend, dialect::TextMatch};
    /// let mut binds = Vec::new();
    /// let mut bind = |v| { binds.push(v); format!("${}", binds.len()) };
    /// let sql = Backend::Postgres.text_match("\"name\"", TextMatch::StartsWith, true, "a_", &mut bind);
    /// assert_eq!(sql, r#""name" ILIKE $1 ESCAPE '\'"#);
    /// ```
    pub fn text_match(
        self,
        col: &str,
        how: TextMatch,
        insensitive: bool,
        value: &str,
        bind: &mut dyn FnMut(SqlValue) -> String,
    ) -> String {
        match self {
            Backend::Postgres => {
                let pattern = match how {
                    TextMatch::Contains => format!("%{}%", like_escape(value)),
                    TextMatch::StartsWith => format!("{}%", like_escape(value)),
                    TextMatch::EndsWith => format!("%{}", like_escape(value)),
                };
                let op = if insensitive { "ILIKE" } else { "LIKE" };
                format!("{col} {op} {} ESCAPE '\\'", bind(SqlValue::Text(pattern)))
            }
            Backend::Sqlite => {
                let (col, value) = if insensitive {
                    (format!("LOWER({col})"), value.to_lowercase())
                } else {
                    (col.to_string(), value.to_string())
                };
                if value.is_empty() {
                    return self.boolean(true).to_string();
                }
                let n = value.chars().count() as i64;
                match how {
                    TextMatch::Contains => {
                        format!("instr({col}, {}) > 0", bind(SqlValue::Text(value)))
                    }
                    TextMatch::StartsWith => format!(
                        "substr({col}, 1, {}) = {}",
                        bind(SqlValue::BigInt(n)),
                        bind(SqlValue::Text(value))
                    ),
                    TextMatch::EndsWith => format!(
                        "substr({col}, -{}) = {}",
                        bind(SqlValue::BigInt(n)),
                        bind(SqlValue::Text(value))
                    ),
                }
            }
        }
    }

    /// The statements that insert `rows` rows of `types.len()` columns, `cell(row, column)`
    /// giving each value, as `{head} <rows> {tail}` (e.g. head `INSERT INTO t (a, b)`, tail
    /// `ON CONFLICT ..`); each with its binds and how many rows it carries. Values are taken
    /// straight into the binds: no row is materialised on the way.
    ///
    /// PostgreSQL: one statement whatever the number of rows, each column one array parameter
    /// unnested (`SELECT * FROM unnest($1, $2)`): parsing and binding a placeholder per value
    /// cost more than the write. SQLite: multi-row `VALUES` chunked under [`Backend::bind_limit`].
    ///
    /// ```
    /// use cqrs::db::Backend;
    /// use cqrs::value::{ColumnType, SqlValue};
    /// let cell = |r: usize, _c: usize| SqlValue::BigInt(r as i64 + 1);
    /// let pg = Backend::Postgres.insert_rows("INSERT INTO t (id)", "", &[ColumnType::BigInt], 2, cell).unwrap();
    /// assert_eq!((pg[0].0.as_str(), pg[0].1.len(), pg[0].2), ("INSERT INTO t (id) SELECT * FROM unnest($1)", 1, 2));
    /// let lite = Backend::Sqlite.insert_rows("INSERT INTO t (id)", "", &[ColumnType::BigInt], 2, cell).unwrap();
    /// assert_eq!((lite[0].0.as_str(), lite[0].1.len()), ("INSERT INTO t (id) VALUES (?),(?)", 2));
    /// ```
    pub fn insert_rows(
        self,
        head: &str,
        tail: &str,
        types: &[ColumnType],
        rows: usize,
        mut cell: impl FnMut(usize, usize) -> SqlValue,
    ) -> Result<Vec<(String, Vec<SqlValue>, usize)>> {
        if rows == 0 {
            return Ok(Vec::new());
        }
        match self {
            Backend::Postgres => {
                let mut sql = format!("{head} SELECT * FROM unnest(");
                for k in 0..types.len() {
                    if k > 0 {
                        sql.push_str(", ");
                    }
                    self.placeholder(k + 1, &mut sql);
                }
                sql.push(')');
                sql.push_str(tail);
                let binds = types
                    .iter()
                    .enumerate()
                    .map(|(c, ty)| {
                        let column = (0..rows).map(|r| cell(r, c)).collect();
                        SqlValue::array(*ty, column).map_err(|e| Error::new(ErrorKind::Apply, e))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(vec![(sql, binds, rows)])
            }
            Backend::Sqlite => {
                let width = types.len().max(1);
                let per_statement = (self.bind_limit() / width).max(1);
                let mut statements = Vec::new();
                for start in (0..rows).step_by(per_statement) {
                    let end = (start + per_statement).min(rows);
                    let mut sql = format!("{head} VALUES ");
                    let mut binds = Vec::with_capacity((end - start) * width);
                    let mut n = 0;
                    for r in start..end {
                        if r > start {
                            sql.push(',');
                        }
                        self.placeholder_list(&mut sql, &mut n, width);
                        binds.extend((0..types.len()).map(|c| cell(r, c)));
                    }
                    sql.push_str(tail);
                    statements.push((sql, binds, end - start));
                }
                Ok(statements)
            }
        }
    }
}

/// Most `'name', value` pairs one PostgreSQL `json_build_object` call takes (100 arguments).
const PG_MAX_PAIRS: usize = 50;

/// A PostgreSQL `jsonb` object of `pairs` (`'name', expression`), built in calls of at most
/// [`PG_MAX_PAIRS`] pairs joined with `||` (a function takes at most 100 arguments).
pub(crate) fn jsonb_object(pairs: &[String]) -> String {
    if pairs.is_empty() {
        return "'{}'::jsonb".to_string();
    }
    pairs
        .chunks(PG_MAX_PAIRS)
        .map(|c| format!("jsonb_build_object({})", c.join(", ")))
        .collect::<Vec<_>>()
        .join(" || ")
}

/// How [`Backend::text_match`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextMatch {
    /// Anywhere in the text (`contains`).
    Contains,
    /// At the start (`startswith`).
    StartsWith,
    /// At the end (`endswith`).
    EndsWith,
}

/// `\`, `%` and `_` escaped for `LIKE .. ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
