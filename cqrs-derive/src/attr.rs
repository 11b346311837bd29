//! Parsing of `#[cqrs(...)]` and of the `#[diesel(...)]` keys we read (others are skipped).

use proc_macro2::Span;
use syn::{Attribute, Ident, LitStr, Path, Token, meta::ParseNestedMeta};

use crate::ctxt::Ctxt;

/// A parsed attribute value that remembers where it was written.
pub struct Attr<T> {
    name: &'static str,
    value: Option<(Span, T)>,
}

impl<T> Attr<T> {
    pub fn none(name: &'static str) -> Self {
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
    /// Replica options.
    pub after_apply: Attr<Path>,
    pub retry: Attr<Path>,
    pub table_name: Attr<Path>,
    pub primary_key: Attr<Vec<Ident>>,
}

const CONTAINER_KEYS: &str = "`id = \"...\"`, `crate = \"path\"`, and on masters `produce = false`, `filter = \"fn\"`, `meta = \"fn\"`, `correlation_id = \"fn\"`, `delete_custom = \"fn\"`, `serializer = \"fn\"`, and on replicas `after_apply = \"fn\"`, `retry = \"fn\"`";
const FIELD_KEYS: &str = "`rename = \"wire_name\"`, `skip`, `track`, `optional`, `json`";

impl Container {
    pub fn from_ast(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut c = Container {
            cqrs_id: Attr::none("id"),
            krate: Attr::none("crate"),
            produce: Attr::none("produce"),
            filter: Attr::none("filter"),
            meta: Attr::none("meta"),
            correlation_id: Attr::none("correlation_id"),
            delete_custom: Attr::none("delete_custom"),
            serializer: Attr::none("serializer"),
            after_apply: Attr::none("after_apply"),
            retry: Attr::none("retry"),
            table_name: Attr::none("table_name"),
            primary_key: Attr::none("primary_key"),
        };
        for attr in attrs {
            if attr.path().is_ident("cqrs") {
                let r = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("id") {
                        let s: LitStr = meta.value()?.parse()?;
                        if s.value().is_empty() || s.value().contains(['.', '*', '#']) {
                            cx.error(
                                &s,
                                "a cqrs id must be non-empty and contain no `.`, `*` or `#`",
                                "it becomes an AMQP routing key: use e.g. `#[cqrs(id = \"item\")]`",
                            );
                        }
                        c.cqrs_id.set(cx, meta.path.get_ident().unwrap().span(), s);
                    } else if meta.path.is_ident("crate") {
                        let s: LitStr = meta.value()?.parse()?;
                        c.krate.set(cx, s.span(), s.parse()?);
                    } else if meta.path.is_ident("produce") {
                        let b: syn::LitBool = meta.value()?.parse()?;
                        c.produce.set(cx, b.span(), b.value);
                    } else if let Some(slot) = [
                        ("filter", &mut c.filter),
                        ("meta", &mut c.meta),
                        ("correlation_id", &mut c.correlation_id),
                        ("delete_custom", &mut c.delete_custom),
                        ("serializer", &mut c.serializer),
                        ("after_apply", &mut c.after_apply),
                        ("retry", &mut c.retry),
                    ]
                    .into_iter()
                    .find_map(|(name, slot)| meta.path.is_ident(name).then_some(slot))
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
            } else if attr.path().is_ident("diesel") {
                let r = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("table_name") {
                        let path: Path = meta.value()?.parse()?;
                        c.table_name
                            .set(cx, meta.path.get_ident().unwrap().span(), path);
                    } else if meta.path.is_ident("primary_key") {
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
            rename: Attr::none("rename"),
            skip: Attr::none("skip"),
            track: Attr::none("track"),
            optional: Attr::none("optional"),
            json: Attr::none("json"),
            column_name: Attr::none("column_name"),
        };
        for attr in attrs {
            if attr.path().is_ident("cqrs") {
                let r = attr.parse_nested_meta(|meta| {
                    let span = meta
                        .path
                        .get_ident()
                        .map_or_else(Span::call_site, Ident::span);
                    if meta.path.is_ident("rename") {
                        let s: LitStr = meta.value()?.parse()?;
                        f.rename.set(cx, span, s);
                    } else if meta.path.is_ident("skip") {
                        f.skip.set(cx, span, ());
                    } else if meta.path.is_ident("track") {
                        f.track.set(cx, span, ());
                    } else if meta.path.is_ident("optional") {
                        f.optional.set(cx, span, ());
                    } else if meta.path.is_ident("json") {
                        f.json.set(cx, span, ());
                    } else {
                        unknown(cx, &meta, "field", FIELD_KEYS)?;
                    }
                    Ok(())
                });
                if let Err(e) = r {
                    cx.push(e);
                }
            } else if attr.path().is_ident("diesel") {
                let r = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("column_name") {
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
    let help = match name.as_str() {
        "is_sync_instance" => {
            "django-cqrs's is_sync_instance is `filter = \"path::to::fn\"` here".to_string()
        }
        "tracked_fields" | "tracked" => "mark each tracked field with `#[cqrs(track)]`".to_string(),
        "mapping" => "rename each field with `#[cqrs(rename = \"wire_name\")]`".to_string(),
        _ => format!("valid here: {valid}"),
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
