//! `cqrs models`: the models this binary serves, one per line (`replica <cqrs_id>`).

use cqrs::{Error, Registry};

pub(crate) fn run(registry: &Registry) -> Result<(), Error> {
    for id in registry.replica_ids() {
        println!("replica {id}");
    }
    Ok(())
}
