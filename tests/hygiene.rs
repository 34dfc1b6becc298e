//! The generated code uses absolute paths only: it compiles in a module
//! that shadows `Result`, `Ok`, `Err`, `Option`, `Some`, `None`, `Vec`,
//! `String`, `Box` and `Clone`, and under strict lints.
#![deny(warnings, unused_qualifications, missing_docs)]
#![allow(dead_code, non_camel_case_types, clippy::all)]

mod shadowed {
    use nncore::{Linear, Module, ReLU};

    struct Result;
    struct Ok;
    struct Err;
    struct Option;
    struct Some;
    struct None;
    struct Vec;
    struct String;
    struct Box;
    struct Clone;
    trait Display {}
    mod core {}
    mod std {}

    /// A model defined where the prelude's names mean something else.
    #[derive(Module)]
    pub struct Net<L> {
        fc: Linear,
        act: ReLU,
        inner: L,
        #[module(skip)]
        note: u8,
    }

    /// Defined where the prelude's names mean something else.
    #[derive(Module)]
    pub struct Empty;

    // A private module type inside a public one: the derive's bounds must
    // not leak it (private_bounds is denied through `warnings`).
    #[derive(Module)]
    struct Private {
        fc: Linear,
    }

    /// Public, with a private child.
    #[derive(Module)]
    pub struct Public {
        private: Private,
    }

    pub fn make() -> Net<Linear> {
        Net {
            fc: Linear::new(3, 4),
            act: ReLU::new(),
            inner: Linear::new(4, 2),
            note: 0,
        }
    }
}

#[test]
fn derive_compiles_with_shadowed_prelude() {
    use nncore::{Forward, Tensor};
    let m = shadowed::make();
    assert_eq!(m.forward(&Tensor::zeros(1, 3)).unwrap().shape(), (1, 2));
    assert_eq!(shadowed::Empty.to_string(), "Empty()");
}
