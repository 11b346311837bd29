//! A table written with sqlx, not Diesel, replicated all the same: the application keeps its
//! sqlx code as it is, and cqrs's PostgreSQL triggers (`capture = "trigger"`) capture every
//! write to the table in the writer's own transaction. The Diesel model below only describes
//! the table to cqrs; nothing writes through it.
//!
//! Which capture fits which writer: `cqrs::atomic` needs the writes to go through Diesel (its
//! `Tx` statements or a Diesel connection you tell about your changes); any other writer — sqlx,
//! diesel-async, tokio-postgres, psql, another service, a migration — is captured by triggers.

// Model fields are the table's columns; documenting each would repeat the schema.
#![allow(missing_docs)]

use chrono::{DateTime, Utc};

/// The Diesel schema of both sides (PostgreSQL).
pub mod schema {
    diesel::table! {
        notes (id) {
            id -> BigInt,
            title -> Text,
            body -> Text,
            pinned -> Bool,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }

    diesel::table! {
        replica_notes (id) {
            id -> BigInt,
            title -> Text,
            body -> Text,
            pinned -> Bool,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }
}

use schema::{notes, replica_notes};

/// The master's table, as the application's own migration creates it.
pub const MASTER_SQL: &str = "
CREATE TABLE notes (
    id BIGSERIAL PRIMARY KEY,
    title TEXT NOT NULL,
    body TEXT NOT NULL DEFAULT '',
    pinned BOOLEAN NOT NULL DEFAULT false,
    cqrs_revision INTEGER NOT NULL DEFAULT 0,
    cqrs_updated TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);";

/// The replica's table.
pub const REPLICA_SQL: &str = "
CREATE TABLE replica_notes (
    id BIGINT PRIMARY KEY,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    pinned BOOLEAN NOT NULL,
    cqrs_revision INTEGER NOT NULL,
    cqrs_updated TIMESTAMPTZ NOT NULL
);";

/// The master model: captured by triggers, so whoever writes the table is captured.
#[derive(Debug, Clone, PartialEq, diesel::Queryable, diesel::Selectable, cqrs::Master)]
#[diesel(table_name = notes, check_for_backend(diesel::pg::Pg))]
#[cqrs(id = "note", capture = "trigger")]
pub struct Note {
    pub id: i64,
    pub title: String,
    #[cqrs(track)]
    pub body: String,
    pub pinned: bool,
    pub cqrs_revision: i32,
    pub cqrs_updated: DateTime<Utc>,
}

/// The replica model.
#[derive(Debug, Clone, PartialEq, diesel::Queryable, diesel::Selectable, cqrs::Replica)]
#[diesel(table_name = replica_notes, check_for_backend(diesel::pg::Pg))]
#[cqrs(id = "note")]
pub struct ReplicaNote {
    pub id: i64,
    pub title: String,
    pub body: String,
    pub pinned: bool,
    pub cqrs_revision: i32,
    pub cqrs_updated: DateTime<Utc>,
}

/// The master side's models.
pub fn master_registry() -> cqrs::Registry {
    cqrs::Registry::new().master::<Note>()
}

/// The replica side's models.
pub fn replica_registry() -> cqrs::Registry {
    cqrs::Registry::new().replica::<ReplicaNote>()
}

/// The application's writes, in sqlx as it would write them: `n` notes created one per
/// transaction, every third one's body edited, all of them with an even id pinned by one bulk
/// `UPDATE`, an upsert of an existing and a new title, and every fifth note deleted. Returns the
/// ids of the notes left.
pub async fn write(pool: &sqlx::PgPool, n: i64) -> Result<Vec<i64>, sqlx::Error> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut tx = pool.begin().await?;
        let (id,): (i64,) =
            sqlx::query_as("INSERT INTO notes (title, body) VALUES ($1, $2) RETURNING id")
                .bind(format!("note {i}"))
                .bind("first draft")
                .fetch_one(&mut *tx)
                .await?;
        if i % 3 == 0 {
            sqlx::query("UPDATE notes SET body = body || ', edited' WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        ids.push(id);
    }
    sqlx::query("UPDATE notes SET pinned = true WHERE id % 2 = 0")
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO notes (id, title, body) VALUES ($1, 'upserted', 'kept'), (DEFAULT, 'new', 'fresh')
         ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, body = EXCLUDED.body",
    )
    .bind(ids[0])
    .execute(pool)
    .await?;
    let deleted: Vec<i64> = ids.iter().copied().filter(|id| id % 5 == 0).collect();
    sqlx::query("DELETE FROM notes WHERE id = ANY($1)")
        .bind(&deleted)
        .execute(pool)
        .await?;
    let (left,): (Vec<i64>,) = sqlx::query_as("SELECT array_agg(id ORDER BY id) FROM notes")
        .fetch_one(pool)
        .await?;
    Ok(left)
}
