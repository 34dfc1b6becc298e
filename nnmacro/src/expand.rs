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

/// `where` clauses: the original ones plus `ModuleType: Trait` for every
/// child whose type mentions a type parameter (`inner: L` gives
/// `L: Module`). Children of concrete types get no bound: a type that is
/// not a module is reported at the field by the generated calls, which are
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
        .filter(|f| mentions_any(f.module_ty().to_token_stream(), &params))
        .map(|f| {
            let ty = f.module_ty();
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

/// `body` applied to the child module `__m` (a reference, `mut` or not),
/// skipped with `otherwise` when an `Option` field is `None`.
fn with_child(
    f: &Field<'_>,
    mutable: bool,
    body: TokenStream,
    otherwise: TokenStream,
) -> TokenStream {
    let member = &f.member;
    let span = f.module_ty().span();
    let mutability = if mutable {
        quote!(mut)
    } else {
        TokenStream::new()
    };
    if f.optional.is_some() {
        quote_spanned! {span=>
            match &#mutability self.#member {
                ::core::option::Option::Some(__m) => { #body }
                ::core::option::Option::None => { #otherwise }
            }
        }
    } else {
        quote_spanned! {span=>
            {
                let __m = &#mutability self.#member;
                #body
            }
        }
    }
}

fn expand(input: &Input<'_>) -> TokenStream {
    let ident = input.ident;
    let name = ident.unraw().to_string();
    let (impl_generics, ty_generics, _) = input.generics.split_for_impl();
    let module_where = where_clause(input, &quote!(::nncore::Module));
    let children: Vec<&Field<'_>> = input.children().collect();

    // Spanned on the field's type, so that a field that is not a module is
    // reported there.
    let visit = children.iter().map(|f| {
        let child = &f.name;
        let span = f.module_ty().span();
        let call = quote_spanned!(span=> __f(#child, ::nncore::__private::Child::as_module(__m)););
        with_child(f, false, call, TokenStream::new())
    });
    let visit_mut = children.iter().map(|f| {
        let child = &f.name;
        let span = f.module_ty().span();
        let call =
            quote_spanned!(span=> __f(#child, ::nncore::__private::Child::as_module_mut(__m)););
        with_child(f, true, call, TokenStream::new())
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

    let forward_impl = if input.attrs.custom_forward || input.tape().is_some() {
        TokenStream::new()
    } else {
        forward_impl(input, &name, &children)
    };
    let tape_impl = input.tape().map(|f| {
        let member = &f.member;
        let (_, _, where_clause) = input.generics.split_for_impl();
        quote! {
            #[automatically_derived]
            impl #impl_generics ::nncore::__private::HasTape for #ident #ty_generics #where_clause {
                fn tape(&self) -> &::nncore::Tape {
                    &self.#member
                }
                fn tape_mut(&mut self) -> &mut ::nncore::Tape {
                    &mut self.#member
                }
            }
        }
    });

    quote! {
        #module_impl
        #forward_impl
        #tape_impl
    }
}

fn forward_impl(input: &Input<'_>, name: &str, children: &[&Field<'_>]) -> TokenStream {
    let ident = input.ident;
    let (impl_generics, ty_generics, _) = input.generics.split_for_impl();
    let forward_where = where_clause(input, &quote!(::nncore::Forward));

    // Each step is spanned on the child's type, so that a child without a
    // forward pass is reported at the field, and gives errors the child's
    // place in the module path.
    let step = |f: &Field<'_>, mutable: bool, call: TokenStream, var: TokenStream| {
        let child = &f.name;
        let span = f.module_ty().span();
        let body = quote_spanned! {span=>
            #call.map_err(|__e| __e.within(#child, #name))?
        };
        let step = with_child(f, mutable, body, var.clone());
        quote!(let #var = #step;)
    };

    let flow_steps: Vec<_> = children
        .iter()
        .map(|f| {
            let span = f.module_ty().span();
            step(
                f,
                false,
                quote_spanned!(span=> ::nncore::__private::ChildForward::flow(__m, __x)),
                quote!(__x),
            )
        })
        .collect();
    let step_intos = children.iter().map(|f| {
        let child = &f.name;
        let span = f.module_ty().span();
        let body = quote_spanned! {span=>
            ::nncore::__private::ChildForward::step_into(__m, __x, &mut __cur, __ws)
                .map_err(|__e| __e.within(#child, #name))?
        };
        let step = with_child(f, false, body, TokenStream::new());
        quote!(#step;)
    });
    let train_steps = children.iter().map(|f| {
        let span = f.module_ty().span();
        step(
            f,
            true,
            quote_spanned!(span=> ::nncore::__private::ChildForward::train(__m, __x)),
            quote!(__x),
        )
    });
    let back_steps = children.iter().rev().map(|f| {
        let span = f.module_ty().span();
        step(
            f,
            true,
            quote_spanned!(span=> ::nncore::__private::ChildForward::back(__m, __g)),
            quote!(__g),
        )
    });
    // backward_params: the children after the first pass gradients on;
    // the first only accumulates its parameters' gradients.
    let params_steps = children.iter().skip(1).rev().map(|f| {
        let span = f.module_ty().span();
        step(
            f,
            true,
            quote_spanned!(span=> ::nncore::__private::ChildForward::back(__m, __g)),
            quote!(__g),
        )
    });
    let params_first = children.first().map(|f| {
        let child = &f.name;
        let span = f.module_ty().span();
        let body = quote_spanned! {span=>
            ::nncore::__private::ChildForward::back_params(__m, __g)
                .map_err(|__e| __e.within(#child, #name))?
        };
        with_child(f, true, body, TokenStream::new())
    });
    let traced_steps = children.iter().map(|f| {
        let child = &f.name;
        let span = f.module_ty().span();
        let call = quote_spanned! {span=>
            __trace
                .child(#child, |__t| ::nncore::__private::ChildForward::traced(__m, __x.as_tensor(), __t))
                .map(::nncore::__private::Flow::Owned)
        };
        step(f, false, call, quote!(__x))
    });

    quote! {
        #[automatically_derived]
        impl #impl_generics ::nncore::Forward for #ident #ty_generics #forward_where {
            fn forward(&self, __x: &::nncore::Tensor) -> ::nncore::Result<::nncore::Tensor> {
                let __x = ::nncore::__private::Flow::Borrowed(__x);
                #( #flow_steps )*
                ::core::result::Result::Ok(__x.into_tensor())
            }

            fn forward_owned(&self, __x: ::nncore::Tensor) -> ::nncore::Result<::nncore::Tensor> {
                let __x = ::nncore::__private::Flow::Owned(__x);
                #( #flow_steps )*
                ::core::result::Result::Ok(__x.into_tensor())
            }

            fn forward_into(
                &self,
                __x: &::nncore::Tensor,
                __out: &mut ::nncore::Tensor,
                __ws: &mut ::nncore::Workspace,
            ) -> ::nncore::Result<()> {
                #[allow(unused_mut)]
                let mut __cur: ::core::option::Option<::nncore::Tensor> = ::core::option::Option::None;
                #( #step_intos )*
                __ws.finish(__x, __cur, __out);
                ::core::result::Result::Ok(())
            }

            fn forward_train<'__a>(
                &'__a mut self,
                __x: &'__a ::nncore::Tensor,
            ) -> ::nncore::Result<&'__a ::nncore::Tensor> {
                #( #train_steps )*
                ::core::result::Result::Ok(__x)
            }

            fn backward<'__a>(
                &'__a mut self,
                __g: &'__a ::nncore::Tensor,
            ) -> ::nncore::Result<&'__a ::nncore::Tensor> {
                #( #back_steps )*
                ::core::result::Result::Ok(__g)
            }

            fn backward_params(&mut self, __g: &::nncore::Tensor) -> ::nncore::Result<()> {
                #( #params_steps )*
                #params_first;
                ::core::result::Result::Ok(())
            }

            fn forward_traced(
                &self,
                __x: &::nncore::Tensor,
                __trace: &mut ::nncore::Trace,
            ) -> ::nncore::Result<::nncore::Tensor> {
                let __x = ::nncore::__private::Flow::Borrowed(__x);
                #( #traced_steps )*
                let __y = __x.into_tensor();
                __trace.record(&__y);
                ::core::result::Result::Ok(__y)
            }
        }
    }
}
