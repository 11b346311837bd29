//! `cqrs queues migrate --to quorum|classic` and `cqrs queues delete [--force]`: one line per
//! queue on stderr.

use cqrs::{Error, Registry, Settings};

use crate::cli::{QueuesAction, QueuesArgs};

pub(crate) fn run(
    registry: &Registry,
    settings: &Settings,
    args: &QueuesArgs,
) -> Result<(), Error> {
    let queue = settings.require_queue("queues")?;
    match (args.action, args.to) {
        (QueuesAction::Migrate, Some(to)) => {
            // The bindings come from the models: checked before anything is moved.
            let ids: Vec<String> = super::require_models(registry)?
                .replica_ids()
                .map(str::to_string)
                .collect();
            let broker = cqrs::transport::connect(settings, "queues")?;
            for q in broker.migrate_replica(queue, &ids, &settings.retry_levels(), to)? {
                if q.changed || q.unparked > 0 {
                    eprintln!(
                        "{}: now {to}; {} message(s) moved, {} put back",
                        q.queue, q.moved, q.unparked
                    );
                } else {
                    eprintln!("{}: already {to}", q.queue);
                }
            }
            if settings.queue_type != to {
                eprintln!(
                    "set queue_type = \"{to}\" (--queue-type, CQRS_QUEUE_TYPE) before consume restarts"
                );
            }
        }
        (QueuesAction::Migrate, None) => unreachable!("clap requires --to for migrate"),
        (QueuesAction::Delete, _) => {
            let broker = cqrs::transport::connect(settings, "queues")?;
            let deleted = broker.delete_replica(queue, &settings.retry_levels(), args.force)?;
            for q in &deleted {
                eprintln!("{}: deleted with {} message(s)", q.queue, q.messages);
            }
            eprintln!(
                "{} queue(s) deleted, and exchange {}",
                deleted.len(),
                cqrs::transport::amqp::retry_exchange(queue)
            );
        }
    }
    Ok(())
}
