diesel::table! {
    items (code) {
        code -> Text,
        id -> BigInt,
        cqrs_revision -> Integer,
        cqrs_updated -> Timestamptz,
    }
}

// The model keys rows by `id` (the default); the Diesel table's primary key is `code`.
#[derive(cqrs::Master)]
#[diesel(table_name = items)]
#[cqrs(id = "item")]
struct Item {
    code: String,
    id: i64,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

fn main() {}
