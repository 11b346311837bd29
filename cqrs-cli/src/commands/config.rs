//! `cqrs config`: the effective settings, one `key = value  # source` line each, by `cqrs.toml`
//! key; URLs redacted. A bad setting anywhere (an unknown key in the file, a malformed
//! environment variable, `[models.<cqrs_id>]` of a model the binary does not have) is the usual
//! usage error, exit 2.

use std::path::Path;

use cqrs::config::Layer;
use cqrs::{Error, Registry, Settings};

pub(crate) fn run(flags: Layer, config: Option<&Path>, registry: &Registry) -> Result<(), Error> {
    let (settings, sources) = Settings::explain(flags, config)?;
    if !registry.is_empty() {
        registry.check_settings(&settings)?;
    }
    for ((key, value), (_, source)) in settings.values().into_iter().zip(sources) {
        println!("{key:<24} = {value:<40}  # {source}");
    }
    Ok(())
}
