//! Code generation.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
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
/// into "`X` is not a module" everywhere the struct is used. `Forward` is
/// left to the user when what did parse says they write it (a
/// `custom_forward` among the struct's attributes, or a `Tape` field for
/// a written forward): a mistake elsewhere must not add a conflicting
/// impl.
fn fallback(input: &syn::DeriveInput) -> TokenStream {
    let ident = &input.ident;
    let name = ident.unraw().to_string();
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let forward = if user_writes_forward(input) {
        TokenStream::new()
    } else {
        quote! {
            #[automatically_derived]
            impl #impl_generics ::nncore::Forward for #ident #ty_generics #where_clause {
                fn forward(&self, _: &::nncore::Tensor) -> ::nncore::Result<::nncore::Tensor> {
                    ::core::unimplemented!()
                }
            }
            #[automatically_derived]
            impl #impl_generics ::nncore::Backward for #ident #ty_generics #where_clause {
                fn forward_train<'__a>(&'__a mut self, _: &'__a ::nncore::Tensor) -> ::nncore::Result<&'__a ::nncore::Tensor> {
                    ::core::unimplemented!()
                }
                fn backward<'__a>(&'__a mut self, _: &'__a ::nncore::Tensor) -> ::nncore::Result<&'__a ::nncore::Tensor> {
                    ::core::unimplemented!()
                }
            }
        }
    };
    quote! {
        #[automatically_derived]
        impl #impl_generics ::nncore::Module for #ident #ty_generics #where_clause {
            fn name(&self) -> &str { #name }
        }
        #forward
        #[automatically_derived]
        impl #impl_generics ::core::fmt::Display for #ident #ty_generics #where_clause {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::nncore::Module::fmt_repr(self, f)
            }
        }
    }
}

/// A lenient look at input that failed to parse: does a `#[module(..)]`
/// on the struct name `custom_forward`, or a field have a type named
/// `Tape`?
fn user_writes_forward(input: &syn::DeriveInput) -> bool {
    let custom = input.attrs.iter().any(|a| {
        a.path().is_ident("module")
            && matches!(&a.meta, syn::Meta::List(l) if l.tokens.clone().into_iter().any(
                |t| matches!(t, proc_macro2::TokenTree::Ident(i) if i == "custom_forward")
            ))
    });
    let tape = match &input.data {
        syn::Data::Struct(s) => s.fields.iter().any(|f| match &f.ty {
            syn::Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Tape"),
            _ => false,
        }),
        _ => false,
    };
    custom || tape
}

/// `where` clauses: the original ones plus `ModuleType: Trait` for every
/// child whose type mentions a type parameter (`inner: L` gives
/// `L: Module`). Children of concrete types get no bound: a type that is
/// not a module is reported at the field by the generated calls, which are
/// spanned there.
fn where_clause(input: &Input<'_>, bound: &TokenStream) -> TokenStream {
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
    with_predicates(input, field_bounds.collect())
}

