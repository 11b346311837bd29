//! Parsing of `#[cqrs(...)]` and of the `#[diesel(...)]` keys we read (others are skipped).

use proc_macro2::Span;
use syn::{Attribute, Ident, LitStr, Path, Token, meta::ParseNestedMeta};

use crate::ctxt::Ctxt;
use crate::symbol::{
    AFTER_APPLY, CAPTURE, COLUMN_NAME, CORRELATION_ID, CQRS, CRATE, DELETE_CUSTOM, DIESEL, FILTER,
    ID, IS_SYNC_INSTANCE, JSON, MAPPING, META, ONLY_DIRECT_SYNCS, OPTIONAL, PRIMARY_KEY, PRODUCE,
    RENAME, RETRY, SERIALIZER, SKIP, Symbol, TABLE_NAME, TRACK, TRACKED, TRACKED_FIELDS,
};

/// A parsed attribute value that remembers where it was written.
pub struct Attr<T> {
    name: Symbol,
    value: Option<(Span, T)>,
}

impl<T> Attr<T> {
    pub fn none(name: Symbol) -> Self {
        Attr { name, value: None }
    }

    /// Set once; a second occurrence is a "duplicate attribute" error spanned on it.
    pub fn set(&mut self, cx: &Ctxt, span: Span, value: T) {
        if self.value.is_some() {
            cx.push(syn::Error::new(
                span,
                format!(
                    "duplicate cqrs attribute `{}`\n\nhelp: remove one of them",
                    self.name
                ),
            ));
        } else {
            self.value = Some((span, value));
        }
    }

    pub fn get(&self) -> Option<&T> {
        self.value.as_ref().map(|(_, v)| v)
    }

    pub fn span(&self) -> Option<Span> {
        self.value.as_ref().map(|(s, _)| *s)
    }
}

/// Container attributes.
pub struct Container {
    pub cqrs_id: Attr<LitStr>,
    pub krate: Attr<Path>,
    /// Master options.
    pub produce: Attr<bool>,
    pub filter: Attr<Path>,
    pub meta: Attr<Path>,
    pub correlation_id: Attr<Path>,
    pub delete_custom: Attr<Path>,
    pub serializer: Attr<Path>,
    /// `capture = "trigger"`: true; `"atomic"`: false.
    pub capture_trigger: Attr<bool>,
    /// Replica options.
    pub after_apply: Attr<Path>,
    pub retry: Attr<Path>,
    pub only_direct_syncs: Attr<()>,
    pub table_name: Attr<Path>,
    pub primary_key: Attr<Vec<Ident>>,
}

const CONTAINER_KEYS: &str = "`id = \"...\"`, `crate = \"path\"`, and on masters `produce = false`, `filter = \"fn\"`, `meta = \"fn\"`, `correlation_id = \"fn\"`, `delete_custom = \"fn\"`, `serializer = \"fn\"`, `capture = \"atomic\" | \"trigger\"`, and on replicas `after_apply = \"fn\"`, `retry = \"fn\"`, `only_direct_syncs`";
const FIELD_KEYS: &str = "`rename = \"wire_name\"`, `skip`, `track`, `optional`, `json`";

