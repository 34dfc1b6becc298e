//! Code generation.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;

use crate::ast::{Field, Input};

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
/// child field whose type mentions a type parameter (`inner: L` gives
/// `L: Module`). Fields of concrete types get no bound: a type that is not
/// a module is reported at the field by the generated calls, which are
/// spanned there.
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
    let params: Vec<String> = input
        .generics
        .type_params()
        .map(|p| p.ident.to_string())
        .collect();
    let field_bounds = input
        .children()
        .filter(|f| mentions_any(f.ty.to_token_stream(), &params))
        .map(|f| {
            let ty = f.ty;
            quote_spanned!(ty.span()=> #ty: #bound,)
        });
    quote!(where #existing #(#field_bounds)*)
}

fn mentions_any(tokens: TokenStream, params: &[String]) -> bool {
    tokens.into_iter().any(|tt| match tt {
        proc_macro2::TokenTree::Ident(ident) => params.iter().any(|p| ident == p),
        proc_macro2::TokenTree::Group(group) => mentions_any(group.stream(), params),
        _ => false,
    })
}

fn expand(input: &Input<'_>) -> TokenStream {
    let ident = input.ident;
    let name = ident.unraw().to_string();
    let (impl_generics, ty_generics, _) = input.generics.split_for_impl();
    let module_where = where_clause(input, &quote!(::nncore::Module));

    let children: Vec<_> = input.children().collect();
    let names: Vec<String> = children
        .iter()
        .map(|f| f.ident.unraw().to_string())
        .collect();
    // Spanned on the field's type, so that a field that is not a module is
    // reported there.
    let visit = children.iter().zip(&names).map(|(f, name)| {
        let (ident, ty) = (f.ident, f.ty);
        quote_spanned!(ty.span()=> __f(#name, ::nncore::__private::Child::as_module(&self.#ident));)
    });
    let visit_mut = children.iter().zip(&names).map(|(f, name)| {
        let (ident, ty) = (f.ident, f.ty);
        quote_spanned!(ty.span()=> __f(#name, ::nncore::__private::Child::as_module_mut(&mut self.#ident));)
    });

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
                #( #visit )*
            }

            fn visit_children_mut(
                &mut self,
                __f: &mut dyn ::core::ops::FnMut(&str, &mut dyn ::nncore::Module),
            ) {
                #( #visit_mut )*
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
        forward_impl(input, &name, &children)
    };

    quote! {
        #module_impl
        #forward_impl
    }
}

fn forward_impl(input: &Input<'_>, name: &str, children: &[&Field<'_>]) -> TokenStream {
    let ident = input.ident;
    let (impl_generics, ty_generics, _) = input.generics.split_for_impl();
    let forward_where = where_clause(input, &quote!(::nncore::Forward));

    // One call of `method` on a child, spanned on the child's type so that
    // a child without a forward pass is reported at the field, with the
    // error given the child's place in the path.
    let call = |f: &Field<'_>, method: &str, arg: TokenStream| {
        let (ident, ty) = (f.ident, f.ty);
        let field = ident.unraw().to_string();
        let method = syn::Ident::new(method, ty.span());
        let mutability = if method == "forward_train" || method == "backward" {
            quote!(mut)
        } else {
            TokenStream::new()
        };
        quote_spanned! {ty.span()=>
            ::nncore::Forward::#method(&#mutability self.#ident, #arg)
                .map_err(|__e| __e.within(#field, #name))?
        }
    };

    let (forward, forward_owned, forward_train, backward) = match children.split_first() {
        None => (
            quote!(::core::result::Result::Ok(::core::clone::Clone::clone(__x))),
            quote!(::core::result::Result::Ok(__x)),
            quote!(::core::result::Result::Ok(__x)),
            quote!(::core::result::Result::Ok(__g)),
        ),
        Some((first, rest)) => {
            let first_call = call(first, "forward", quote!(__x));
            let rest_calls = rest.iter().map(|f| call(f, "forward_owned", quote!(__x)));
            let owned_calls = children
                .iter()
                .map(|f| call(f, "forward_owned", quote!(__x)));
            let train_calls = children
                .iter()
                .map(|f| call(f, "forward_train", quote!(__x)));
            let back_calls = children
                .iter()
                .rev()
                .map(|f| call(f, "backward", quote!(__g)));
            (
                quote! {
                    let __x = #first_call;
                    #( let __x = #rest_calls; )*
                    ::core::result::Result::Ok(__x)
                },
                quote! {
                    #( let __x = #owned_calls; )*
                    ::core::result::Result::Ok(__x)
                },
                quote! {
                    #( let __x = #train_calls; )*
                    ::core::result::Result::Ok(__x)
                },
                quote! {
                    #( let __g = #back_calls; )*
                    ::core::result::Result::Ok(__g)
                },
            )
        }
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
