//! `cqrs queues migrate --to quorum|classic`: one line per queue on stderr.

use cqrs::{Error, Registry, Settings};

use crate::cli::{QueuesAction, QueuesArgs};

pub(crate) fn run(
    registry: &Registry,
    settings: &Settings,
    args: &QueuesArgs,
) -> Result<(), Error> {
    let QueuesAction::Migrate = args.action;
    let queue = settings.require_queue("queues migrate")?;
    let ids: Vec<String> = registry.replica_ids().map(str::to_string).collect();
    let broker = cqrs::transport::connect(settings, "queues")?;
    for q in broker.migrate_replica(queue, &ids, &settings.retry_levels(), args.to)? {
        if q.changed || q.unparked > 0 {
            eprintln!(
                "{}: now {}; {} message(s) moved, {} put back",
                q.queue, args.to, q.moved, q.unparked
            );
        } else {
            eprintln!("{}: already {}", q.queue, args.to);
        }
    }
    if settings.queue_type != args.to {
        eprintln!(
            "set queue_type = \"{}\" (--queue-type, CQRS_QUEUE_TYPE) before consume restarts",
            args.to
        );
    }
    Ok(())
}
