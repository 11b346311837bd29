//! An example replica service: the master's two models replicated with `#[derive(cqrs::Replica)]`,
//! with a renamed column (CQRS_MAPPING) and the Django FK `owner` landing in `owner_ref`. Its own
//! `cqrs` binary is `example-replica`.

// Model fields are the table's columns; documenting each would repeat the schema.
#![allow(missing_docs)]

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;

/// The Diesel schema (PostgreSQL).
pub mod schema {
    diesel::table! {
        replica_items (id) {
            id -> BigInt,
            title -> Text,
            value -> BigInt,
            updated -> Timestamptz,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }

    diesel::table! {
        replica_typed (id) {
            id -> Uuid,
            price -> Numeric,
            day -> Date,
            note -> Nullable<Text>,
            owner_ref -> Nullable<BigInt>,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }
}

use schema::{replica_items, replica_typed};

/// The tables, as the service's own migration would create them.
pub const SCHEMA_SQL: &str = "
CREATE TABLE replica_items (
    id BIGINT PRIMARY KEY,
    title TEXT NOT NULL,
    value BIGINT NOT NULL,
    updated TIMESTAMPTZ NOT NULL,
    cqrs_revision INTEGER NOT NULL,
    cqrs_updated TIMESTAMPTZ NOT NULL
);
CREATE TABLE replica_typed (
    id UUID PRIMARY KEY,
    price NUMERIC(12, 2) NOT NULL,
    day DATE NOT NULL,
    note TEXT,
    owner_ref BIGINT,
    cqrs_revision INTEGER NOT NULL,
    cqrs_updated TIMESTAMPTZ NOT NULL
);";

/// Replica of `item`; the wire's `name` is the column `title`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, cqrs::Replica)]
#[diesel(table_name = replica_items, check_for_backend(diesel::pg::Pg))]
#[cqrs(id = "item")]
pub struct ReplicaItem {
    pub id: i64,
    #[cqrs(rename = "name")]
    pub title: String,
    pub value: i64,
    pub updated: DateTime<Utc>,
    pub cqrs_revision: i32,
    pub cqrs_updated: DateTime<Utc>,
}

/// Replica of `typed`; the wire's `owner` is the column `owner_ref`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, cqrs::Replica)]
#[diesel(table_name = replica_typed, check_for_backend(diesel::pg::Pg))]
#[cqrs(id = "typed")]
pub struct ReplicaTyped {
    pub id: uuid::Uuid,
    pub price: BigDecimal,
    pub day: NaiveDate,
    pub note: Option<String>,
    #[cqrs(rename = "owner")]
    pub owner_ref: Option<i64>,
    pub cqrs_revision: i32,
    pub cqrs_updated: DateTime<Utc>,
}

/// The models this service replicates.
pub fn registry() -> cqrs::Registry {
    cqrs::Registry::new()
        .replica::<ReplicaItem>()
        .replica::<ReplicaTyped>()
}

/// Every replicated item, by id.
pub fn all_items(conn: &mut PgConnection) -> QueryResult<Vec<ReplicaItem>> {
    replica_items::table
        .order(replica_items::id)
        .select(ReplicaItem::as_select())
        .load(conn)
}

/// Every replicated typed row, by id.
pub fn all_typed(conn: &mut PgConnection) -> QueryResult<Vec<ReplicaTyped>> {
    replica_typed::table
        .order(replica_typed::id)
        .select(ReplicaTyped::as_select())
        .load(conn)
}
