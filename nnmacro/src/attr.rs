//! `#[module(...)]` attributes.

use crate::ctxt::Ctxt;

/// Attributes of the struct.
#[derive(Default)]
pub(crate) struct ContainerAttrs {
    pub(crate) custom_forward: bool,
    pub(crate) extra_repr: Option<syn::ExprPath>,
}

/// Attributes of a field.
#[derive(Default)]
pub(crate) struct FieldAttrs {
    pub(crate) skip: bool,
}

const CONTAINER_KEYS: &str = "`custom_forward` or `extra_repr = \"path\"`";
const FIELD_KEYS: &str = "`skip`";

/// Calls `f` for each key of each `#[module(...)]` attribute, reporting
/// malformed attributes and duplicate keys to `cx`.
fn for_each_key(
    cx: &mut Ctxt,
    attrs: &[syn::Attribute],
    mut f: impl FnMut(&mut Ctxt, &str, &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()>,
) {
    let mut seen: Vec<String> = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("module") {
            continue;
        }
        if !matches!(attr.meta, syn::Meta::List(_)) {
            cx.error_spanned_by(
                attr,
                "expected `#[module(...)]`, for example `#[module(skip)]`",
            );
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            let key = match meta.path.get_ident() {
                Some(ident) => ident.to_string(),
                None => {
                    return Err(meta.error("expected a key such as `skip`, not a path"));
                }
            };
            if seen.contains(&key) {
                cx.error_spanned_by(&meta.path, format!("duplicate module attribute `{key}`"));
            } else {
                seen.push(key.clone());
            }
            f(cx, &key, &meta)
        });
        if let Err(err) = result {
            cx.syn_error(err);
        }
    }
}

fn no_value(meta: &syn::meta::ParseNestedMeta<'_>, key: &str) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) || meta.input.peek(syn::token::Paren) {
        return Err(meta.error(format!("`{key}` takes no value: write `#[module({key})]`")));
    }
    Ok(())
}

impl ContainerAttrs {
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[syn::Attribute]) -> Self {
        let mut out = Self::default();
        for_each_key(cx, attrs, |cx, key, meta| {
            match key {
                "custom_forward" => {
                    no_value(meta, key)?;
                    out.custom_forward = true;
                }
                "extra_repr" => {
                    let value = meta.value()?;
                    let lit: syn::LitStr = value.parse().map_err(|e| {
                        syn::Error::new(
                            e.span(),
                            "`extra_repr` takes the path of a `fn(&Self) -> String` as a string, for example `extra_repr = \"Self::describe\"`",
                        )
                    })?;
                    match lit.parse::<syn::ExprPath>() {
                        Ok(path) => out.extra_repr = Some(path),
                        Err(_) => cx.error_spanned_by(
                            &lit,
                            "`extra_repr` takes the path of a `fn(&Self) -> String`, for example `extra_repr = \"Self::describe\"`",
                        ),
                    }
                }
                "skip" => return Err(meta.error("`skip` goes on a field, not on the struct")),
                _ => {
                    return Err(meta.error(format!(
                        "unknown module attribute `{key}`; expected {CONTAINER_KEYS}"
                    )));
                }
            }
            Ok(())
        });
        out
    }
}

impl FieldAttrs {
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[syn::Attribute]) -> Self {
        let mut out = Self::default();
        for_each_key(cx, attrs, |_, key, meta| {
            match key {
                "skip" => {
                    no_value(meta, key)?;
                    out.skip = true;
                }
                "custom_forward" | "extra_repr" => {
                    return Err(meta.error(format!("`{key}` goes on the struct, not on a field")));
                }
                _ => {
                    return Err(meta.error(format!(
                        "unknown module field attribute `{key}`; expected {FIELD_KEYS}"
                    )));
                }
            }
            Ok(())
        });
        out
    }
}
