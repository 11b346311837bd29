//! The models the django-cqrs interoperability tests (tests/django) replicate, in Rust: the same
//! tables as the Django project in tests/django/project (`items`, `labels`), published with
//! `#[derive(cqrs::Master)]` and kept with `#[derive(cqrs::Replica)]`, and a reader that puts a
//! database's rows side by side with another's.

// Model fields are the table's columns; documenting each would repeat the schema.
#![allow(missing_docs)]

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, Utc};
use cqrs::db::{Db, SqlConn};
use diesel::prelude::*;

/// The Diesel schema: what Django's `migrate` creates for both roles (the replica's `parent` is
/// a plain integer column `parent_id`).
pub mod schema {
    diesel::table! {
        labels (id) {
            id -> Uuid,
            name -> Text,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }

    diesel::table! {
        items (id) {
            id -> BigInt,
            name -> Text,
            value -> BigInt,
            price -> Numeric,
            ratio -> Double,
            flag -> Bool,
            day -> Date,
            at -> Timestamptz,
            note -> Nullable<Text>,
            tags -> Jsonb,
            parent_id -> Nullable<BigInt>,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }
}

/// Django's `Label`: a UUID primary key.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, cqrs::Master)]
#[diesel(table_name = schema::labels, check_for_backend(diesel::pg::Pg))]
#[cqrs(id = "interop_label")]
pub struct Label {
    pub id: uuid::Uuid,
    pub name: String,
    pub cqrs_revision: i32,
    pub cqrs_updated: DateTime<Utc>,
}

/// Django's `Item`: every value form, `value` tracked, the foreign key sent as `parent`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, cqrs::Master)]
#[diesel(table_name = schema::items, check_for_backend(diesel::pg::Pg))]
#[cqrs(id = "interop_item")]
pub struct Item {
    pub id: i64,
    pub name: String,
    #[cqrs(track)]
    pub value: i64,
    pub price: BigDecimal,
    pub ratio: f64,
    pub flag: bool,
    pub day: NaiveDate,
    pub at: DateTime<Utc>,
    pub note: Option<String>,
    pub tags: serde_json::Value,
    #[cqrs(rename = "parent")]
    pub parent_id: Option<i64>,
    pub cqrs_revision: i32,
    pub cqrs_updated: DateTime<Utc>,
}

/// A new item as the application inserts it (the capture stamps revision and time).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = schema::items)]
pub struct NewItem {
    pub name: String,
    pub value: i64,
    pub price: BigDecimal,
    pub ratio: f64,
    pub flag: bool,
    pub day: NaiveDate,
    pub at: DateTime<Utc>,
    pub note: Option<String>,
    pub tags: serde_json::Value,
    pub parent_id: Option<i64>,
    pub cqrs_revision: i32,
    pub cqrs_updated: DateTime<Utc>,
}

/// The replica of `interop_label`; it applies only SYNCs sent to its queue (django-cqrs's
/// `CQRS_ONLY_DIRECT_SYNCS`).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, cqrs::Replica)]
#[diesel(table_name = schema::labels, check_for_backend(diesel::pg::Pg))]
#[cqrs(id = "interop_label", only_direct_syncs)]
pub struct ReplicaLabel {
    pub id: uuid::Uuid,
    pub name: String,
    pub cqrs_revision: i32,
    pub cqrs_updated: DateTime<Utc>,
}

/// The replica of `interop_item`; the wire's `parent` lands in `parent_id`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, cqrs::Replica)]
#[diesel(table_name = schema::items, check_for_backend(diesel::pg::Pg))]
#[cqrs(id = "interop_item")]
pub struct ReplicaItem {
    pub id: i64,
    pub name: String,
    pub value: i64,
    pub price: BigDecimal,
    pub ratio: f64,
    pub flag: bool,
    pub day: NaiveDate,
    pub at: DateTime<Utc>,
    pub note: Option<String>,
    pub tags: serde_json::Value,
    #[cqrs(rename = "parent")]
    pub parent_id: Option<i64>,
    pub cqrs_revision: i32,
    pub cqrs_updated: DateTime<Utc>,
}

/// Both roles: the interop tests' `cqrs` binary (`cqrs-interop`) is master and replica.
pub fn registry() -> cqrs::Registry {
    cqrs::Registry::new()
        .master::<Label>()
        .master::<Item>()
        .replica::<ReplicaLabel>()
        .replica::<ReplicaItem>()
}

/// Every row of both tables in key order, one JSON array per table, as PostgreSQL prints them
/// on one connection's settings (so two databases of one server compare as text): values,
/// revisions and `cqrs_updated` to the microsecond.
pub fn rows(url: &str) -> cqrs::Result<(String, String)> {
    let mut db = Db::connect(url)?;
    let mut all = |sql: &str| -> cqrs::Result<String> {
        Ok(db
            .load_text(
                &format!("SELECT COALESCE(json_agg(t)::text, '[]') AS j FROM ({sql}) t"),
                vec![],
            )?
            .remove(0))
    };
    let items = all(
        "SELECT id, name, value, price, ratio, flag, day, at, note, tags, parent_id, cqrs_revision, \
         cqrs_updated FROM items ORDER BY id",
    )?;
    let labels = all("SELECT id, name, cqrs_revision, cqrs_updated FROM labels ORDER BY id")?;
    Ok((items, labels))
}
