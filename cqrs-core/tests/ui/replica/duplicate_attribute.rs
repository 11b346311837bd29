use chrono::{DateTime, Utc};

#[derive(cqrs::Replica)]
#[diesel(table_name = items)]
#[cqrs(id = "item")]
struct Item {
    id: i64,
    #[cqrs(rename = "title", rename = "label")]
    name: String,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

fn main() {}
