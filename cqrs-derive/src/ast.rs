//! A typed model of the derive input: what code generation reads (never raw attributes).

use proc_macro2::Span;
use quote::ToTokens;
use syn::{Data, DeriveInput, Fields, GenericArgument, Ident, LitStr, Path, PathArguments, Type};

use crate::attr;
use crate::ctxt::Ctxt;

/// The column types a field's Rust type maps to (cqrs::value::ColumnType).
///
/// A copy, because cqrs-core depends on this crate and not the other way round. Generated code
/// names the `ColumnType` variant spelt like the `ColumnKind` (`variant`), so the two must list
/// the same names: `tests::column_kind_and_column_type_have_the_same_variants` reads both from
/// source and fails when they drift.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ColumnKind {
    Bool,
    SmallInt,
    Integer,
    BigInt,
    Float,
    Double,
    Text,
    Numeric,
    Date,
    Timestamp,
    Timestamptz,
    Uuid,
    Json,
    Jsonb,
}

impl ColumnKind {
    pub fn variant(self) -> Ident {
        Ident::new(&format!("{self:?}"), Span::call_site())
    }

    pub fn can_be_key(self) -> bool {
        matches!(
            self,
            ColumnKind::SmallInt
                | ColumnKind::Integer
                | ColumnKind::BigInt
                | ColumnKind::Text
                | ColumnKind::Uuid
        )
    }
}

pub struct Model<'a> {
    pub ident: &'a Ident,
    pub attrs: attr::Container,
    pub fields: Vec<Field<'a>>,
}

pub struct Field<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
    /// Column name (`#[diesel(column_name)]` or the field name).
    pub column: String,
    /// Key in instance_data (`#[cqrs(rename)]` or the column name).
    pub wire: String,
    pub attrs: attr::Field,
    /// `None` for a type we cannot map.
    pub kind: Option<ColumnKind>,
    pub nullable: bool,
}

impl<'a> Model<'a> {
    /// Parse `input`; shape errors (enum, tuple struct) are reported and give `None`.
    pub fn from_ast(cx: &Ctxt, input: &'a DeriveInput, derive: &str) -> Option<Model<'a>> {
        let attrs = attr::Container::from_ast(cx, &input.attrs);
        let fields = match &input.data {
            Data::Struct(s) => match &s.fields {
                Fields::Named(named) => &named.named,
                Fields::Unnamed(_) | Fields::Unit => {
                    cx.error(
                        &input.ident,
                        format!("#[derive({derive})] needs a struct with named fields"),
                        "name the fields as the table's columns: `struct Item { id: i64, .. }`",
                    );
                    return None;
                }
            },
            Data::Enum(e) => {
                cx.error(
                    e.enum_token,
                    format!("#[derive({derive})] cannot be used on an enum"),
                    "derive it on the Diesel model struct of the table",
                );
                return None;
            }
            Data::Union(u) => {
                cx.error(
                    u.union_token,
                    format!("#[derive({derive})] cannot be used on a union"),
                    "derive it on the Diesel model struct of the table",
                );
                return None;
            }
        };
        let fields = fields
            .iter()
            .map(|f| {
                let ident = f.ident.as_ref().expect("named field");
                let fattrs = attr::Field::from_ast(cx, &f.attrs);
                let column = fattrs
                    .column_name
                    .get()
                    .map_or_else(|| ident.unraw_string(), |c| c.unraw_string());
                let wire = fattrs
                    .rename
                    .get()
                    .map_or_else(|| column.clone(), LitStr::value);
                let (inner, nullable) = option_inner(&f.ty);
                let mut kind = classify(inner);
                if fattrs.json.get().is_some() && kind == Some(ColumnKind::Jsonb) {
                    kind = Some(ColumnKind::Json);
                }
                Field {
                    ident,
                    ty: &f.ty,
                    column,
                    wire,
                    attrs: fattrs,
                    kind,
                    nullable,
                }
            })
            .collect();
        Some(Model {
            ident: &input.ident,
            attrs,
            fields,
        })
    }

    /// The primary key column names (Diesel's default is `id`).
    pub fn primary_key(&self) -> Vec<String> {
        match self.attrs.primary_key.get() {
            Some(keys) => keys.iter().map(|k| k.unraw_string()).collect(),
            None => vec!["id".to_string()],
        }
    }

    pub fn field_by_column(&self, column: &str) -> Option<&Field<'a>> {
        self.fields.iter().find(|f| f.column == column)
    }

