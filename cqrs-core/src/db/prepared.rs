//! Statements PostgreSQL parses and plans once per connection: SQL pieces with values bound
//! between them, run through Diesel's statement cache (keyed by the text). `sql_query` opts out
//! of that cache, since its text could be anything, so every run of it is parsed and planned
//! again; for a statement capture runs on every commit that costs more than running it.
//!
//! Only for texts that do not grow with their input: the cache keeps each distinct text for the
//! connection's life.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{self as st, Array, Nullable};

use crate::db::Backend;
use crate::error::{Error, ErrorKind, Result};
use crate::value::{ColumnType, SqlValue};

/// A statement built from SQL pieces and bound values; each value becomes the next `$n`.
///
/// ```ignore
/// let mut s = Statement::default();
/// s.sql("UPDATE items SET cqrs_updated = ").bind(SqlValue::Timestamptz(now))?;
/// s.sql(" WHERE id = ANY(").bind(keys)?.sql(")");
/// conn.exec_prepared(&s)?;
/// ```
#[derive(Debug, Default)]
pub struct Statement {
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Sql(String),
    Bind(Bound),
}

/// A value as Diesel binds it (by reference, so it is kept here in its Rust type).
#[derive(Debug)]
enum Bound {
    BigInt(i64),
    Timestamptz(DateTime<Utc>),
    Text(String),
    SmallInts(Vec<Option<i16>>),
    Integers(Vec<Option<i32>>),
    BigInts(Vec<Option<i64>>),
    Texts(Vec<Option<String>>),
    Uuids(Vec<Option<uuid::Uuid>>),
    /// Kept as given, for backends that run [`Statement::render`].
    Other(SqlValue),
}

impl Statement {
    /// Append SQL text.
    pub fn sql(&mut self, sql: &str) -> &mut Self {
        match self.parts.last_mut() {
            Some(Part::Sql(s)) => s.push_str(sql),
            _ => self.parts.push(Part::Sql(sql.to_string())),
        }
        self
    }

    /// Append the next placeholder, bound to `value`. On PostgreSQL only the types capture binds
    /// are accepted (integers, text, timestamps with time zone, arrays of key types).
    pub fn bind(&mut self, value: SqlValue) -> Result<&mut Self> {
        let bound = match value {
            SqlValue::BigInt(i) => Bound::BigInt(i),
            SqlValue::Timestamptz(t) => Bound::Timestamptz(t),
            SqlValue::Text(s) => Bound::Text(s),
            SqlValue::Array(ty, items) => array(ty, items)?,
            other => Bound::Other(other),
        };
        self.parts.push(Part::Bind(bound));
        Ok(self)
    }

    /// A statement from PostgreSQL text whose placeholders are `$1`, `$2`, … each once and in
    /// that order, bound to `binds`: for a text built with [`Backend::placeholder`].
    ///
    /// ```ignore
    /// let s = Statement::numbered("SELECT id FROM t WHERE a = $1 AND b < $2", binds)?;
    /// ```
    pub fn numbered(sql: &str, binds: Vec<SqlValue>) -> Result<Statement> {
        let mut s = Statement::default();
        let mut rest = sql;
        for (i, value) in binds.into_iter().enumerate() {
            let placeholder = format!("${}", i + 1);
            let at = rest
                .match_indices(&placeholder)
                .map(|(at, _)| at)
                .find(|&at| {
                    !rest[at + placeholder.len()..].starts_with(|c: char| c.is_ascii_digit())
                })
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Database,
                        format!("statement has no {placeholder} after the ones before it: {sql}"),
                    )
                })?;
            if rest[..at].contains('$') {
                return Err(Error::new(
                    ErrorKind::Database,
                    format!(
                        "statement's placeholders are not in order before {placeholder}: {sql}"
                    ),
                ));
            }
            s.sql(&rest[..at]).bind(value)?;
            rest = &rest[at + placeholder.len()..];
        }
        if rest.contains('$') {
            return Err(Error::new(
                ErrorKind::Database,
                format!("statement has more placeholders than values: {sql}"),
            ));
        }
        s.sql(rest);
        Ok(s)
    }

    /// The text with `backend`'s placeholders, and the values in order: for running it as any
    /// other statement.
    pub fn render(&self, backend: Backend) -> (String, Vec<SqlValue>) {
        let mut sql = String::new();
        let mut binds = Vec::new();
        for part in &self.parts {
            match part {
                Part::Sql(s) => sql.push_str(s),
                Part::Bind(b) => {
                    binds.push(b.to_value());
                    backend.placeholder(binds.len(), &mut sql);
                }
            }
        }
        (sql, binds)
    }
}

