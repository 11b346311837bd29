
#[derive(cqrs::Replica)]
#[diesel(table_name = items, primary_key(code))]
struct Item {
    #[cqrs(skip)]
    code: String,
    #[cqrs(bogus)]
    name: String,
    cqrs_revision: Option<i32>,
}

fn main() {}
