use chrono::{DateTime, Utc};

#[derive(cqrs::Master)]
#[diesel(table_name = items)]
#[cqrs(id = "item", is_sync_instance = "f")]
struct Item {
    id: i64,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

fn main() {}
