use diesel::prelude::*;

diesel::table! {
    notes (id) {
        id -> BigInt,
        body -> Text,
    }
}

fn write(conn: &mut PgConnection) -> cqrs::Result<usize> {
    cqrs::atomic(conn, |tx| {
        tx.update(notes::table.find(1_i64)).set(notes::body.eq("x")).execute()
    })
}

fn main() {}
