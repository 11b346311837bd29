//! Code generation from the checked model.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::ast::Model;
use crate::check;
use crate::ctxt::Ctxt;

/// Parse and check; on errors, the compile errors plus a fallback impl (so the user's other uses
/// of the type stay quiet and they see our errors only).
fn checked<'a>(
    input: &'a DeriveInput,
    derive: &str,
    check: fn(&Ctxt, &Model<'_>),
    fallback: fn(&Model<'_>) -> TokenStream,
) -> Result<Model<'a>, TokenStream> {
    let cx = Ctxt::new();
    let Some(model) = Model::from_ast(&cx, input, derive) else {
        return Err(cx
            .check()
            .expect_err("a shape error was reported")
            .into_compile_error());
    };
    check(&cx, &model);
    match cx.check() {
        Ok(()) => Ok(model),
        Err(errors) => {
            let mut out = errors.into_compile_error();
            out.extend(fallback(&model));
            Err(out)
        }
    }
}

/// The `TableSpec` builder expression of the model's replicated (not skipped) columns.
fn table_spec(model: &Model<'_>, with_optional: bool) -> TokenStream {
    let krate = model.krate();
    let cqrs_id = model.attrs.cqrs_id.get().expect("checked");
    let table = model.table().expect("checked");
    let key_column = &model.primary_key()[0];
    let key = model.field_by_column(key_column).expect("checked");
    let key_kind = key.kind.expect("checked").variant();
    let key_wire = &key.wire;
    let columns = model.fields.iter().filter(|f| f.attrs.skip.get().is_none() && f.column != *key_column).map(|f| {
        let (name, wire, kind) = (&f.column, &f.wire, f.kind.expect("checked").variant());
        let nullable = f.nullable.then(|| quote!(.nullable()));
        let optional = (with_optional && (f.nullable || f.attrs.optional.get().is_some())).then(|| quote!(.optional()));
        quote! {
            .column(#krate::__private::ColumnSpec::new(#name, #krate::__private::ColumnType::#kind).wire(#wire) #nullable #optional)
        }
    });
    quote! {
        #krate::__private::TableSpec::new(#cqrs_id, #table)
            .key_column(#krate::__private::ColumnSpec::new(#key_column, #krate::__private::ColumnType::#key_kind).wire(#key_wire))
            #(#columns)*
            .build()
            .expect("the derive checked names and types at compile time")
    }
}

pub fn master(input: &DeriveInput) -> TokenStream {
    let model = match checked(input, "Master", check::master, master_fallback) {
        Ok(m) => m,
        Err(errors) => return errors,
    };
    let krate = model.krate();
    let ident = model.ident;
    let cqrs_id = model.attrs.cqrs_id.get().expect("checked");
    let spec = table_spec(&model, false);
    let tracks = model
        .fields
        .iter()
        .filter(|f| f.attrs.track.get().is_some())
        .map(|f| {
            let column = &f.column;
            quote!(.track(#column).expect("a tracked field is a column"))
        });
    let produce = model.attrs.produce.get().map(|on| quote!(.produce(#on)));
    let capture = (model.attrs.capture_trigger.get() == Some(&true)).then(|| {
        quote! {
            .capture(#krate::__private::CaptureMode::Trigger)
            .expect("the derive refuses hooks with trigger capture")
        }
    });
    let (filter, meta, correlation_id, delete_custom, serializer) = (
        option_path(&model.attrs.filter),
        option_path(&model.attrs.meta),
        option_path(&model.attrs.correlation_id),
        option_path(&model.attrs.delete_custom),
        option_path(&model.attrs.serializer),
    );
    let table_path = model.attrs.table_name.get().expect("checked");
    let key_ty = model
        .field_by_column(&model.primary_key()[0])
        .expect("checked")
        .ty;
    let key_column = quote::format_ident!("{}", model.primary_key()[0]);
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        const _: () = {
            // The model's Diesel table knows its model, so `tx.insert_into(items::table)` needs
            // no type annotation.
            // The model's key must be the table's primary key: captured writes select and return
            // the one, capture keys rows by the other.
            const _: fn(
                <#table_path::table as #krate::__private::diesel::Table>::PrimaryKey,
            ) -> #table_path::#key_column = |key| key;

            #[automatically_derived]
            impl #impl_generics #krate::__private::MasterTable<#ident #ty_generics> for #table_path::table #where_clause {
                type Key = #key_ty;
                type ByKeys = #krate::__private::diesel::dsl::EqAny<
                    <#table_path::table as #krate::__private::diesel::Table>::PrimaryKey,
                    ::std::vec::Vec<#key_ty>,
                >;

                fn by_keys(keys: ::std::vec::Vec<#key_ty>) -> Self::ByKeys {
                    #krate::__private::diesel::ExpressionMethods::eq_any(
                        #krate::__private::diesel::Table::primary_key(&#table_path::table),
                        keys,
                    )
                }
            }

            #[automatically_derived]
            impl #impl_generics #krate::__private::MasterModel for #ident #ty_generics #where_clause {
                const CQRS_ID: &'static str = #cqrs_id;

                fn master_spec() -> #krate::__private::MasterSpec {
                    #krate::__private::MasterSpec::new(#spec)
                        #(#tracks)*
                        #produce
                        .hooks(#krate::__private::MasterHooks {
                            filter: #filter,
                            meta: #meta,
                            correlation_id: #correlation_id,
                            delete_custom: #delete_custom,
                            serializer: #serializer,
                        })
                        #capture
                }
            }
        };
    }
}

fn master_fallback(model: &Model<'_>) -> TokenStream {
    let krate = model.krate();
    let ident = model.ident;
    quote! {
        const _: () = {
            impl #krate::__private::MasterModel for #ident {
                const CQRS_ID: &'static str = "";
                fn master_spec() -> #krate::__private::MasterSpec {
                    ::core::unreachable!("#[derive(Master)] reported errors")
                }
            }
        };
    }
}

