//! `cqrs models`: the models this binary serves, one per line (`master <cqrs_id>`, `replica <cqrs_id>`).

use cqrs::{Error, Registry};

pub(crate) fn run(registry: &Registry) -> Result<(), Error> {
    for id in registry.master_ids() {
        println!("master {id}");
    }
    for id in registry.replica_ids() {
        println!("replica {id}");
    }
    Ok(())
}