/// The `where` clause of the training impls: the original predicates plus
/// `for<'__nncore_t> Child: Backward` for every child. The higher-ranked
/// form keeps a bound on a concrete type from being checked where the
/// impl is written: a struct with a child that cannot be trained simply
/// has no `Backward` impl, and training it is a compile error at the call
/// that names the child's type.
fn backward_where_clause(input: &Input<'_>) -> TokenStream {
    let field_bounds = input.children().map(|f| {
        let ty = f.module_ty();
        quote_spanned!(ty.span()=> for<'__nncore_t> #ty: ::nncore::Backward,)
    });
    with_predicates(input, field_bounds.collect())
}

/// `where` with the struct's own predicates and `extra`, or nothing when
/// both are empty.
fn with_predicates(input: &Input<'_>, extra: Vec<TokenStream>) -> TokenStream {
    let existing = input
        .generics
        .where_clause
        .as_ref()
        .map(|w| {
            let preds = w.predicates.iter();
            quote!(#(#preds,)*)
        })
        .unwrap_or_default();
    if existing.is_empty() && extra.is_empty() {
        return TokenStream::new();
    }
    quote!(where #existing #(#extra)*)
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

/// `act` (an expression of `__n`, the child `f` borrowed), or `None` when
/// the optional child is absent.
fn with_next(f: &Field<'_>, act: TokenStream) -> TokenStream {
    let member = &f.member;
    let span = f.module_ty().span();
    if f.optional.is_some() {
        quote_spanned! {span=>
            match &self.#member {
                ::core::option::Option::Some(__n) => #act,
                ::core::option::Option::None => ::core::option::Option::None,
            }
        }
    } else {
        quote_spanned! {span=>
            {
                let __n = &self.#member;
                #act
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
        let call =
            quote_spanned!(span=> __f(#child, ::nncore::__private_v1::Child::as_module(__m)););
        with_child(f, false, call, TokenStream::new())
    });
    let visit_mut = children.iter().map(|f| {
        let child = &f.name;
        let span = f.module_ty().span();
        let call =
            quote_spanned!(span=> __f(#child, ::nncore::__private_v1::Child::as_module_mut(__m)););
        with_child(f, true, call, TokenStream::new())
    });

    let buffers: Vec<&Field<'_>> = input.buffers().collect();
    let buffer_fns = (!buffers.is_empty()).then(|| {
        let visit = buffers.iter().map(|f| {
            let name = &f.name;
            let call = quote!(__f(#name, __m););
            with_child(f, false, call, TokenStream::new())
        });
        let visit_mut = buffers.iter().map(|f| {
            let name = &f.name;
            let call = quote!(__f(#name, __m););
            with_child(f, true, call, TokenStream::new())
        });
        quote! {
            fn visit_own_buffers<'__a>(
                &'__a self,
                __f: &mut dyn ::core::ops::FnMut(&str, &'__a ::nncore::Buffer),
            ) {
                #( #visit )*
            }

            fn visit_own_buffers_mut(
                &mut self,
                __f: &mut dyn ::core::ops::FnMut(&str, &mut ::nncore::Buffer),
            ) {
                #( #visit_mut )*
            }
        }
    });

    let extra_repr = input.attrs.extra_repr.as_ref().map(|path| {
        quote! {
            fn extra_repr(&self) -> ::nncore::__private_v1::String {
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

            #buffer_fns

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
            impl #impl_generics ::nncore::__private_v1::HasTape for #ident #ty_generics #where_clause {
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
    let backward_where = backward_where_clause(input);

    // One visit per child, spanned on the child's type, so that a child
    // without a forward pass is reported at the field. The chain engine in
    // nncore (shared with ModuleList and Sequential) does the rest.
    let visit = |mutable: bool, rev: bool| {
        let fields: Vec<&&Field<'_>> = if rev {
            children.iter().rev().collect()
        } else {
            children.iter().collect()
        };
        let steps = fields.iter().enumerate().map(|(i, f)| {
            let child = &f.name;
            let span = f.module_ty().span();
            let body = if mutable {
                quote_spanned! {span=>
                    __v.visit(::nncore::__private_v1::chain::Name::Field(#child), __m)?;
                }
            } else {
                // The activation the next child would fuse into this one.
                let next = fields.get(i + 1).map_or_else(
                    || quote!(::core::option::Option::None),
                    |n| {
                        let act = quote_spanned! {n.module_ty().span()=>
                            ::nncore::Forward::fused_activation(__n)
                        };
                        with_next(n, act)
                    },
                );
                quote_spanned! {span=>
                    __v.visit(::nncore::__private_v1::chain::Name::Field(#child), __m, #next)?;
                }
            };
            with_child(f, mutable, body, TokenStream::new())
        });
        quote!(#(#steps)* ::core::result::Result::Ok(()))
    };
    let (shared, forward_mut, reverse) =
        (visit(false, false), visit(true, false), visit(true, true));

    quote! {
        #[automatically_derived]
        impl #impl_generics ::nncore::__private_v1::chain::Chain for #ident #ty_generics #forward_where {
            const NAME: &'static str = #name;

            #[inline]
            fn visit<'__a, __V: ::nncore::__private_v1::chain::Visitor<'__a>>(
                &'__a self,
                __v: &mut __V,
            ) -> ::nncore::Result<()> {
                #shared
            }
        }

        #[automatically_derived]
        impl #impl_generics ::nncore::__private_v1::chain::ChainMut for #ident #ty_generics #backward_where {
            fn visit_mut<'__a, __V: ::nncore::__private_v1::chain::VisitorMut<'__a>>(
                &'__a mut self,
                __v: &mut __V,
            ) -> ::nncore::Result<()> {
                #forward_mut
            }

            fn visit_mut_rev<'__a, __V: ::nncore::__private_v1::chain::VisitorMut<'__a>>(
                &'__a mut self,
                __v: &mut __V,
            ) -> ::nncore::Result<()> {
                #reverse
            }
        }

        #[automatically_derived]
        impl #impl_generics ::nncore::Forward for #ident #ty_generics #forward_where {
            ::nncore::__chain_forward_methods!();
        }

        #[automatically_derived]
        impl #impl_generics ::nncore::Backward for #ident #ty_generics #backward_where {
            ::nncore::__chain_backward_methods!();
        }
    }
}
