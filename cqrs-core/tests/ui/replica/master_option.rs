use chrono::{DateTime, Utc};

fn custom(_: &mut dyn cqrs::db::SqlConn, _: &mut cqrs::model::InstanceData) -> cqrs::Result<()> {
    Ok(())
}

#[derive(cqrs::Replica)]
#[diesel(table_name = items)]
#[cqrs(id = "item", serializer = "custom")]
struct Item {
    id: i64,
    name: String,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

fn main() {}
