use chrono::{DateTime, Utc};

#[derive(cqrs::Master)]
#[diesel(table_name = items)]
#[cqrs(id = "item", only_direct_syncs)]
struct Item {
    id: i64,
    name: String,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

fn main() {}
