//! Prints the trigger-capture install script of the table `scripts/bench-triggers.sh` times
//! (`b_items`: six columns, one tracked).
use cqrs::{ColumnSpec, MasterSpec, TableSpec, model::CaptureMode, value::ColumnType};
fn main() {
    let spec = MasterSpec::new(
        TableSpec::new("b_item", "b_items")
            .key("id", ColumnType::BigInt)
            .column(ColumnSpec::new("name", ColumnType::Text))
            .column(ColumnSpec::new("value", ColumnType::BigInt))
            .column(ColumnSpec::new("price", ColumnType::Numeric))
            .column(ColumnSpec::new("ratio", ColumnType::Double))
            .column(ColumnSpec::new("at", ColumnType::Timestamptz))
            .build()
            .unwrap(),
    )
    .track("value")
    .unwrap()
    .capture(CaptureMode::Trigger)
    .unwrap();
    print!("{}", cqrs::capture::triggers::install_sql(&spec).unwrap());
}
