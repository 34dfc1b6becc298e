//! Code generation.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;

use crate::ast::Input;

pub(crate) fn derive(input: &syn::DeriveInput) -> TokenStream {
    match Input::from_syn(input) {
        Ok(parsed) => expand(&parsed),
        Err(err) => {
            let mut out = err.into_compile_error();
            out.extend(fallback(input));
            out
        }
    }
}

/// Impls emitted beside the errors so that one mistake does not cascade
/// into "`X` is not a module" everywhere the struct is used.
fn fallback(input: &syn::DeriveInput) -> TokenStream {
    let ident = &input.ident;
    let name = ident.unraw().to_string();
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics ::nncore::Module for #ident #ty_generics #where_clause {
            fn name(&self) -> &str { #name }
        }
        #[automatically_derived]
        impl #impl_generics ::nncore::Forward for #ident #ty_generics #where_clause {
            fn forward(&self, _: &::nncore::Tensor) -> ::nncore::Result<::nncore::Tensor> {
                ::core::unimplemented!()
            }
        }
        #[automatically_derived]
        impl #impl_generics ::core::fmt::Display for #ident #ty_generics #where_clause {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::nncore::Module::fmt_repr(self, f)
            }
        }
    }
}

/// `where` clauses: the original ones plus `FieldType: Trait` for every
/// child field (a "perfect derive"), each spanned on the field's type so
/// that a field that is not a module is reported there.
fn where_clause(input: &Input<'_>, bound: &TokenStream) -> TokenStream {
    let existing = input
        .generics
        .where_clause
        .as_ref()
        .map(|w| {
            let preds = w.predicates.iter();
            quote!(#(#preds,)*)
        })
        .unwrap_or_default();
    let field_bounds = input.children().map(|f| {
        let ty = f.ty;
        quote_spanned!(ty.span()=> #ty: #bound,)
    });
    quote!(where #existing #(#field_bounds)*)
}

fn expand(input: &Input<'_>) -> TokenStream {
    let ident = input.ident;
    let name = ident.unraw().to_string();
    let (impl_generics, ty_generics, _) = input.generics.split_for_impl();
    let module_where = where_clause(input, &quote!(::nncore::Module));

    let children: Vec<_> = input.children().collect();
    let idents: Vec<_> = children.iter().map(|f| f.ident).collect();
    let names: Vec<String> = children
        .iter()
        .map(|f| f.ident.unraw().to_string())
        .collect();

    let extra_repr = input.attrs.extra_repr.as_ref().map(|path| {
        quote! {
            fn extra_repr(&self) -> ::nncore::__private::String {
                #path(self)
            }
        }
    });

    let module_impl = quote! {
        #[automatically_derived]
        impl #impl_generics ::nncore::Module for #ident #ty_generics #module_where {
            fn name(&self) -> &str {
                #name
            }

            #extra_repr

            fn visit_children<'__a>(
                &'__a self,
                __f: &mut dyn ::core::ops::FnMut(&str, &'__a dyn ::nncore::Module),
            ) {
                #( __f(#names, &self.#idents); )*
            }

            fn visit_children_mut(
                &mut self,
                __f: &mut dyn ::core::ops::FnMut(&str, &mut dyn ::nncore::Module),
            ) {
                #( __f(#names, &mut self.#idents); )*
            }
        }

        #[automatically_derived]
        impl #impl_generics ::core::fmt::Display for #ident #ty_generics #module_where {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::nncore::Module::fmt_repr(self, f)
            }
        }
    };

    let forward_impl = if input.attrs.custom_forward {
        TokenStream::new()
    } else {
        forward_impl(input, &name, &idents, &names)
    };

    quote! {
        #module_impl
        #forward_impl
    }
}

fn forward_impl(
    input: &Input<'_>,
    name: &str,
    idents: &[&syn::Ident],
    names: &[String],
) -> TokenStream {
    let ident = input.ident;
    let (impl_generics, ty_generics, _) = input.generics.split_for_impl();
    let forward_where = where_clause(input, &quote!(::nncore::Forward));

    let wrap = |field: &str| quote!(.map_err(|__e| __e.within(#field, #name))?);

    let (forward, forward_owned, forward_train, backward) = if idents.is_empty() {
        (
            quote!(::core::result::Result::Ok(::core::clone::Clone::clone(__x))),
            quote!(::core::result::Result::Ok(__x)),
            quote!(::core::result::Result::Ok(__x)),
            quote!(::core::result::Result::Ok(__g)),
        )
    } else {
        let first = idents[0];
        let first_wrap = wrap(&names[0]);
        let rest_idents = &idents[1..];
        let rest_wraps: Vec<_> = names[1..].iter().map(|n| wrap(n)).collect();
        let all_wraps: Vec<_> = names.iter().map(|n| wrap(n)).collect();
        let rev_idents = idents.iter().rev();
        let rev_wraps = all_wraps.iter().rev();
        (
            quote! {
                let __x = ::nncore::Forward::forward(&self.#first, __x) #first_wrap;
                #( let __x = ::nncore::Forward::forward_owned(&self.#rest_idents, __x) #rest_wraps; )*
                ::core::result::Result::Ok(__x)
            },
            quote! {
                #( let __x = ::nncore::Forward::forward_owned(&self.#idents, __x) #all_wraps; )*
                ::core::result::Result::Ok(__x)
            },
            quote! {
                #( let __x = ::nncore::Forward::forward_train(&mut self.#idents, __x) #all_wraps; )*
                ::core::result::Result::Ok(__x)
            },
            quote! {
                #( let __g = ::nncore::Forward::backward(&mut self.#rev_idents, __g) #rev_wraps; )*
                ::core::result::Result::Ok(__g)
            },
        )
    };

    quote! {
        #[automatically_derived]
        impl #impl_generics ::nncore::Forward for #ident #ty_generics #forward_where {
            fn forward(&self, __x: &::nncore::Tensor) -> ::nncore::Result<::nncore::Tensor> {
                #forward
            }

            fn forward_owned(&self, __x: ::nncore::Tensor) -> ::nncore::Result<::nncore::Tensor> {
                #forward_owned
            }

            fn forward_train<'__a>(
                &'__a mut self,
                __x: &'__a ::nncore::Tensor,
            ) -> ::nncore::Result<&'__a ::nncore::Tensor> {
                #forward_train
            }

            fn backward<'__a>(
                &'__a mut self,
                __g: &'__a ::nncore::Tensor,
            ) -> ::nncore::Result<&'__a ::nncore::Tensor> {
                #backward
            }
        }
    }
}
