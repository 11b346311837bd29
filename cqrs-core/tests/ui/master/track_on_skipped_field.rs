use chrono::{DateTime, Utc};

#[derive(cqrs::Master)]
#[diesel(table_name = items)]
#[cqrs(id = "item")]
struct Item {
    id: i64,
    #[cqrs(skip, track)]
    secret: String,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

fn main() {}
