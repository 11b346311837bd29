use chrono::{DateTime, Utc};

#[derive(cqrs::Replica)]
#[diesel(table_name = items)]
#[cqrs(id = "item")]
struct Item {
    id: i64,
    name: String,
    #[cqrs(rename = "name")]
    title: String,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

fn main() {}
