//! The derive input as a small IR.

use syn::ext::IdentExt;

use crate::attr::{ContainerAttrs, FieldAttrs};
use crate::ctxt::Ctxt;

pub(crate) struct Input<'a> {
    pub(crate) ident: &'a syn::Ident,
    pub(crate) generics: &'a syn::Generics,
    pub(crate) attrs: ContainerAttrs,
    pub(crate) fields: Vec<Field<'a>>,
}

pub(crate) struct Field<'a> {
    /// `self.<member>`: a name, or an index for tuple structs.
    pub(crate) member: syn::Member,
    /// The child's name as PyTorch prints it: the field name without `r#`,
    /// or the tuple index.
    pub(crate) name: String,
    pub(crate) ty: &'a syn::Type,
    /// For `Option<M>` fields, `M`: the child exists only when `Some`.
    pub(crate) optional: Option<&'a syn::Type>,
    pub(crate) attrs: FieldAttrs,
    /// A field of type `Tape`: the recording of a written forward, not a
    /// child.
    pub(crate) tape: bool,
    /// A field of type `Buffer` (or `Option<Buffer>`): registered as a
    /// buffer under the field's name, not a child.
    pub(crate) buffer: bool,
}

impl Field<'_> {
    /// The module type: `M` for `M` and for `Option<M>`.
    pub(crate) fn module_ty(&self) -> &syn::Type {
        self.optional.unwrap_or(self.ty)
    }
}

/// Whether `ty` is written `name` (or a path ending in `name`, such as
/// `nncore::Tape`), without generics.
fn is_named(ty: &syn::Type, name: &str) -> bool {
    let syn::Type::Path(tp) = ty else {
        return false;
    };
    tp.qself.is_none()
        && tp
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == name && s.arguments.is_none())
}

/// `M` when `ty` is written `Option<M>` (or `std::option::Option<M>`,
/// `core::option::Option<M>`).
fn option_inner(ty: &syn::Type) -> Option<&syn::Type> {
    let syn::Type::Path(tp) = ty else {
        return None;
    };
    if tp.qself.is_some() {
        return None;
    }
    let segs: Vec<String> = tp
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let is_option = match segs.as_slice() {
        [a] => a == "Option",
        [a, b, c] => (a == "std" || a == "core") && b == "option" && c == "Option",
        _ => false,
    };
    if !is_option {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &tp.path.segments.last()?.arguments else {
        return None;
    };
    match args.args.iter().collect::<Vec<_>>().as_slice() {
        [syn::GenericArgument::Type(inner)] => Some(inner),
        _ => None,
    }
}

impl<'a> Input<'a> {
    /// Parses and validates; `Err` holds every error found.
    pub(crate) fn from_syn(input: &'a syn::DeriveInput) -> Result<Self, syn::Error> {
        let mut cx = Ctxt::default();
        let attrs = ContainerAttrs::from_attrs(&mut cx, &input.attrs);
        let mut fields = Vec::new();
        match &input.data {
            syn::Data::Struct(data) => {
                for (i, field) in data.fields.iter().enumerate() {
                    let attrs = FieldAttrs::from_attrs(&mut cx, &field.attrs);
                    let (member, name) = match &field.ident {
                        Some(ident) => (
                            syn::Member::Named(ident.clone()),
                            ident.unraw().to_string(),
                        ),
                        None => (syn::Member::Unnamed(syn::Index::from(i)), i.to_string()),
                    };
                    let optional = option_inner(&field.ty);
                    fields.push(Field {
                        member,
                        name,
                        ty: &field.ty,
                        optional,
                        tape: is_named(&field.ty, "Tape"),
                        buffer: is_named(optional.unwrap_or(&field.ty), "Buffer"),
                        attrs,
                    });
                }
            }
            syn::Data::Enum(data) => cx.error_spanned_by(
                data.enum_token,
                "#[derive(Module)] only supports structs; a module is a struct whose fields are its layers",
            ),
            syn::Data::Union(data) => cx.error_spanned_by(
                data.union_token,
                "#[derive(Module)] only supports structs; a module is a struct whose fields are its layers",
            ),
        }
        if let [_, second, ..] = fields
            .iter()
            .filter(|f| f.tape)
            .collect::<Vec<_>>()
            .as_slice()
        {
            cx.error_spanned_by(second.ty, "a module has at most one `Tape` field");
        }
        cx.check()?;
        Ok(Self {
            ident: &input.ident,
            generics: &input.generics,
            attrs,
            fields,
        })
    }

    /// The fields that are child modules (not `#[module(skip)]`, not the
    /// `Tape`, not buffers).
    pub(crate) fn children(&self) -> impl DoubleEndedIterator<Item = &Field<'a>> + Clone {
        self.fields
            .iter()
            .filter(|f| !f.attrs.skip && !f.tape && !f.buffer)
    }

    /// The `Buffer` fields, in declaration order.
    pub(crate) fn buffers(&self) -> impl Iterator<Item = &Field<'a>> {
        self.fields.iter().filter(|f| !f.attrs.skip && f.buffer)
    }

    /// The `Tape` field, if the struct has one (its forward is written).
    pub(crate) fn tape(&self) -> Option<&Field<'a>> {
        self.fields.iter().find(|f| f.tape)
    }
}
