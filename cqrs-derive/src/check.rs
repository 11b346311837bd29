//! Validation of the model: every misuse becomes a spanned error with a `help:` line.
//!
//! One function per rule, each saying why the misuse is refused; `common`, `replica` and `master`
//! only call them. The drivers fix the order errors are reported in, which the ui snapshots record.

use quote::ToTokens;

use crate::ast::{ColumnKind, Field, Model};
use crate::ctxt::Ctxt;

const SUPPORTED: &str = "bool, i16, i32, i64, f32, f64, String, BigDecimal, NaiveDate, NaiveDateTime, DateTime<Utc>, Uuid, serde_json::Value, or Option of one of them";

/// Checks shared by both derives.
pub fn common(cx: &Ctxt, m: &Model<'_>) {
    cqrs_id_is_given(cx, m);
    table_name_is_given(cx, m);
    columns_fit_a_table_spec(cx, m);
    if let Some(key) = one_primary_key(cx, m)
        && let Some(f) = primary_key_is_a_field(cx, m, &key)
        && primary_key_is_not_skipped(cx, f)
    {
        primary_key_type_can_be_a_key(cx, f);
    }
    for b in [&REVISION, &UPDATED] {
        if let Some(f) = bookkeeping_is_declared(cx, m, b)
            && bookkeeping_has_its_type(cx, b, f)
        {
            bookkeeping_is_not_skipped(cx, b, f);
        }
    }
    for (i, f) in m.fields.iter().enumerate() {
        if f.attrs.skip.get().is_some() {
            continue;
        }
        type_maps_to_a_column(cx, f);
        json_is_on_a_json_value(cx, f);
        wire_name_is_unique(cx, &m.fields[..i], f);
    }
}

/// Checks of `#[derive(Replica)]`: master-only attributes are mistakes here.
pub fn replica(cx: &Ctxt, m: &Model<'_>) {
    common(cx, m);
    for f in &m.fields {
        track_is_not_on_a_replica(cx, f);
    }
    master_options_are_not_on_a_replica(cx, m);
}

/// Checks of `#[derive(Master)]`.
pub fn master(cx: &Ctxt, m: &Model<'_>) {
    common(cx, m);
    replica_options_are_not_on_a_master(cx, m);
    trigger_capture_has_no_hooks(cx, m);
    for f in &m.fields {
        tracked_field_is_not_skipped(cx, f);
        optional_is_not_on_a_master(cx, f);
    }
}

/// The id has no default: it is the CQRS_ID master and replicas agree on (and the AMQP routing
/// key), so one guessed from the struct or table name would silently unpair services whose two
/// sides name them differently.
fn cqrs_id_is_given(cx: &Ctxt, m: &Model<'_>) {
    if m.attrs.cqrs_id.get().is_none() {
        cx.error(
            m.ident,
            "missing `#[cqrs(id = \"...\")]`",
            "add `#[cqrs(id = \"item\")]` with the CQRS_ID shared with the master",
        );
    }
}

/// Most columns a `TableSpec` describes: the apply engine groups rows by their set of present
/// columns in one machine word.
const MAX_COLUMNS: usize = 64;

/// The generated code builds its `TableSpec` with `.expect(..)`, and `TableSpec::build` refuses
/// more than 64 columns: refusing a wider model here keeps it from compiling and then panicking
/// at run time.
fn columns_fit_a_table_spec(cx: &Ctxt, m: &Model<'_>) {
    let columns = m
        .fields
        .iter()
        .filter(|f| f.attrs.skip.get().is_none())
        .count();
    if columns > MAX_COLUMNS {
        cx.error(
            m.ident,
            format!("{columns} replicated columns, at most {MAX_COLUMNS} are supported"),
            "mark the fields replicas do not need with `#[cqrs(skip)]`, or split the model",
        );
    }
}

/// cqrs writes its own SQL against the table, so it needs the name; it takes it from Diesel's
/// attribute rather than re-deriving Diesel's default from the struct name, so the two cannot
/// disagree about which table the model is.
fn table_name_is_given(cx: &Ctxt, m: &Model<'_>) {
    if m.table().is_none() {
        cx.error(
            m.ident,
            "missing `#[diesel(table_name = ...)]`",
            "cqrs reads the table from Diesel's attribute: add `#[diesel(table_name = items)]`",
        );
    }
}

/// A django-cqrs message names its row by one scalar `instance_pk` (and a DELETE body by one `id`),
/// so a composite key has no wire form. Gives the key column for the rules that follow.
fn one_primary_key(cx: &Ctxt, m: &Model<'_>) -> Option<String> {
    let mut keys = m.primary_key();
    if keys.len() != 1 {
        let span = m.attrs.primary_key.span().unwrap_or_else(|| m.ident.span());
        cx.push(syn::Error::new(span, "composite primary keys are not supported by cqrs\n\nhelp: django-cqrs models have one primary key column; use `#[diesel(primary_key(id))]`"));
        return None;
    }
    keys.pop()
}

