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
