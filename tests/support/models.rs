//! The test models' replica specs, a master over `m_items` described by hand ([`PlainItem`]), and
//! the fixed instants messages are stamped with.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs::db::SqlConn;
use cqrs::value::ColumnType;
use cqrs::{ColumnSpec, TableSpec};

use crate::{Kind, sql_for};

/// The replica of the captured `Item` model (`cqrs_id` "item").
pub fn item_spec() -> TableSpec {
    TableSpec::new("item", "items")
        .key("id", ColumnType::BigInt)
        .column(ColumnSpec::new("name", ColumnType::Text))
        .column(ColumnSpec::new("value", ColumnType::BigInt))
        .column(ColumnSpec::new("updated", ColumnType::Timestamptz))
        .column(ColumnSpec::new("note", ColumnType::Text).optional())
        .build()
        .unwrap()
}

/// A 9-column model (`cqrs_id` "wide").
pub fn wide_spec() -> TableSpec {
    TableSpec::new("wide", "wide")
        .key("id", ColumnType::BigInt)
        .column(ColumnSpec::new("a", ColumnType::BigInt))
        .column(ColumnSpec::new("b", ColumnType::BigInt))
        .column(ColumnSpec::new("c", ColumnType::Text))
        .column(ColumnSpec::new("d", ColumnType::Text))
        .column(ColumnSpec::new("e", ColumnType::BigInt))
        .column(ColumnSpec::new("f", ColumnType::Text))
        .build()
        .unwrap()
}

/// The replica of the captured `Typed` model (`cqrs_id` "typed"); the FK `owner` lands in `owner_ref`.
pub fn typed_spec(kind: Kind) -> TableSpec {
    TableSpec::new("typed", "typed")
        .key("id", ColumnType::Uuid)
        .column(ColumnSpec::new("price", ColumnType::Numeric))
        .column(ColumnSpec::new("ratio", ColumnType::Double))
        .column(ColumnSpec::new("flag", ColumnType::Bool))
        .column(ColumnSpec::new("day", ColumnType::Date))
        .column(ColumnSpec::new("at", ColumnType::Timestamptz))
        .column(
            ColumnSpec::new("maybe_text", ColumnType::Text)
                .nullable()
                .optional(),
        )
        .column(
            ColumnSpec::new("maybe_int", ColumnType::Integer)
                .nullable()
                .optional(),
        )
        .column(
            ColumnSpec::new("owner_ref", ColumnType::BigInt)
                .wire("owner")
                .nullable()
                .optional(),
        )
        .column(ColumnSpec::new(
            "tags",
            if kind == Kind::Postgres {
                ColumnType::Jsonb
            } else {
                ColumnType::Json
            },
        ))
        .build()
        .unwrap()
}

/// A fixed base instant so tests are reproducible.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

/// `t0` plus `ms` milliseconds.
pub fn at(ms: i64) -> DateTime<Utc> {
    t0() + Duration::milliseconds(ms)
}

/// Insert `n` rows into `m_items` (`n<i>`, value `i`, updated `at(i)`) and capture each as created.
pub fn insert_m_items(tx: &mut cqrs::Tx<'_, cqrs::Db>, n: i64) -> cqrs::Result<()> {
    for i in 0..n {
        let sql = sql_for(
            tx.conn(),
            "INSERT INTO m_items (name, value, updated) VALUES ($1, $2, $3) RETURNING CAST(id AS TEXT) AS j",
        );
        let id: i64 = tx.conn().load_text(
            &sql,
            vec![
                cqrs::value::SqlValue::Text(format!("n{i}")),
                cqrs::value::SqlValue::BigInt(i),
                cqrs::value::SqlValue::Timestamptz(at(i)),
            ],
        )?[0]
            .parse()
            .unwrap();
        tx.created::<PlainItem>(&id)?;
    }
    Ok(())
}

/// The master spec of `m_items` as `item`: name, value, updated.
pub fn item_master_table() -> cqrs::TableSpec {
    cqrs::TableSpec::new("item", "m_items")
        .key("id", cqrs::value::ColumnType::BigInt)
        .column(cqrs::ColumnSpec::new("name", cqrs::value::ColumnType::Text))
        .column(cqrs::ColumnSpec::new(
            "value",
            cqrs::value::ColumnType::BigInt,
        ))
        .column(cqrs::ColumnSpec::new(
            "updated",
            cqrs::value::ColumnType::Timestamptz,
        ))
        .build()
        .unwrap()
}

/// A master over `m_items` described by hand (no derive), as `item`.
pub struct PlainItem;

impl cqrs::MasterModel for PlainItem {
    const CQRS_ID: &'static str = "item";
    fn master_spec() -> cqrs::MasterSpec {
        cqrs::MasterSpec::new(item_master_table())
    }
}
