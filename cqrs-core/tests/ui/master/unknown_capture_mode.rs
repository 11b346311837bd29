#![allow(dead_code)]

#[derive(cqrs::Master)]
#[diesel(table_name = items)]
#[cqrs(id = "item", capture = "triggers")]
struct Item {
    id: i64,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

fn main() {}
