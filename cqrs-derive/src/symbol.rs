//! The attribute names the derives match on, each spelled once.
//!
//! A key misspelt in one `is_ident("...")` call compiles and silently stops matching: the attribute
//! then falls through to "unknown attribute", or a check tests a name the parser never sets. As
//! constants, a typo is a compile error, and every name the derives accept is listed here.

use std::fmt::{self, Display};

use syn::Path;

/// A newtype rather than a `&str`, so a name compared against can only come from this list.
#[derive(Clone, Copy)]
pub struct Symbol(&'static str);

/// The attribute paths: our own, and Diesel's, which we read for the table, key and columns.
pub const CQRS: Symbol = Symbol("cqrs");
pub const DIESEL: Symbol = Symbol("diesel");

// `#[cqrs(..)]` on the struct, both derives.
pub const ID: Symbol = Symbol("id");
pub const CRATE: Symbol = Symbol("crate");
// `#[cqrs(..)]` on the struct, Master only.
pub const PRODUCE: Symbol = Symbol("produce");
pub const FILTER: Symbol = Symbol("filter");
pub const META: Symbol = Symbol("meta");
pub const CORRELATION_ID: Symbol = Symbol("correlation_id");
pub const DELETE_CUSTOM: Symbol = Symbol("delete_custom");
pub const SERIALIZER: Symbol = Symbol("serializer");
// `#[cqrs(..)]` on the struct, Replica only.
pub const AFTER_APPLY: Symbol = Symbol("after_apply");
pub const RETRY: Symbol = Symbol("retry");
pub const ONLY_DIRECT_SYNCS: Symbol = Symbol("only_direct_syncs");
pub const CAPTURE: Symbol = Symbol("capture");

// `#[diesel(..)]` on the struct.
pub const TABLE_NAME: Symbol = Symbol("table_name");
pub const PRIMARY_KEY: Symbol = Symbol("primary_key");

// `#[cqrs(..)]` on a field.
pub const RENAME: Symbol = Symbol("rename");
pub const SKIP: Symbol = Symbol("skip");
pub const TRACK: Symbol = Symbol("track");
pub const OPTIONAL: Symbol = Symbol("optional");
pub const JSON: Symbol = Symbol("json");

// `#[diesel(..)]` on a field.
pub const COLUMN_NAME: Symbol = Symbol("column_name");

// django-cqrs model options with no key of that name here: refused with a hint at the equivalent.
pub const IS_SYNC_INSTANCE: Symbol = Symbol("is_sync_instance");
pub const TRACKED_FIELDS: Symbol = Symbol("tracked_fields");
pub const TRACKED: Symbol = Symbol("tracked");
pub const MAPPING: Symbol = Symbol("mapping");

/// Exactly the `Path::is_ident` test the string keys were matched with (one segment, no leading
/// `::`, no generics), so `meta.path == TRACK` accepts what it accepted before.
impl PartialEq<Symbol> for Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl PartialEq<Symbol> for &Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

/// Error messages name the attribute as the user writes it.
impl Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
