//! `cqrs dead-letters dump|retry|purge [-c ID]... [--limit N]`: bodies on stdout, counts on stderr.

use cqrs::ops::dead_letters::{Action, Filter};
use cqrs::{Error, Settings};

use crate::cli::{DeadLettersArgs, LetterAction};

pub(crate) fn run(settings: &Settings, args: &DeadLettersArgs) -> Result<(), Error> {
    let action = match args.action {
        LetterAction::Dump => Action::Dump,
        LetterAction::Retry => Action::Retry,
        LetterAction::Purge => Action::Purge,
    };
    let filter = Filter {
        cqrs_ids: args.cqrs_ids.clone(),
        limit: args.limit,
    };
    let queue = settings.require_queue("dead-letters")?;
    let broker = cqrs::transport::connect(settings, "dead-letters")?;
    let mut stdout = std::io::stdout().lock();
    let r = cqrs::ops::dead_letters::run(
        broker.letters(queue)?.as_mut(),
        queue,
        action,
        &filter,
        &mut stdout,
    )?;
    let verb = match action {
        Action::Dump => "dumped",
        Action::Retry => "retried",
        Action::Purge => "purged",
    };
    eprintln!(
        "dead letters: {} in the queue, {} matched, {verb} {}, {} left (not a message)",
        r.total, r.matched, r.done, r.left
    );
    Ok(())
}