pub fn replica(input: &DeriveInput) -> TokenStream {
    let model = match checked(input, "Replica", check::replica, fallback) {
        Ok(m) => m,
        Err(errors) => return errors,
    };
    let krate = model.krate();
    let ident = model.ident;
    let cqrs_id = model.attrs.cqrs_id.get().expect("checked");
    let spec = table_spec(&model, true);
    let only_direct_syncs = model.attrs.only_direct_syncs.get().is_some();
    let hooks = (model.attrs.after_apply.get().is_some()
        || model.attrs.retry.get().is_some()
        || only_direct_syncs)
        .then(|| {
            let (after_apply, retry) = (
                option_path(&model.attrs.after_apply),
                option_path(&model.attrs.retry),
            );
            quote! {
                fn hooks() -> #krate::__private::ReplicaHooks {
                    #krate::__private::ReplicaHooks {
                        after_apply: #after_apply,
                        retry: #retry,
                        only_direct_syncs: #only_direct_syncs,
                    }
                }
            }
        });
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #krate::__private::ReplicaModel for #ident #ty_generics #where_clause {
                const CQRS_ID: &'static str = #cqrs_id;

                fn table_spec() -> #krate::__private::TableSpec {
                    #spec
                }

                #hooks
            }
        };
    }
}

fn fallback(model: &Model<'_>) -> TokenStream {
    let krate = model.krate();
    let ident = model.ident;
    quote! {
        const _: () = {
            impl #krate::__private::ReplicaModel for #ident {
                const CQRS_ID: &'static str = "";
                fn table_spec() -> #krate::__private::TableSpec {
                    ::core::unreachable!("#[derive(Replica)] reported errors")
                }
            }
        };
    }
}

/// `Some(path)` for a hook given by path, `None` otherwise.
fn option_path(h: &crate::attr::Attr<syn::Path>) -> TokenStream {
    match h.get() {
        Some(path) => quote!(::core::option::Option::Some(#path)),
        None => quote!(::core::option::Option::None),
    }
}

#[cfg(test)]
mod tests {
    //! Expansion snapshots, one per derive shape (review changes with `cargo insta review`).

    fn pretty(tokens: proc_macro2::TokenStream) -> String {
        prettyplease::unparse(&syn::parse2(tokens).expect("the expansion parses as a file"))
    }

    #[test]
    fn replica_plain() {
        let input = syn::parse_quote! {
            #[diesel(table_name = items)]
            #[cqrs(id = "item")]
            struct Item { id: i64, name: String, cqrs_revision: i32, cqrs_updated: DateTime<Utc> }
        };
        insta::assert_snapshot!(pretty(super::replica(&input)));
    }

    #[test]
    fn replica_renamed_optional_skipped_with_hooks() {
        let input = syn::parse_quote! {
            #[diesel(table_name = schema::replica_items, primary_key(code))]
            #[cqrs(id = "item", crate = "my_cqrs", after_apply = "audit", retry = "policy", only_direct_syncs)]
            struct Item {
                code: uuid::Uuid,
                #[cqrs(rename = "name")] title: String,
                #[diesel(column_name = qty)] quantity: Option<i32>,
                #[cqrs(optional)] note: String,
                #[cqrs(json)] tags: serde_json::Value,
                #[cqrs(skip)] cache: Vec<u8>,
                cqrs_revision: i32,
                cqrs_updated: chrono::DateTime<chrono::Utc>,
            }
        };
        insta::assert_snapshot!(pretty(super::replica(&input)));
    }

    #[test]
    fn master_tracked_with_options() {
        let input = syn::parse_quote! {
            #[diesel(table_name = items)]
            #[cqrs(id = "item", produce = false, filter = "only_public", meta = "meta_of", serializer = "nested")]
            struct Item {
                id: i64,
                #[cqrs(track)] price: BigDecimal,
                #[cqrs(rename = "owner", track)] owner_id: Option<i64>,
                #[cqrs(skip)] secret: String,
                cqrs_revision: i32,
                cqrs_updated: DateTime<Utc>,
            }
        };
        insta::assert_snapshot!(pretty(super::master(&input)));
    }

    #[test]
    fn errors_come_with_a_fallback_impl() {
        let input = syn::parse_quote! {
            #[diesel(table_name = items)]
            struct Item { id: i64 }
        };
        insta::assert_snapshot!(super::replica(&input).to_string());
    }
}
