//! `#[derive(Module)]` for nncore: PyTorch-style neural network modules.
//!
//! Use it through `nncore`, which re-exports it beside the `Module` trait
//! of the same name: `use nncore::prelude::*;`.
//!
//! The crate is laid out as thiserror's and serde's derives are: the input
//! is parsed into a small IR (`ast.rs`), its `#[module(...)]` attributes are
//! read (`attr.rs`) with every error collected (`ctxt.rs`), and code is
//! generated (`expand.rs`) only once the input is known to be valid. Every
//! error is a spanned `compile_error!`; the macro never panics.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod forward;

use proc_macro::TokenStream;

/// Derives `nncore::Module`, `nncore::Forward` and `Display` for a struct
/// whose fields are modules.
///
/// Named fields give children of those names; a tuple struct's children
/// are named `0`, `1`, ... as in `nn.Sequential`. A field of type
/// `Option<M>` is a child only when `Some` (PyTorch's submodule set to
/// `None`). `Vec<M>` and `[M; N]` fields are `ModuleList`s.
///
/// - Parameters are registered under PyTorch's dotted names, in field
///   order (`fc1.weight`, `fc1.bias`, ...).
/// - `Display` prints exactly what PyTorch's `print(model)` prints.
/// - `forward` applies the fields in declaration order (`nncore::Forward`);
///   when every field can be trained, `backward` applies their backward
///   passes in reverse order (`nncore::Backward`). A struct with a field
///   that has no `Backward` infers but cannot be trained: training it is a
///   compile error that names that field's type.
///
/// Attributes:
/// - `#[module(skip)]` on a field that holds plain data: not a child, not
///   printed, not in the forward chain.
/// - `#[module(custom_forward)]` on the struct: no `Forward` or `Backward`
///   impl is derived; write your own (`Backward` only if it is trained). Without it, a hand-written `impl Forward`
///   is error E0119, "conflicting implementations of trait
///   `nncore::Forward`", pointing at `#[derive(Module)]`: add
///   `#[module(custom_forward)]` (rustc has no way for a derive to add
///   that hint to the message itself), or write the forward with
///   [`macro@forward`] and get the backward pass too.
/// - `#[module(extra_repr = "path")]` on the struct: the function `path`,
///   of type `fn(&Self) -> String`, gives the text PyTorch's `extra_repr`
///   would.
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}

/// Turns a PyTorch-style `forward`, written in ordinary Rust, into the
/// module's [`Forward`](../nncore/trait.Forward.html) implementation:
/// inference, `forward_into`, the traced forward of `summary`, and the
/// recording forward with its backward pass, with no hand-written gradient.
///
/// Put it on an inherent `impl` block holding
/// `fn forward(&self, x: &Tensor) -> Result<Tensor>`; the struct derives
/// `Module` and has a field of type `nncore::Tape`. See `nncore`'s guide for
/// what the forward may contain.
#[proc_macro_attribute]
pub fn forward(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = syn::parse_macro_input!(item as syn::ItemImpl);
    forward::expand(attr.into(), item).into()
}
