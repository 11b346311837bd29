use chrono::{DateTime, Utc};

#[derive(cqrs::Replica)]
#[diesel(table_name = items)]
struct Item {
    id: i64,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

fn main() {}
