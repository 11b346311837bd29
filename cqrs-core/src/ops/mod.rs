//! Operations behind the CLI's data and maintenance commands, as library calls.

pub mod adopt;
pub mod bulk;
pub mod dead_letters;
pub mod diff;
pub mod filter;
pub(crate) mod pages;
pub mod sync;