impl Container {
    pub fn from_ast(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut c = Container {
            cqrs_id: Attr::none(ID),
            krate: Attr::none(CRATE),
            produce: Attr::none(PRODUCE),
            filter: Attr::none(FILTER),
            meta: Attr::none(META),
            correlation_id: Attr::none(CORRELATION_ID),
            delete_custom: Attr::none(DELETE_CUSTOM),
            serializer: Attr::none(SERIALIZER),
            capture_trigger: Attr::none(CAPTURE),
            after_apply: Attr::none(AFTER_APPLY),
            retry: Attr::none(RETRY),
            only_direct_syncs: Attr::none(ONLY_DIRECT_SYNCS),
            table_name: Attr::none(TABLE_NAME),
            primary_key: Attr::none(PRIMARY_KEY),
        };
        for attr in attrs {
            if attr.path() == CQRS {
                let r = attr.parse_nested_meta(|meta| {
                    if meta.path == ID {
                        let s: LitStr = meta.value()?.parse()?;
                        if s.value().is_empty() || s.value().contains(['.', '*', '#']) {
                            cx.error(
                                &s,
                                "a cqrs id must be non-empty and contain no `.`, `*` or `#`",
                                "it becomes an AMQP routing key: use e.g. `#[cqrs(id = \"item\")]`",
                            );
                        }
                        c.cqrs_id.set(cx, meta.path.get_ident().unwrap().span(), s);
                    } else if meta.path == CRATE {
                        let s: LitStr = meta.value()?.parse()?;
                        c.krate.set(cx, s.span(), s.parse()?);
                    } else if meta.path == ONLY_DIRECT_SYNCS {
                        // A bare flag, or `= true` / `= false` as django-cqrs's setting reads.
                        let on = if meta.input.peek(Token![=]) {
                            meta.value()?.parse::<syn::LitBool>()?.value
                        } else {
                            true
                        };
                        if on {
                            c.only_direct_syncs
                                .set(cx, meta.path.get_ident().unwrap().span(), ());
                        }
                    } else if meta.path == CAPTURE {
                        let s: LitStr = meta.value()?.parse()?;
                        match s.value().as_str() {
                            "atomic" => c.capture_trigger.set(cx, s.span(), false),
                            "trigger" => c.capture_trigger.set(cx, s.span(), true),
                            _ => cx.error(
                                &s,
                                "unknown capture mode",
                                "use `capture = \"atomic\"` (the default: writes through `cqrs::atomic`) or `capture = \"trigger\"` (PostgreSQL triggers capture every write)",
                            ),
                        }
                    } else if meta.path == PRODUCE {
                        let b: syn::LitBool = meta.value()?.parse()?;
                        c.produce.set(cx, b.span(), b.value);
                    } else if let Some(slot) = [
                        (FILTER, &mut c.filter),
                        (META, &mut c.meta),
                        (CORRELATION_ID, &mut c.correlation_id),
                        (DELETE_CUSTOM, &mut c.delete_custom),
                        (SERIALIZER, &mut c.serializer),
                        (AFTER_APPLY, &mut c.after_apply),
                        (RETRY, &mut c.retry),
                    ]
                    .into_iter()
                    .find_map(|(name, slot)| (meta.path == name).then_some(slot))
                    {
                        let s: LitStr = meta.value()?.parse()?;
                        slot.set(cx, s.span(), s.parse()?);
                    } else {
                        unknown(cx, &meta, "struct", CONTAINER_KEYS)?;
                    }
                    Ok(())
                });
                if let Err(e) = r {
                    cx.push(e);
                }
            } else if attr.path() == DIESEL {
                let r = attr.parse_nested_meta(|meta| {
                    if meta.path == TABLE_NAME {
                        let path: Path = meta.value()?.parse()?;
                        c.table_name
                            .set(cx, meta.path.get_ident().unwrap().span(), path);
                    } else if meta.path == PRIMARY_KEY {
                        let content;
                        syn::parenthesized!(content in meta.input);
                        let keys = content.parse_terminated(Ident::parse_any, Token![,])?;
                        c.primary_key.set(
                            cx,
                            meta.path.get_ident().unwrap().span(),
                            keys.into_iter().collect(),
                        );
                    } else {
                        skip_diesel(&meta)?;
                    }
                    Ok(())
                });
                if let Err(e) = r {
                    cx.push(e);
                }
            }
        }
        c
    }
}

/// Field attributes.
pub struct Field {
    pub rename: Attr<LitStr>,
    pub skip: Attr<()>,
    pub track: Attr<()>,
    pub optional: Attr<()>,
    pub json: Attr<()>,
    pub column_name: Attr<Ident>,
}

impl Field {
    pub fn from_ast(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut f = Field {
            rename: Attr::none(RENAME),
            skip: Attr::none(SKIP),
            track: Attr::none(TRACK),
            optional: Attr::none(OPTIONAL),
            json: Attr::none(JSON),
            column_name: Attr::none(COLUMN_NAME),
        };
        for attr in attrs {
            if attr.path() == CQRS {
                let r = attr.parse_nested_meta(|meta| {
                    let span = meta
                        .path
                        .get_ident()
                        .map_or_else(Span::call_site, Ident::span);
                    if meta.path == RENAME {
                        let s: LitStr = meta.value()?.parse()?;
                        f.rename.set(cx, span, s);
                    } else if meta.path == SKIP {
                        f.skip.set(cx, span, ());
                    } else if meta.path == TRACK {
                        f.track.set(cx, span, ());
                    } else if meta.path == OPTIONAL {
                        f.optional.set(cx, span, ());
                    } else if meta.path == JSON {
                        f.json.set(cx, span, ());
                    } else {
                        unknown(cx, &meta, "field", FIELD_KEYS)?;
                    }
                    Ok(())
                });
                if let Err(e) = r {
                    cx.push(e);
                }
            } else if attr.path() == DIESEL {
                let r = attr.parse_nested_meta(|meta| {
                    if meta.path == COLUMN_NAME {
                        let id: Ident = meta.value()?.call(Ident::parse_any)?;
                        f.column_name.set(cx, id.span(), id);
                    } else {
                        skip_diesel(&meta)?;
                    }
                    Ok(())
                });
                if let Err(e) = r {
                    cx.push(e);
                }
            }
        }
        f
    }
}

use syn::ext::IdentExt;

fn unknown(cx: &Ctxt, meta: &ParseNestedMeta<'_>, on: &str, valid: &str) -> syn::Result<()> {
    let name = meta
        .path
        .get_ident()
        .map_or_else(|| "?".to_string(), ToString::to_string);
    let help = if meta.path == IS_SYNC_INSTANCE {
        "django-cqrs's is_sync_instance is `filter = \"path::to::fn\"` here".to_string()
    } else if meta.path == TRACKED_FIELDS || meta.path == TRACKED {
        "mark each tracked field with `#[cqrs(track)]`".to_string()
    } else if meta.path == MAPPING {
        "rename each field with `#[cqrs(rename = \"wire_name\")]`".to_string()
    } else {
        format!("valid here: {valid}")
    };
    cx.error(
        &meta.path,
        format!("unknown cqrs {on} attribute `{name}`"),
        help,
    );
    skip_diesel(meta)
}

/// Skip the value of a nested meta we do not read: `key = expr`, `key(...)` or a bare `key`.
fn skip_diesel(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        content.parse::<proc_macro2::TokenStream>()?;
    }
    Ok(())
}
