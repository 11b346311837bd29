//! `cqrs triggers install|check`: the PostgreSQL triggers of masters captured by triggers.

use std::sync::Arc;

use cqrs::capture::triggers;
use cqrs::model::CaptureMode;
use cqrs::{Db, Error, ErrorKind, MasterSpec, Registry, Settings};

use crate::cli::{TriggerAction, TriggersArgs};

pub(crate) fn run(
    registry: &Registry,
    settings: &Settings,
    args: &TriggersArgs,
) -> Result<(), Error> {
    // Uninstall also serves a model switched back to atomic capture.
    let any_mode = matches!(args.action, TriggerAction::Uninstall);
    let specs = chosen(registry, &args.cqrs_ids, any_mode)?;
    let mut db = Db::connect(settings.require_database_url()?)?;
    match args.action {
        TriggerAction::Install | TriggerAction::Uninstall => {
            let install = matches!(args.action, TriggerAction::Install);
            for spec in &specs {
                let (t, id) = (spec.table().table(), spec.table().cqrs_id());
                if install {
                    triggers::install(&mut db, spec)?;
                    eprintln!("installed the triggers of {id} on table {t}");
                } else {
                    triggers::uninstall(&mut db, spec)?;
                    eprintln!("removed the triggers of {id} from table {t}");
                }
            }
            Ok(())
        }
        TriggerAction::Check => {
            let mut problems = 0;
            for spec in &specs {
                for problem in triggers::check(&mut db, spec)? {
                    println!("{}: {problem}", spec.table().cqrs_id());
                    problems += 1;
                }
            }
            if problems == 0 {
                eprintln!(
                    "the triggers of {} model(s) match their models",
                    specs.len()
                );
                return Ok(());
            }
            Err(Error::new(
                ErrorKind::Database,
                format!("{problems} trigger problem(s): run `cqrs triggers install`"),
            ))
        }
    }
}

/// The named masters (each must be trigger-captured), or every trigger-captured master.
fn chosen(
    registry: &Registry,
    ids: &[String],
    any_mode: bool,
) -> Result<Vec<Arc<MasterSpec>>, Error> {
    let by_trigger = |s: &Arc<MasterSpec>| s.capture_mode() == CaptureMode::Trigger;
    if ids.is_empty() {
        let specs: Vec<_> = registry
            .master_ids()
            .filter_map(|id| registry.master_for(id))
            .filter(|s| by_trigger(s))
            .cloned()
            .collect();
        if specs.is_empty() {
            return Err(Error::config(
                "no master of this binary is captured by triggers (#[cqrs(capture = \"trigger\")])",
            ));
        }
        return Ok(specs);
    }
    ids.iter()
        .map(|id| {
            let spec = registry.master_named(id)?;
            if any_mode || by_trigger(spec) {
                Ok(spec.clone())
            } else {
                Err(Error::config(format!(
                    "master {id:?} is captured by atomic, not by triggers (#[cqrs(capture = \"trigger\")])"
                )))
            }
        })
        .collect()
}
