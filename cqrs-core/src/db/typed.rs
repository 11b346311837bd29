//! Rows read as PostgreSQL's binary values and decoded by column type, with no JSON built in SQL:
//! the dump's path. Rendering a row with `json_build_object` costs PostgreSQL about ten times the
//! index scan that finds it (measured on a 10,000-row page: 4 ms scan, 35 ms of JSON), and the
//! text then has to be parsed again here.

use diesel::connection::LoadConnection;
use diesel::pg::{Pg, PgConnection};
use diesel::row::Row;
use diesel::sql_types::{self as st, Nullable};

use super::bind_all_pg;
use super::prepared::{OnPg, Statement};
use crate::error::{Error, ErrorKind, Result};
use crate::value::{ColumnType, SqlValue};

/// The rows of `sql`, whose columns are `types` in order; NULL is [`SqlValue::Null`]. Select each
/// column as `CAST(col AS ty.name())` so that the model's declared type, not the table's (an `int4`
/// read as `BigInt`, a `varchar`), decides the decoding.
pub fn load_rows(
    conn: &mut PgConnection,
    sql: &str,
    binds: Vec<SqlValue>,
    types: &[ColumnType],
) -> Result<Vec<Vec<SqlValue>>> {
    let query = bind_all_pg(diesel::sql_query(sql).into_boxed(), binds);
    let cursor = LoadConnection::<diesel::connection::DefaultLoadingMode>::load(conn, query)
        .map_err(Error::from)?;
    decode_rows(cursor, types)
}

/// [`load_rows`] of a statement PostgreSQL parses and plans once per connection (see
/// [`prepared`](super::prepared)): for a query run again and again.
pub fn load_prepared(
    conn: &mut PgConnection,
    statement: &Statement,
    types: &[ColumnType],
) -> Result<Vec<Vec<SqlValue>>> {
    let cursor =
        LoadConnection::<diesel::connection::DefaultLoadingMode>::load(conn, OnPg(statement))
            .map_err(Error::from)?;
    decode_rows(cursor, types)
}

fn decode_rows<'a, R: Row<'a, Pg>>(
    cursor: impl Iterator<Item = diesel::QueryResult<R>>,
    types: &[ColumnType],
) -> Result<Vec<Vec<SqlValue>>> {
    let mut rows = Vec::new();
    for row in cursor {
        let row = row.map_err(Error::from)?;
        let mut values = Vec::with_capacity(types.len());
        for (i, ty) in types.iter().enumerate() {
            values.push(decode(&row, i, *ty).map_err(|e| {
                Error::new(
                    ErrorKind::Database,
                    format!("column {} read as {}: {e}", i + 1, ty.name()),
                )
            })?);
        }
        rows.push(values);
    }
    Ok(rows)
}

fn decode<'a>(
    row: &impl Row<'a, Pg>,
    i: usize,
    ty: ColumnType,
) -> diesel::deserialize::Result<SqlValue> {
    macro_rules! get {
        ($st:ty, $t:ty, $wrap:expr) => {
            row.get_value::<Nullable<$st>, Option<$t>, usize>(i)?
                .map_or(SqlValue::Null(ty), $wrap)
        };
    }
    Ok(match ty {
        ColumnType::Bool => get!(st::Bool, bool, SqlValue::Bool),
        ColumnType::SmallInt => get!(st::SmallInt, i16, SqlValue::SmallInt),
        ColumnType::Integer => get!(st::Integer, i32, SqlValue::Integer),
        ColumnType::BigInt => get!(st::BigInt, i64, SqlValue::BigInt),
        ColumnType::Float => get!(st::Float, f32, SqlValue::Float),
        ColumnType::Double => get!(st::Double, f64, SqlValue::Double),
        ColumnType::Text => get!(st::Text, String, SqlValue::Text),
        ColumnType::Numeric => get!(st::Numeric, bigdecimal::BigDecimal, SqlValue::Numeric),
        ColumnType::Date => get!(st::Date, chrono::NaiveDate, SqlValue::Date),
        ColumnType::Timestamp => get!(st::Timestamp, chrono::NaiveDateTime, SqlValue::Timestamp),
        ColumnType::Timestamptz => get!(
            st::Timestamptz,
            chrono::DateTime<chrono::Utc>,
            SqlValue::Timestamptz
        ),
        ColumnType::Uuid => get!(st::Uuid, uuid::Uuid, SqlValue::Uuid),
        ColumnType::Json => get!(st::Json, serde_json::Value, |v| SqlValue::Json(v, ty)),
        ColumnType::Jsonb => get!(st::Jsonb, serde_json::Value, |v| SqlValue::Json(v, ty)),
    })
}
