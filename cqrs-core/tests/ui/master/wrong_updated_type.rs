#[derive(cqrs::Master)]
#[diesel(table_name = items)]
#[cqrs(id = "item")]
struct Item {
    id: i64,
    cqrs_revision: i32,
    cqrs_updated: chrono::NaiveDateTime,
}

fn main() {}