/// The key's type and wire name come from its field; without one the table description cannot
/// say how the rows are identified.
fn primary_key_is_a_field<'m, 'a>(cx: &Ctxt, m: &'m Model<'a>, key: &str) -> Option<&'m Field<'a>> {
    let f = m.field_by_column(key);
    if f.is_none() {
        cx.error(
            m.ident,
            format!("primary key column `{key}` is not a field of this struct"),
            "add the field or name the key with `#[diesel(primary_key(...))]`",
        );
    }
    f
}

/// `skip` means "not replicated", but every message finds its row by the key: a model without
/// it could neither send nor apply anything.
fn primary_key_is_not_skipped(cx: &Ctxt, f: &Field<'_>) -> bool {
    let Some(span) = f.attrs.skip.span() else {
        return true;
    };
    cx.push(syn::Error::new(
        span,
        "the primary key cannot be skipped\n\nhelp: remove `#[cqrs(skip)]` from the primary key field",
    ));
    false
}

/// The generated code builds its `TableSpec` with `.expect(..)`, and `TableSpec::build` accepts
/// only integer, text and UUID keys: refusing the others here keeps that from panicking at run
/// time. A nullable key is refused as well, since a NULL cannot identify a row.
fn primary_key_type_can_be_a_key(cx: &Ctxt, f: &Field<'_>) {
    if f.kind.is_some_and(|k| !k.can_be_key()) || f.nullable {
        cx.error(
            f.ty,
            "primary key type not supported",
            "a cqrs primary key is an integer, a String or a Uuid (not an Option)",
        );
    }
}

/// A column every cqrs table carries, and how its field must be declared.
struct Bookkeeping {
    column: &'static str,
    kind: ColumnKind,
    ty: &'static str,
    example: &'static str,
}

const REVISION: Bookkeeping = Bookkeeping {
    column: "cqrs_revision",
    kind: ColumnKind::Integer,
    ty: "i32",
    example: "`pub cqrs_revision: i32`",
};

const UPDATED: Bookkeeping = Bookkeeping {
    column: "cqrs_updated",
    kind: ColumnKind::Timestamptz,
    ty: "chrono::DateTime<chrono::Utc>",
    example: "`pub cqrs_updated: chrono::DateTime<chrono::Utc>`",
};

/// Every capture and apply reads and writes `cqrs_revision` and `cqrs_updated` (the revision guard
/// and the tombstones compare them), so the table must have them and the Diesel model that
/// describes the table must say so.
fn bookkeeping_is_declared<'m, 'a>(
    cx: &Ctxt,
    m: &'m Model<'a>,
    b: &Bookkeeping,
) -> Option<&'m Field<'a>> {
    let f = m.field_by_column(b.column);
    if f.is_none() {
        cx.error(
            m.ident,
            format!("missing field `{}`", b.column),
            format!("a cqrs model needs {}", b.example),
        );
    }
    f
}

/// The field's type becomes the column type in the table description, and cqrs fixes these: the
/// revision is an `INTEGER NOT NULL` counter, `cqrs_updated` an instant the tombstone rule
/// compares (a naive time has no zone to compare in). Neither may be NULL: a row without them
/// could not be ordered against another version of itself.
fn bookkeeping_has_its_type(cx: &Ctxt, b: &Bookkeeping, f: &Field<'_>) -> bool {
    if f.kind == Some(b.kind) && !f.nullable {
        return true;
    }
    cx.error(
        f.ty,
        format!("`{}` must be `{}`", b.column, b.ty),
        format!("declare it as {}", b.example),
    );
    false
}

/// `skip` means "not replicated", but the replica's revision guard needs exactly these two
/// values of every message to decide whether it is newer than what it has.
fn bookkeeping_is_not_skipped(cx: &Ctxt, b: &Bookkeeping, f: &Field<'_>) {
    if let Some(span) = f.attrs.skip.span() {
        cx.push(syn::Error::new(
            span,
            format!(
                "`{}` cannot be skipped\n\nhelp: remove `#[cqrs(skip)]`",
                b.column
            ),
        ));
    }
}

/// A replicated field is sent and stored through its column type; a type with none could be
/// neither encoded into `instance_data` nor written on the replica.
fn type_maps_to_a_column(cx: &Ctxt, f: &Field<'_>) {
    if f.kind.is_none() {
        cx.error(
            f.ty,
            format!(
                "cqrs cannot map the type of field `{}` to a column",
                f.ident
            ),
            format!("supported: {SUPPORTED}; or mark it `#[cqrs(skip)]`"),
        );
    }
}