    /// The path generated code reaches the support crate by.
    pub fn krate(&self) -> proc_macro2::TokenStream {
        match self.attrs.krate.get() {
            Some(p) => p.to_token_stream(),
            None => quote::quote!(::cqrs),
        }
    }

    /// The table name: the last segment of `#[diesel(table_name = ..)]`.
    pub fn table(&self) -> Option<String> {
        self.attrs
            .table_name
            .get()
            .and_then(|p: &Path| p.segments.last())
            .map(|s| s.ident.unraw_string())
    }
}

trait Unraw {
    fn unraw_string(&self) -> String;
}

impl Unraw for Ident {
    fn unraw_string(&self) -> String {
        let s = self.to_string();
        s.strip_prefix("r#").map_or(s.clone(), str::to_string)
    }
}

/// `Option<T>` -> (`T`, true); anything else -> (itself, false).
fn option_inner(ty: &Type) -> (&Type, bool) {
    if let Some(args) = last_segment_args(ty, "Option")
        && let Some(GenericArgument::Type(inner)) = args.first()
    {
        return (inner, true);
    }
    (ty, false)
}

fn last_segment_args<'t>(ty: &'t Type, name: &str) -> Option<Vec<&'t GenericArgument>> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    if seg.ident != name {
        return None;
    }
    match &seg.arguments {
        PathArguments::AngleBracketed(a) => Some(a.args.iter().collect()),
        _ => None,
    }
}

/// Map a Rust type to its column type by its last path segment.
pub fn classify(ty: &Type) -> Option<ColumnKind> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    Some(match seg.ident.to_string().as_str() {
        "bool" => ColumnKind::Bool,
        "i16" => ColumnKind::SmallInt,
        "i32" => ColumnKind::Integer,
        "i64" => ColumnKind::BigInt,
        "f32" => ColumnKind::Float,
        "f64" => ColumnKind::Double,
        "String" => ColumnKind::Text,
        "BigDecimal" => ColumnKind::Numeric,
        "NaiveDate" => ColumnKind::Date,
        "NaiveDateTime" => ColumnKind::Timestamp,
        "DateTime" => {
            let args = last_segment_args(ty, "DateTime")?;
            match args.first() {
                Some(GenericArgument::Type(Type::Path(tz)))
                    if tz.path.segments.last()?.ident == "Utc" =>
                {
                    ColumnKind::Timestamptz
                }
                _ => return None,
            }
        }
        "Uuid" => ColumnKind::Uuid,
        "Value" => ColumnKind::Jsonb,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Top-level items only: both enums are declared at the top level of their files, and a
    /// missing enum is an error rather than an empty list that would compare equal to nothing.
    fn enum_variants(file: &Path, name: &str) -> BTreeSet<String> {
        let src = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let parsed = syn::parse_file(&src)
            .unwrap_or_else(|e| panic!("cannot parse {}: {e}", file.display()));
        parsed
            .items
            .iter()
            .find_map(|item| match item {
                syn::Item::Enum(e) if e.ident == name => {
                    Some(e.variants.iter().map(|v| v.ident.to_string()).collect())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no `enum {name}` in {}", file.display()))
    }

    /// Read from source on both sides (not `ColumnKind` as compiled): cqrs-core cannot be a
    /// dependency here, and a list kept beside `ColumnKind` could itself drift from the enum.
    #[test]
    fn column_kind_and_column_type_have_the_same_variants() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let kinds = enum_variants(&root.join("src/ast.rs"), "ColumnKind");
        let types = enum_variants(&root.join("../cqrs-core/src/value.rs"), "ColumnType");
        let only_kind: Vec<_> = kinds.difference(&types).collect();
        let only_type: Vec<_> = types.difference(&kinds).collect();
        assert!(
            only_kind.is_empty() && only_type.is_empty(),
            "ColumnKind (cqrs-derive/src/ast.rs) must mirror ColumnType (cqrs-core/src/value.rs) \
             variant for variant\n  only in ColumnKind: {only_kind:?}\n  only in ColumnType: {only_type:?}"
        );
    }
}
