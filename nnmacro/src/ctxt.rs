//! Collects every error found in one derive, so that a user with three
//! mistakes sees three errors in one compile (serde's `Ctxt`).

use std::fmt::Display;

use quote::ToTokens;

/// As serde's: dropping a `Ctxt` whose errors were never checked is a bug
/// in the macro (errors would be lost), caught by a panic in `Drop`.
pub(crate) struct Ctxt {
    errors: Option<Vec<syn::Error>>,
}

impl Default for Ctxt {
    fn default() -> Self {
        Self {
            errors: Some(Vec::new()),
        }
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if !std::thread::panicking() && self.errors.is_some() {
            panic!("nnmacro: a Ctxt was dropped without checking its errors");
        }
    }
}

impl Ctxt {
    /// An error spanned on `tokens`.
    pub(crate) fn error_spanned_by<T: ToTokens, M: Display>(&mut self, tokens: T, msg: M) {
        self.syn_error(syn::Error::new_spanned(tokens, msg));
    }

    pub(crate) fn syn_error(&mut self, err: syn::Error) {
        if let Some(errors) = &mut self.errors {
            errors.push(err);
        }
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.errors.as_ref().is_some_and(|e| !e.is_empty())
    }

    /// All errors combined into one, or `Ok` when there were none.
    pub(crate) fn check(mut self) -> Result<(), syn::Error> {
        let mut errors = self.errors.take().unwrap_or_default().into_iter();
        let Some(mut combined) = errors.next() else {
            return Ok(());
        };
        for rest in errors {
            combined.combine(rest);
        }
        Err(combined)
    }
}
