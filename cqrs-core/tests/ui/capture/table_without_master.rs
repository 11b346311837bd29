use diesel::prelude::*;

diesel::table! {
    items (id) {
        id -> BigInt,
        name -> Text,
        cqrs_revision -> Integer,
        cqrs_updated -> Timestamptz,
    }
}

diesel::table! {
    notes (id) {
        id -> BigInt,
        body -> Text,
    }
}

#[derive(Queryable, cqrs::Master)]
#[diesel(table_name = items)]
#[cqrs(id = "item")]
struct Item {
    id: i64,
    name: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

fn write(conn: &mut PgConnection) -> cqrs::Result<usize> {
    cqrs::atomic(conn, |tx| {
        // `notes` has no master model: nothing would be captured.
        tx.insert_into(notes::table).values(notes::body.eq("x")).execute()
    })
}

fn main() {}
