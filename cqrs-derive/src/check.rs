//! Validation of the model: every misuse becomes a spanned error with a `help:` line.

use quote::ToTokens;

use crate::ast::{ColumnKind, Model};
use crate::ctxt::Ctxt;

const SUPPORTED: &str = "bool, i16, i32, i64, f32, f64, String, BigDecimal, NaiveDate, NaiveDateTime, DateTime<Utc>, Uuid, serde_json::Value, or Option of one of them";

/// Checks shared by both derives.
pub fn common(cx: &Ctxt, m: &Model<'_>) {
    if m.attrs.cqrs_id.get().is_none() {
        cx.error(
            m.ident,
            "missing `#[cqrs(id = \"...\")]`",
            "add `#[cqrs(id = \"item\")]` with the CQRS_ID shared with the master",
        );
    }
    if m.table().is_none() {
        cx.error(
            m.ident,
            "missing `#[diesel(table_name = ...)]`",
            "cqrs reads the table from Diesel's attribute: add `#[diesel(table_name = items)]`",
        );
    }
    let keys = m.primary_key();
    if keys.len() != 1 {
        let span = m.attrs.primary_key.span().unwrap_or_else(|| m.ident.span());
        cx.push(syn::Error::new(span, "composite primary keys are not supported by cqrs\n\nhelp: django-cqrs models have one primary key column; use `#[diesel(primary_key(id))]`"));
    } else {
        match m.field_by_column(&keys[0]) {
            None => cx.error(
                m.ident,
                format!(
                    "primary key column `{}` is not a field of this struct",
                    keys[0]
                ),
                "add the field or name the key with `#[diesel(primary_key(...))]`",
            ),
            Some(f) => {
                if let Some(span) = f.attrs.skip.span() {
                    cx.push(syn::Error::new(span, "the primary key cannot be skipped\n\nhelp: remove `#[cqrs(skip)]` from the primary key field"));
                } else if f.kind.is_some_and(|k| !k.can_be_key()) || f.nullable {
                    cx.error(
                        f.ty,
                        "primary key type not supported",
                        "a cqrs primary key is an integer, a String or a Uuid (not an Option)",
                    );
                }
            }
        }
    }
    require(
        cx,
        m,
        "cqrs_revision",
        ColumnKind::Integer,
        "i32",
        "`pub cqrs_revision: i32`",
    );
    require(
        cx,
        m,
        "cqrs_updated",
        ColumnKind::Timestamptz,
        "chrono::DateTime<chrono::Utc>",
        "`pub cqrs_updated: chrono::DateTime<chrono::Utc>`",
    );
    for (i, f) in m.fields.iter().enumerate() {
        if f.attrs.skip.get().is_some() {
            continue;
        }
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
        if let Some(span) = f.attrs.json.span()
            && !matches!(f.kind, Some(ColumnKind::Json))
        {
            cx.push(syn::Error::new(
                span,
                "`json` applies to a serde_json::Value field\n\nhelp: remove `#[cqrs(json)]`",
            ));
        }
        if let Some(other) = m.fields[..i]
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
}

fn require(cx: &Ctxt, m: &Model<'_>, column: &str, kind: ColumnKind, ty: &str, example: &str) {
    match m.field_by_column(column) {
        None => cx.error(
            m.ident,
            format!("missing field `{column}`"),
            format!("a cqrs model needs {example}"),
        ),
        Some(f) if f.kind != Some(kind) || f.nullable => cx.error(
            f.ty,
            format!("`{column}` must be `{ty}`"),
            format!("declare it as {example}"),
        ),
        Some(f) => {
            if let Some(span) = f.attrs.skip.span() {
                cx.push(syn::Error::new(
                    span,
                    format!("`{column}` cannot be skipped\n\nhelp: remove `#[cqrs(skip)]`"),
                ));
            }
        }
    }
}

/// Checks of `#[derive(Replica)]`: master-only attributes are mistakes here.
pub fn replica(cx: &Ctxt, m: &Model<'_>) {
    common(cx, m);
    for f in &m.fields {
        if let Some(span) = f.attrs.track.span() {
            cx.push(syn::Error::new(span, "`track` is an attribute of #[derive(Master)]\n\nhelp: a replica receives previous_data; remove `#[cqrs(track)]`"));
        }
    }
    for span in [
        m.attrs.produce.span(),
        m.attrs.filter.span(),
        m.attrs.meta.span(),
        m.attrs.correlation_id.span(),
        m.attrs.delete_custom.span(),
        m.attrs.serializer.span(),
    ]
    .into_iter()
    .flatten()
    {
        cx.push(syn::Error::new(
            span,
            "this is an option of #[derive(Master)]\n\nhelp: remove it from the replica model",
        ));
    }
}

/// Checks of `#[derive(Master)]`.
pub fn master(cx: &Ctxt, m: &Model<'_>) {
    common(cx, m);
    for span in [m.attrs.after_apply.span(), m.attrs.retry.span()]
        .into_iter()
        .flatten()
    {
        cx.push(syn::Error::new(
            span,
            "this is an option of #[derive(Replica)]\n\nhelp: remove it from the master model",
        ));
    }
    for f in &m.fields {
        if let (Some(span), Some(_)) = (f.attrs.track.span(), f.attrs.skip.get()) {
            cx.push(syn::Error::new(span, format!("field `{}` is skipped, so it cannot be tracked\n\nhelp: remove `#[cqrs(track)]` or `#[cqrs(skip)]`", f.ident)));
        }
        if let Some(span) = f.attrs.optional.span() {
            cx.push(syn::Error::new(span, "`optional` is an attribute of #[derive(Replica)]\n\nhelp: a master always sends every field; remove `#[cqrs(optional)]`"));
        }
    }
}
