//! Derive macros for `cqrs`: `#[derive(Master)]` and `#[derive(Replica)]` on Diesel models.
//!
//! Laid out like serde_derive: `attr` parses `#[cqrs(...)]` and the `#[diesel(...)]` keys we read,
//! `ast` builds a typed model of the struct, `check` validates it and `expand` writes tokens.
//! Attribute names are compared only against the constants of `symbol`, so a misspelt key is a
//! compile error rather than an attribute that silently never matches. `check` has one function
//! per rule, each documenting why that misuse is refused.
//! Every mistake is collected in `ctxt::Ctxt` so one build reports all of them, each spanned on
//! the offending field or attribute with a `help:` line.

mod ast;
mod attr;
mod check;
mod ctxt;
mod expand;
mod symbol;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Implements `cqrs::ReplicaModel` for a Diesel model: the replica table's description.
///
/// Struct: `#[cqrs(id = "cqrs_id")]` (required), `#[cqrs(crate = "path")]`, `after_apply = "fn"`,
/// `retry = "fn"`, `only_direct_syncs` (broadcast SYNCs acknowledged and ignored); reads
/// `#[diesel(table_name = ..)]` (required) and `#[diesel(primary_key(..))]` (default `id`).
/// Fields: `#[cqrs(rename = "wire_name")]`, `#[cqrs(skip)]`, `#[cqrs(optional)]`, `#[cqrs(json)]`;
/// reads `#[diesel(column_name = ..)]`.
#[proc_macro_derive(Replica, attributes(cqrs, diesel))]
pub fn derive_replica(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::replica(&input).into()
}

/// Implements `cqrs::MasterModel` for a Diesel model: the master table's description and options.
///
/// Struct: `#[cqrs(id = "cqrs_id")]` (required), `crate = "path"`, `produce = false`,
/// `filter = "fn"` (is_sync_instance), `meta = "fn"`, `correlation_id = "fn"` (given a
/// `cqrs::model::Correlation`), `delete_custom = "fn"`, `serializer = "fn"`; reads `#[diesel(table_name, primary_key)]`. Fields: `rename`, `skip`,
/// `track`, `json`; reads `#[diesel(column_name = ..)]`.
#[proc_macro_derive(Master, attributes(cqrs, diesel))]
pub fn derive_master(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::master(&input).into()
}
