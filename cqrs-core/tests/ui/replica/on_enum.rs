#[derive(cqrs::Replica)]
#[diesel(table_name = items)]
#[cqrs(id = "item")]
enum Item {
    A,
    B,
}

fn main() {}
