//! Code generation from the checked model.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::ast::Model;
use crate::check;
use crate::ctxt::Ctxt;

pub fn replica(input: &DeriveInput) -> syn::Result<TokenStream> {
    let cx = Ctxt::new();
    let Some(model) = Model::from_ast(&cx, input, "Replica") else {
        cx.check()?;
        unreachable!("a shape error was reported");
    };
    check::replica(&cx, &model);
    if let Err(errors) = cx.check() {
        // A fallback impl keeps the user's other uses of the type quiet: they see our errors only.
        let mut out = errors.into_compile_error();
        out.extend(fallback(&model));
        return Ok(out);
    }
    let krate = model.krate();
    let ident = model.ident;
    let cqrs_id = model.attrs.cqrs_id.get().expect("checked");
    let table = model.table().expect("checked");
    let key_column = &model.primary_key()[0];
    let key = model.field_by_column(key_column).expect("checked");
    let key_kind = key.kind.expect("checked").variant();
    let key_wire = &key.wire;
    let columns = model.fields.iter().filter(|f| f.attrs.skip.get().is_none() && f.column != *key_column).map(|f| {
        let (name, wire, kind) = (&f.column, &f.wire, f.kind.expect("checked").variant());
        let nullable = f.nullable.then(|| quote!(.nullable()));
        let optional = (f.nullable || f.attrs.optional.get().is_some()).then(|| quote!(.optional()));
        quote! {
            .column(#krate::__private::ColumnSpec::new(#name, #krate::__private::ColumnType::#kind).wire(#wire) #nullable #optional)
        }
    });
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #krate::__private::ReplicaModel for #ident #ty_generics #where_clause {
                const CQRS_ID: &'static str = #cqrs_id;

                fn table_spec() -> #krate::__private::TableSpec {
                    #krate::__private::TableSpec::new(#cqrs_id, #table)
                        .key_column(#krate::__private::ColumnSpec::new(#key_column, #krate::__private::ColumnType::#key_kind).wire(#key_wire))
                        #(#columns)*
                        .build()
                        .expect("#[derive(Replica)] checked names and types at compile time")
                }
            }
        };
    })
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
