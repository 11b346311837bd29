//! An example master service: two Diesel models published with `#[derive(cqrs::Master)]`, the
//! SQL of its tables, and a small workload written the way an application writes it (Diesel
//! statements inside `cqrs::atomic`). Its own `cqrs` binary is `example-master`.

// Model fields are the table's columns; documenting each would repeat the schema.
#![allow(missing_docs)]

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;

/// The Diesel schema (PostgreSQL).
pub mod schema {
    diesel::table! {
        items (id) {
            id -> BigInt,
            name -> Text,
            value -> BigInt,
            updated -> Timestamptz,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }

    diesel::table! {
        typed (id) {
            id -> Uuid,
            price -> Numeric,
            day -> Date,
            note -> Nullable<Text>,
            owner_id -> Nullable<BigInt>,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }

    diesel::joinable!(typed -> items (owner_id));
    diesel::allow_tables_to_appear_in_same_query!(items, typed);
}

use schema::{items, typed};

/// The tables, as the service's own migration would create them.
pub const SCHEMA_SQL: &str = "
CREATE TABLE items (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    value BIGINT NOT NULL,
    updated TIMESTAMPTZ NOT NULL DEFAULT now(),
    cqrs_revision INTEGER NOT NULL DEFAULT 0,
    cqrs_updated TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE typed (
    id UUID PRIMARY KEY,
    price NUMERIC(12, 2) NOT NULL,
    day DATE NOT NULL,
    note TEXT,
    owner_id BIGINT REFERENCES items (id) ON DELETE SET NULL,
    cqrs_revision INTEGER NOT NULL DEFAULT 0,
    cqrs_updated TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);";

/// Shaped like django-cqrs's captured `Item` (`cqrs_id` "item").
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, cqrs::Master)]
#[diesel(table_name = items, check_for_backend(diesel::pg::Pg))]
#[cqrs(id = "item")]
pub struct Item {
    pub id: i64,
    pub name: String,
    #[cqrs(track)]
    pub value: i64,
    pub updated: DateTime<Utc>,
    pub cqrs_revision: i32,
    pub cqrs_updated: DateTime<Utc>,
}

/// A new item.
#[derive(Debug, Insertable)]
#[diesel(table_name = items)]
pub struct NewItem<'a> {
    pub name: &'a str,
    pub value: i64,
}

/// UUID key, decimal, date, a nullable field and a foreign key sent as `owner` (`cqrs_id` "typed").
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, cqrs::Master)]
#[diesel(table_name = typed, check_for_backend(diesel::pg::Pg))]
#[cqrs(id = "typed")]
pub struct Typed {
    pub id: uuid::Uuid,
    #[cqrs(track)]
    pub price: BigDecimal,
    pub day: NaiveDate,
    pub note: Option<String>,
    #[cqrs(rename = "owner", track)]
    pub owner_id: Option<i64>,
    pub cqrs_revision: i32,
    pub cqrs_updated: DateTime<Utc>,
}

/// The models this service publishes.
pub fn registry() -> cqrs::Registry {
    cqrs::Registry::new().master::<Item>().master::<Typed>()
}

/// Create an item and a typed row that references it, in one captured transaction.
pub fn create_pair(
    conn: &mut PgConnection,
    name: &str,
    value: i64,
    price: &str,
) -> cqrs::Result<(i64, uuid::Uuid)> {
    cqrs::atomic(conn, |tx| {
        let item: Item = tx
            .insert_into(items::table)
            .values(&NewItem { name, value })
            .get_result()?;
        let typed_id = tx
            .insert_into(typed::table)
            .values((
                typed::id.eq(uuid::Uuid::new_v4()),
                typed::price.eq(price.parse::<BigDecimal>().expect("a decimal")),
                typed::day.eq(NaiveDate::from_ymd_opt(2024, 2, 29).expect("a date")),
                typed::note.eq(None::<String>),
                typed::owner_id.eq(Some(item.id)),
            ))
            .returning(typed::id)
            .get_result()?;
        Ok((item.id, typed_id))
    })
}

/// Change an item's value (revision +1, `previous_data` carries the old value).
pub fn set_value(conn: &mut PgConnection, id: i64, value: i64) -> cqrs::Result<usize> {
    cqrs::atomic(conn, |tx| {
        tx.update(items::table.find(id))
            .set(items::value.eq(value))
            .execute()
    })
}

/// Raise every item below `floor` to it, in one captured bulk update (each row: revision +1).
pub fn raise_to(conn: &mut PgConnection, floor: i64) -> cqrs::Result<usize> {
    cqrs::atomic(conn, |tx| {
        tx.update(items::table.filter(items::value.lt(floor)))
            .set(items::value.eq(floor))
            .execute()
    })
}

/// Delete a typed row (its DELETE carries the UUID as a string, unlike django-cqrs 3.1.0).
pub fn delete_typed(conn: &mut PgConnection, id: uuid::Uuid) -> cqrs::Result<bool> {
    cqrs::atomic(conn, |tx| {
        Ok(tx.delete(typed::table.find(id)).execute()? == 1)
    })
}

/// Every item, by id (for comparisons).
pub fn all_items(conn: &mut PgConnection) -> QueryResult<Vec<Item>> {
    items::table
        .order(items::id)
        .select(Item::as_select())
        .load(conn)
}

/// Every typed row, by id.
pub fn all_typed(conn: &mut PgConnection) -> QueryResult<Vec<Typed>> {
    typed::table
        .order(typed::id)
        .select(Typed::as_select())
        .load(conn)
}
