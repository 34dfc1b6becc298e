//! The derive input as a small IR.

use crate::attr::{ContainerAttrs, FieldAttrs};
use crate::ctxt::Ctxt;

pub(crate) struct Input<'a> {
    pub(crate) ident: &'a syn::Ident,
    pub(crate) generics: &'a syn::Generics,
    pub(crate) attrs: ContainerAttrs,
    pub(crate) fields: Vec<Field<'a>>,
}

pub(crate) struct Field<'a> {
    pub(crate) ident: &'a syn::Ident,
    pub(crate) ty: &'a syn::Type,
    pub(crate) attrs: FieldAttrs,
}

impl<'a> Input<'a> {
    /// Parses and validates; `Err` holds every error found.
    pub(crate) fn from_syn(input: &'a syn::DeriveInput) -> Result<Self, syn::Error> {
        let mut cx = Ctxt::default();
        let attrs = ContainerAttrs::from_attrs(&mut cx, &input.attrs);
        let mut fields = Vec::new();
        match &input.data {
            syn::Data::Struct(data) => match &data.fields {
                syn::Fields::Named(named) => {
                    for field in &named.named {
                        let attrs = FieldAttrs::from_attrs(&mut cx, &field.attrs);
                        if let Some(ident) = &field.ident {
                            fields.push(Field {
                                ident,
                                ty: &field.ty,
                                attrs,
                            });
                        }
                    }
                }
                syn::Fields::Unnamed(unnamed) => {
                    for field in &unnamed.unnamed {
                        FieldAttrs::from_attrs(&mut cx, &field.attrs);
                    }
                    cx.error_spanned_by(
                        unnamed,
                        "#[derive(Module)] does not support tuple structs yet; give the fields names",
                    );
                }
                syn::Fields::Unit => {}
            },
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
