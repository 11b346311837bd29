#![allow(dead_code)]

#[derive(cqrs::Master)]
#[diesel(table_name = items)]
#[cqrs(id = "item", capture = "trigger", filter = "crate::public")]
struct Item {
    id: i64,
    name: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

fn public(_: &cqrs::InstanceData) -> bool {
    true
}

fn main() {}
