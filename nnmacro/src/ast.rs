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
}

impl Field<'_> {
    /// The module type: `M` for `M` and for `Option<M>`.
    pub(crate) fn module_ty(&self) -> &syn::Type {
        self.optional.unwrap_or(self.ty)
    }
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
                    fields.push(Field {
                        member,
                        name,
                        ty: &field.ty,
                        optional: option_inner(&field.ty),
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
        cx.check()?;
        Ok(Self {
            ident: &input.ident,
            generics: &input.generics,
            attrs,
            fields,
        })
    }

    /// The fields that are child modules (not `#[module(skip)]`).
    pub(crate) fn children(&self) -> impl DoubleEndedIterator<Item = &Field<'a>> + Clone {
        self.fields.iter().filter(|f| !f.attrs.skip)
    }
}
