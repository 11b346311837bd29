#[derive(cqrs::Replica)]
#[diesel(table_name = items)]
#[cqrs(id = "item")]
struct Item(i64, i32);

fn main() {}
