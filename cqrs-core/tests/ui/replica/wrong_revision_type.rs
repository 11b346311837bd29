use chrono::{DateTime, Utc};

#[derive(cqrs::Replica)]
#[diesel(table_name = items)]
#[cqrs(id = "item")]
struct Item {
    id: i64,
    cqrs_revision: i64,
    cqrs_updated: DateTime<Utc>,
}

fn main() {}
