use chrono::{DateTime, Utc};

#[derive(cqrs::Replica)]
#[diesel(table_name = items)]
#[cqrs(id = "item")]
struct Item {
    id: i64,
    name: String,
    cqrs_updated: DateTime<Utc>,
}

fn main() {}
