//! `cqrs demo [--rows N] [--dir DIR]`: the whole product on built-in models; progress on stderr,
//! the summary on stdout.

use std::io::IsTerminal;

use cqrs::{Error, ErrorKind, Settings};

use crate::cli::DemoArgs;
use crate::demo::{self, Options};

pub(crate) fn run(settings: &Settings, args: &DemoArgs) -> Result<(), Error> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("cqrs-demo-{}", std::process::id())));
    let opts = Options {
        rows: args.rows,
        dir,
        database_url: settings.database_url.clone(),
        broker_url: settings.broker_url.clone(),
        exchange: settings.exchange.clone(),
        queue: settings
            .queue
            .clone()
            .unwrap_or_else(|| demo::DEFAULT_QUEUE.to_string()),
    };
    // A spinner with the current step on a terminal; plain lines a few times a second otherwise.
    let spinner = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .expect("a valid template"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let mut last = std::time::Instant::now() - std::time::Duration::from_secs(1);
    let s = demo::run(&opts, &mut |line| match &spinner {
        Some(bar) => bar.set_message(line.to_string()),
        None if last.elapsed() >= std::time::Duration::from_millis(250) => {
            last = std::time::Instant::now();
            eprintln!("{line}");
        }
        None => {}
    })?;
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    println!(
        "cqrs demo: master {} -> queue {} -> replica {}",
        s.urls.0, s.urls.2, s.urls.1
    );
    println!("  rows on the master:   {}", s.master_rows);
    println!("  rows on the replica:  {}", s.replica_rows);
    println!("  drift found by diff:  {}", s.drift);
    println!(
        "  messages:             {} in {:.2} s ({:.0} messages/s end to end)",
        s.messages,
        s.elapsed.as_secs_f64(),
        s.messages as f64 / s.elapsed.as_secs_f64()
    );
    println!(
        "  commit -> apply:      p50 {:.1} ms, p99 {:.1} ms",
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
    // A directory we made up is ours to remove; one the user named is theirs to keep.
    if args.dir.is_none() && s.drift == 0 {
        let removed = std::fs::remove_dir_all(&opts.dir).is_ok();
        if removed {
            println!("  files:                removed (pass --dir DIR to keep them)");
        }
    } else {
        println!("  files:                {}", opts.dir.display());
    }
    if s.drift != 0 {
        return Err(Error::new(
            ErrorKind::Database,
            format!("the replica drifted from the master by {} rows", s.drift),
        ));
    }
    Ok(())
}