fn array(ty: ColumnType, items: Vec<SqlValue>) -> Result<Bound> {
    macro_rules! items {
        ($variant:ident, $pat:pat => $out:expr) => {
            Bound::$variant(
                items
                    .into_iter()
                    .map(|v| match v {
                        $pat => Ok(Some($out)),
                        SqlValue::Null(_) => Ok(None),
                        other => Err(Error::new(
                            ErrorKind::Database,
                            format!(
                                "a {} value in a {} array",
                                other.column_type().name(),
                                ty.name()
                            ),
                        )),
                    })
                    .collect::<Result<_>>()?,
            )
        };
    }
    Ok(match ty {
        ColumnType::SmallInt => items!(SmallInts, SqlValue::SmallInt(i) => i),
        ColumnType::Integer => items!(Integers, SqlValue::Integer(i) => i),
        ColumnType::BigInt => items!(BigInts, SqlValue::BigInt(i) => i),
        ColumnType::Text => items!(Texts, SqlValue::Text(s) => s),
        ColumnType::Uuid => items!(Uuids, SqlValue::Uuid(u) => u),
        _ => Bound::Other(SqlValue::Array(ty, items)),
    })
}

impl Bound {
    fn to_value(&self) -> SqlValue {
        fn arr<T: Clone>(
            ty: ColumnType,
            items: &[Option<T>],
            wrap: impl Fn(T) -> SqlValue,
        ) -> SqlValue {
            SqlValue::Array(
                ty,
                items
                    .iter()
                    .map(|v| v.clone().map_or(SqlValue::Null(ty), &wrap))
                    .collect(),
            )
        }
        match self {
            Bound::BigInt(i) => SqlValue::BigInt(*i),
            Bound::Timestamptz(t) => SqlValue::Timestamptz(*t),
            Bound::Text(s) => SqlValue::Text(s.clone()),
            Bound::SmallInts(v) => arr(ColumnType::SmallInt, v, SqlValue::SmallInt),
            Bound::Integers(v) => arr(ColumnType::Integer, v, SqlValue::Integer),
            Bound::BigInts(v) => arr(ColumnType::BigInt, v, SqlValue::BigInt),
            Bound::Texts(v) => arr(ColumnType::Text, v, SqlValue::Text),
            Bound::Uuids(v) => arr(ColumnType::Uuid, v, SqlValue::Uuid),
            Bound::Other(v) => v.clone(),
        }
    }
}

/// The statement as Diesel runs it on PostgreSQL: cacheable, since its text is fixed.
pub(crate) struct OnPg<'a>(pub(crate) &'a Statement);

impl QueryFragment<Pg> for OnPg<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        for part in &self.0.parts {
            match part {
                Part::Sql(s) => out.push_sql(s),
                Part::Bind(Bound::BigInt(i)) => out.push_bind_param::<st::BigInt, _>(i)?,
                Part::Bind(Bound::Timestamptz(t)) => {
                    out.push_bind_param::<st::Timestamptz, _>(t)?
                }
                Part::Bind(Bound::Text(s)) => out.push_bind_param::<st::Text, _>(s)?,
                Part::Bind(Bound::SmallInts(v)) => {
                    out.push_bind_param::<Array<Nullable<st::SmallInt>>, _>(v)?
                }
                Part::Bind(Bound::Integers(v)) => {
                    out.push_bind_param::<Array<Nullable<st::Integer>>, _>(v)?
                }
                Part::Bind(Bound::BigInts(v)) => {
                    out.push_bind_param::<Array<Nullable<st::BigInt>>, _>(v)?
                }
                Part::Bind(Bound::Texts(v)) => {
                    out.push_bind_param::<Array<Nullable<st::Text>>, _>(v)?
                }
                Part::Bind(Bound::Uuids(v)) => {
                    out.push_bind_param::<Array<Nullable<st::Uuid>>, _>(v)?
                }
                Part::Bind(Bound::Other(v)) => {
                    return Err(diesel::result::Error::SerializationError(
                        format!(
                            "a {} value cannot be bound in a prepared statement",
                            v.column_type().name()
                        )
                        .into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl QueryId for OnPg<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::RunQueryDsl<diesel::pg::PgConnection> for OnPg<'_> {}

/// Rows of it are read by column index ([`crate::db::typed::load_prepared`]).
impl diesel::query_builder::Query for OnPg<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `numbered` splits at `$1`, `$2`, … and renders back to the same text and values.
    #[test]
    fn numbered_statements_render_back_to_their_text() {
        let binds: Vec<SqlValue> = (1..=11).map(SqlValue::BigInt).collect();
        let sql: String = (1..=11)
            .map(|i| format!("a{i} = ${i} AND "))
            .collect::<String>()
            + "true";
        let s = Statement::numbered(&sql, binds.clone()).unwrap();
        assert_eq!(s.render(Backend::Postgres), (sql, binds));
    }

    /// Texts whose placeholders are not `$1`, `$2`, … once each in order are refused.
    #[test]
    fn numbered_statements_refuse_other_placeholders() {
        let two = || vec![SqlValue::BigInt(1), SqlValue::BigInt(2)];
        for sql in [
            "a = $2 AND b = $1",
            "a = $1",
            "a = $1 AND b = $2 AND c = $3",
            "a = $1 AND b = $1 AND c = $2",
            "a = $10 AND b = $2",
        ] {
            assert!(Statement::numbered(sql, two()).is_err(), "{sql}");
        }
    }
}