/// `json` only turns a `serde_json::Value` column from `jsonb` into `json`; on any other type it
/// would change nothing, and an attribute silently ignored hides a mistake.
fn json_is_on_a_json_value(cx: &Ctxt, f: &Field<'_>) {
    if let Some(span) = f.attrs.json.span()
        && !matches!(f.kind, Some(ColumnKind::Json))
    {
        cx.push(syn::Error::new(
            span,
            "`json` applies to a serde_json::Value field\n\nhelp: remove `#[cqrs(json)]`",
        ));
    }
}

/// `instance_data` is one JSON object keyed by wire name, so two fields under one key would
/// overwrite each other; `TableSpec::build` refuses that too, and the generated `.expect(..)`
/// would panic at run time. `earlier` are the fields before `f`, so each clash is reported once,
/// on the second field.
fn wire_name_is_unique(cx: &Ctxt, earlier: &[Field<'_>], f: &Field<'_>) {
    if let Some(other) = earlier
        .iter()
        .find(|o| o.attrs.skip.get().is_none() && o.wire == f.wire)
    {
        let at = f
            .attrs
            .rename
            .get()
            .map_or_else(|| f.ident.to_token_stream(), ToTokens::to_token_stream);
        cx.error(
            at,
            format!(
                "wire name `{}` is used by fields `{}` and `{}`",
                f.wire, other.ident, f.ident
            ),
            "give one of them a different `#[cqrs(rename = \"...\")]`",
        );
    }
}

/// Tracking fills `previous_data`, which only a master sends; on a replica it would do nothing,
/// and the replica already receives `previous_data` from its master.
fn track_is_not_on_a_replica(cx: &Ctxt, f: &Field<'_>) {
    if let Some(span) = f.attrs.track.span() {
        cx.push(syn::Error::new(span, "`track` is an attribute of #[derive(Master)]\n\nhelp: a replica receives previous_data; remove `#[cqrs(track)]`"));
    }
}

/// The Replica derive never reads these options: accepting them would silently drop a filter,
/// hook or serializer the author expected to run.
fn master_options_are_not_on_a_replica(cx: &Ctxt, m: &Model<'_>) {
    let options = [m.attrs.produce.span(), m.attrs.capture_trigger.span()];
    for span in options.into_iter().chain(hook_spans(m)).flatten() {
        cx.push(syn::Error::new(
            span,
            "this is an option of #[derive(Master)]\n\nhelp: remove it from the replica model",
        ));
    }
}

/// The Master derive never reads these options: accepting them would silently drop a hook or
/// retry policy the author expected to run.
fn replica_options_are_not_on_a_master(cx: &Ctxt, m: &Model<'_>) {
    for span in [
        m.attrs.after_apply.span(),
        m.attrs.retry.span(),
        m.attrs.only_direct_syncs.span(),
    ]
    .into_iter()
    .flatten()
    {
        cx.push(syn::Error::new(
            span,
            "this is an option of #[derive(Replica)]\n\nhelp: remove it from the master model",
        ));
    }
}

/// Where the master's Rust hooks are given, if they are.
fn hook_spans(m: &Model<'_>) -> [Option<proc_macro2::Span>; 5] {
    [
        m.attrs.filter.span(),
        m.attrs.meta.span(),
        m.attrs.correlation_id.span(),
        m.attrs.delete_custom.span(),
        m.attrs.serializer.span(),
    ]
}

/// Trigger capture builds each message in SQL, inside the writing statement, where a Rust function
/// cannot run: accepting a hook would send messages it never shaped.
fn trigger_capture_has_no_hooks(cx: &Ctxt, m: &Model<'_>) {
    if m.attrs.capture_trigger.get() != Some(&true) {
        return;
    }
    for span in hook_spans(m).into_iter().flatten() {
        cx.push(syn::Error::new(
            span,
            "`capture = \"trigger\"` builds messages in SQL, where this Rust hook cannot run\n\nhelp: remove the hook, or capture the model with `cqrs::atomic` (`capture = \"atomic\"`, the default)",
        ));
    }
}

/// A tracked field's old value goes in `previous_data`, but a skipped field is never sent: the
/// two contradict each other, and whichever wins, the author's intent is lost.
fn tracked_field_is_not_skipped(cx: &Ctxt, f: &Field<'_>) {
    if let (Some(span), Some(_)) = (f.attrs.track.span(), f.attrs.skip.get()) {
        cx.push(syn::Error::new(span, format!("field `{}` is skipped, so it cannot be tracked\n\nhelp: remove `#[cqrs(track)]` or `#[cqrs(skip)]`", f.ident)));
    }
}

/// `optional` lets a replica accept a message without the field; a master always sends every
/// replicated field, so there it would do nothing.
fn optional_is_not_on_a_master(cx: &Ctxt, f: &Field<'_>) {
    if let Some(span) = f.attrs.optional.span() {
        cx.push(syn::Error::new(span, "`optional` is an attribute of #[derive(Replica)]\n\nhelp: a master always sends every field; remove `#[cqrs(optional)]`"));
    }
}
