//! Containers: `Vec<M>` and `[M; N]` as PyTorch's `nn.ModuleList`, and
//! [`Sequential`], PyTorch's `nn.Sequential`.

use std::fmt;

use crate::chain::{Chain, ChainMut, Name, Visitor, VisitorMut};
use crate::forward::{Backward, Forward, Workspace};
use crate::module::Module;
use crate::print::{add_indent, fmt_module, repr};
use crate::summary::Trace;
use crate::{Dims, Result, Tensor};

/// The decimal name of child `i` (`"0"`, `"1"`, ...), written into `buf`:
/// visiting a list's children allocates nothing (an optimizer step visits
/// them every step).
fn index_name(i: usize, buf: &mut [u8; 20]) -> &str {
    let mut n = i;
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[start..]).unwrap_or("?")
}

/// PyTorch's `ModuleList.__repr__`: consecutive children that print the
/// same are collapsed into `(0-2): 3 x Linear(...)`; `ModuleList()` when
/// empty.
fn fmt_module_list<'m, M: Module + 'm>(
    items: impl Iterator<Item = &'m M>,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    let reprs: Vec<String> = items.map(|m| repr(m)).collect();
    if reprs.is_empty() {
        return f.write_str("ModuleList()");
    }
    f.write_str("ModuleList(")?;
    let mut start = 0;
    while start < reprs.len() {
        let mut end = start;
        while end + 1 < reprs.len() && reprs[end + 1] == reprs[start] {
            end += 1;
        }
        let line = if start == end {
            format!("({start}): {}", reprs[start])
        } else {
            format!("({start}-{end}): {} x {}", end - start + 1, reprs[start])
        };
        f.write_str("\n  ")?;
        f.write_str(&add_indent(&line, 2))?;
        start = end + 1;
    }
    f.write_str("\n)")
}

/// The `Forward` methods of a [`Chain`], delegating to the chain engine:
/// the derive emits one call of it per struct. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __chain_forward_methods {
    () => {
        #[inline]
        fn forward(&self, x: &$crate::Tensor) -> $crate::Result<$crate::Tensor> {
            $crate::chain::forward(self, x)
        }

        #[inline]
        fn forward_owned(&self, x: $crate::Tensor) -> $crate::Result<$crate::Tensor> {
            $crate::chain::forward_owned(self, x)
        }

        #[inline]
        fn forward_into(
            &self,
            x: &$crate::Tensor,
            out: &mut $crate::Tensor,
            ws: &mut $crate::Workspace,
        ) -> $crate::Result<()> {
            $crate::chain::forward_into(self, x, out, ws)
        }

        #[inline]
        fn forward_traced(
            &self,
            x: &$crate::Tensor,
            trace: &mut $crate::Trace,
        ) -> $crate::Result<$crate::Tensor> {
            $crate::chain::forward_traced(self, x, trace)
        }

        #[inline]
        fn forward_row<'y>(
            &self,
            x: &[f32],
            y: &'y mut [::std::mem::MaybeUninit<f32>],
            act: ::std::option::Option<$crate::chain::Activation>,
        ) -> ::std::option::Option<&'y mut [f32]> {
            $crate::chain::forward_row(self, x, y, act, &mut ::std::option::Option::None)
        }

        #[inline]
        fn forward_row_spill<'y>(
            &self,
            x: &[f32],
            y: &'y mut [::std::mem::MaybeUninit<f32>],
            act: ::std::option::Option<$crate::chain::Activation>,
            spill: &mut ::std::option::Option<$crate::Tensor>,
        ) -> ::std::option::Option<&'y mut [f32]> {
            $crate::chain::forward_row(self, x, y, act, spill)
        }

        #[inline]
        fn forward_dims(
            &self,
            x: &$crate::Tensor,
            dims: $crate::Dims,
        ) -> $crate::Result<($crate::Tensor, $crate::Dims)> {
            $crate::chain::forward_dims(self, x, dims)
        }

        #[inline]
        fn forward_owned_dims(
            &self,
            x: $crate::Tensor,
            dims: $crate::Dims,
        ) -> $crate::Result<($crate::Tensor, $crate::Dims)> {
            $crate::chain::forward_owned_dims(self, x, dims)
        }

        #[inline]
        fn forward_into_dims(
            &self,
            x: &$crate::Tensor,
            dims: $crate::Dims,
            out: &mut $crate::Tensor,
            ws: &mut $crate::Workspace,
        ) -> $crate::Result<$crate::Dims> {
            $crate::chain::forward_into_dims(self, x, dims, out, ws)
        }

        #[inline]
        fn forward_traced_dims(
            &self,
            x: &$crate::Tensor,
            dims: $crate::Dims,
            trace: &mut $crate::Trace,
        ) -> $crate::Result<($crate::Tensor, $crate::Dims)> {
            $crate::chain::forward_traced_dims(self, x, dims, trace)
        }
    };
}

/// The `Backward` methods, each delegating to the function of the same
/// name in the engine module given (`$crate::chain` or the written
/// engine's). Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __backward_methods {
    ($($engine:tt)+) => {
        #[inline]
        fn forward_train<'__nncore_a>(
            &'__nncore_a mut self,
            x: &'__nncore_a $crate::Tensor,
        ) -> $crate::Result<&'__nncore_a $crate::Tensor> {
            $($engine)+::forward_train(self, x)
        }

        #[inline]
        fn backward<'__nncore_a>(
            &'__nncore_a mut self,
            grad: &'__nncore_a $crate::Tensor,
        ) -> $crate::Result<&'__nncore_a $crate::Tensor> {
            $($engine)+::backward(self, grad)
        }

        #[inline]
        fn backward_params(&mut self, grad: &$crate::Tensor) -> $crate::Result<()> {
            $($engine)+::backward_params(self, grad)
        }

        #[inline]
        fn forward_train_dims<'__nncore_a>(
            &'__nncore_a mut self,
            x: &'__nncore_a $crate::Tensor,
            dims: $crate::Dims,
        ) -> $crate::Result<(&'__nncore_a $crate::Tensor, $crate::Dims)> {
            $($engine)+::forward_train_dims(self, x, dims)
        }
    };
}

/// The `Backward` methods of a [`ChainMut`], delegating to the chain
/// engine. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __chain_backward_methods {
    () => {
        $crate::__backward_methods!($crate::chain);
    };
}

/// Implements `Module` and `Forward` for a list type of modules.
macro_rules! module_list {
    ($($generics:tt)*) => {
        /// A list of modules is PyTorch's `nn.ModuleList`: children `0`,
        /// `1`, ... (parameters `blocks.0.weight`), printed with PyTorch's
        /// collapsing of repeats, applied in order by the derived forward.
        impl<$($generics)*> Module for ModuleListOf!($($generics)*) {
            fn name(&self) -> &str {
                "ModuleList"
            }

            fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module)) {
                let mut buf = [0u8; 20];
                for (i, m) in self.iter().enumerate() {
                    f(index_name(i, &mut buf), m);
                }
            }

            fn visit_children_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn Module)) {
                let mut buf = [0u8; 20];
                for (i, m) in self.iter_mut().enumerate() {
                    f(index_name(i, &mut buf), m);
                }
            }

            fn fmt_repr(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_module_list(self.iter(), f)
            }
        }

        impl<$($generics)*> Chain for ModuleListOf!($($generics)*)
        where
            M: Forward,
        {
            const NAME: &'static str = "ModuleList";

            fn visit<'a, V: Visitor<'a>>(&'a self, v: &mut V) -> Result<()> {
                let list: &[M] = self.as_ref();
                for (i, m) in list.iter().enumerate() {
                    let next = list.get(i + 1).and_then(Forward::fused_activation);
                    v.visit(Name::Index(i), m, next)?;
                }
                Ok(())
            }
        }

        impl<$($generics)*> ChainMut for ModuleListOf!($($generics)*)
        where
            M: Backward,
        {
            fn visit_mut<'a, V: VisitorMut<'a>>(&'a mut self, v: &mut V) -> Result<()> {
                for (i, m) in self.iter_mut().enumerate() {
                    v.visit(Name::Index(i), m)?;
                }
                Ok(())
            }

            fn visit_mut_rev<'a, V: VisitorMut<'a>>(&'a mut self, v: &mut V) -> Result<()> {
                for (i, m) in self.iter_mut().enumerate().rev() {
                    v.visit(Name::Index(i), m)?;
                }
                Ok(())
            }
        }

        /// The elements applied in order; the identity when empty.
        impl<$($generics)*> Forward for ModuleListOf!($($generics)*)
        where
            M: Forward,
        {
            crate::__chain_forward_methods!();
        }

        /// Trained in order, when every element can be.
        impl<$($generics)*> Backward for ModuleListOf!($($generics)*)
        where
            M: Backward,
        {
            crate::__chain_backward_methods!();
        }
    };
}

macro_rules! ModuleListOf {
    (M: Module) => { Vec<M> };
    (M: Module, const N: usize) => { [M; N] };
}

module_list!(M: Module);
module_list!(M: Module, const N: usize);

/// A boxed module is a module: `Vec<Box<dyn Layer>>` is a ModuleList of
/// layers of different types.
impl<T: Module + ?Sized> Module for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn extra_repr(&self) -> String {
        (**self).extra_repr()
    }
    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module)) {
        (**self).visit_children(f);
    }
    fn visit_children_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn Module)) {
        (**self).visit_children_mut(f);
    }
    fn visit_own_parameters<'a>(&'a self, f: &mut dyn FnMut(&str, &'a crate::Param)) {
        (**self).visit_own_parameters(f);
    }
    fn visit_own_parameters_mut(&mut self, f: &mut dyn FnMut(&str, &mut crate::Param)) {
        (**self).visit_own_parameters_mut(f);
    }
    fn fmt_repr(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt_repr(f)
    }
    fn set_training(&mut self, training: bool) {
        (**self).set_training(training);
    }
    fn is_training(&self) -> bool {
        (**self).is_training()
    }
}

impl<T: Forward + ?Sized> Forward for Box<T> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        (**self).forward(x)
    }
    fn forward_owned(&self, x: Tensor) -> Result<Tensor> {
        (**self).forward_owned(x)
    }
    fn forward_into(&self, x: &Tensor, out: &mut Tensor, ws: &mut Workspace) -> Result<()> {
        (**self).forward_into(x, out, ws)
    }
    fn forward_traced(&self, x: &Tensor, trace: &mut Trace) -> Result<Tensor> {
        (**self).forward_traced(x, trace)
    }
    fn is_elementwise(&self) -> bool {
        (**self).is_elementwise()
    }
    fn fused_activation(&self) -> Option<crate::forward::Activation> {
        (**self).fused_activation()
    }
    fn fusable(&self) -> bool {
        (**self).fusable()
    }
    fn forward_into_fused(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        ws: &mut Workspace,
        act: crate::forward::Activation,
    ) -> Result<()> {
        (**self).forward_into_fused(x, out, ws, act)
    }
    fn forward_fused(&self, x: &Tensor, act: crate::forward::Activation) -> Result<Tensor> {
        (**self).forward_fused(x, act)
    }
    fn forward_row<'y>(
        &self,
        x: &[f32],
        y: &'y mut [std::mem::MaybeUninit<f32>],
        act: Option<crate::forward::Activation>,
    ) -> Option<&'y mut [f32]> {
        (**self).forward_row(x, y, act)
    }
    fn forward_row_spill<'y>(
        &self,
        x: &[f32],
        y: &'y mut [std::mem::MaybeUninit<f32>],
        act: Option<crate::forward::Activation>,
        spill: &mut Option<Tensor>,
    ) -> Option<&'y mut [f32]> {
        (**self).forward_row_spill(x, y, act, spill)
    }
    fn forward_dims(&self, x: &Tensor, dims: Dims) -> Result<(Tensor, Dims)> {
        (**self).forward_dims(x, dims)
    }
    fn forward_owned_dims(&self, x: Tensor, dims: Dims) -> Result<(Tensor, Dims)> {
        (**self).forward_owned_dims(x, dims)
    }
    fn forward_into_dims(
        &self,
        x: &Tensor,
        dims: Dims,
        out: &mut Tensor,
        ws: &mut Workspace,
    ) -> Result<Dims> {
        (**self).forward_into_dims(x, dims, out, ws)
    }
    fn forward_traced_dims(
        &self,
        x: &Tensor,
        dims: Dims,
        trace: &mut Trace,
    ) -> Result<(Tensor, Dims)> {
        (**self).forward_traced_dims(x, dims, trace)
    }
}

impl<T: Backward + ?Sized> Backward for Box<T> {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
        (**self).forward_train(x)
    }
    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
        (**self).backward(grad)
    }
    fn backward_params(&mut self, grad: &Tensor) -> Result<()> {
        (**self).backward_params(grad)
    }
    fn forward_train_dims<'a>(
        &'a mut self,
        x: &'a Tensor,
        dims: Dims,
    ) -> Result<(&'a Tensor, Dims)> {
        (**self).forward_train_dims(x, dims)
    }
}

/// A layer that a [`Sequential`] can hold: any module that can be trained
/// ([`Backward`], as every nncore layer) and shared across threads.
/// Implemented for every such type.
pub trait Layer: Backward + Send + Sync {
    /// `self` as a `Module`.
    fn as_module(&self) -> &dyn Module;
    /// `self` as a mutable `Module`.
    fn as_module_mut(&mut self) -> &mut dyn Module;
}

impl<T: Backward + Send + Sync> Layer for T {
    fn as_module(&self) -> &dyn Module {
        self
    }
    fn as_module_mut(&mut self) -> &mut dyn Module {
        self
    }
}

/// PyTorch's `nn.Sequential`: layers of different types, chosen at run
/// time, applied in order. Children are named `0`, `1`, ... (parameters
/// `0.weight`) and printed one per line, never collapsed.
///
/// Shapes: whatever the first layer takes to whatever the last gives.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// use nncore::seq;
///
/// let model = seq![Linear::new(4, 8), ReLU::new(), Linear::new(8, 2)];
/// assert_eq!(model.len(), 3);
/// assert_eq!(model.named_parameters()[0].0, "0.weight");
/// assert_eq!(model.forward(&Tensor::zeros(5, 4))?.shape(), (5, 2));
/// assert!(model.to_string().starts_with("Sequential(\n  (0): Linear(in_features=4"));
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Layer>>,
}

impl Sequential {
    /// An empty `Sequential` (the identity).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a layer, builder style: `Sequential::new().with(a).with(b)`.
    #[must_use]
    pub fn with<L: Layer + 'static>(mut self, layer: L) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Appends a layer, as `Vec::push` (PyTorch's `append`).
    pub fn push<L: Layer + 'static>(&mut self, layer: L) {
        self.layers.push(Box::new(layer));
    }

    /// Appends a layer.
    #[deprecated(since = "0.1.0", note = "use `push` (mutating) or `with` (builder)")]
    pub fn add<L: Layer + 'static>(&mut self, layer: L) {
        self.push(layer);
    }

    /// The number of layers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layer at `index`.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<&dyn Layer> {
        self.layers.get(index).map(|l| &**l)
    }

    /// The layer at `index`, mutably.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut dyn Layer> {
        match self.layers.get_mut(index) {
            Some(l) => Some(&mut **l),
            None => None,
        }
    }
}

impl fmt::Debug for Sequential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_module(self, f)
    }
}

impl fmt::Display for Sequential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_module(self, f)
    }
}

impl Module for Sequential {
    fn name(&self) -> &str {
        "Sequential"
    }

    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module)) {
        let mut buf = [0u8; 20];
        for (i, l) in self.layers.iter().enumerate() {
            f(index_name(i, &mut buf), l.as_module());
        }
    }

    fn visit_children_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn Module)) {
        let mut buf = [0u8; 20];
        for (i, l) in self.layers.iter_mut().enumerate() {
            f(index_name(i, &mut buf), l.as_module_mut());
        }
    }
}

impl Chain for Sequential {
    const NAME: &'static str = "Sequential";

    fn visit<'a, V: Visitor<'a>>(&'a self, v: &mut V) -> Result<()> {
        for (i, l) in self.layers.iter().enumerate() {
            let next = self.layers.get(i + 1).and_then(|n| n.fused_activation());
            v.visit(Name::Index(i), &**l, next)?;
        }
        Ok(())
    }
}

impl ChainMut for Sequential {
    fn visit_mut<'a, V: VisitorMut<'a>>(&'a mut self, v: &mut V) -> Result<()> {
        for (i, l) in self.layers.iter_mut().enumerate() {
            v.visit(Name::Index(i), l)?;
        }
        Ok(())
    }

    fn visit_mut_rev<'a, V: VisitorMut<'a>>(&'a mut self, v: &mut V) -> Result<()> {
        for (i, l) in self.layers.iter_mut().enumerate().rev() {
            v.visit(Name::Index(i), l)?;
        }
        Ok(())
    }
}

impl Forward for Sequential {
    crate::__chain_forward_methods!();
}

impl Backward for Sequential {
    crate::__chain_backward_methods!();
}

/// Builds a [`Sequential`] from layers: `seq![Linear::new(4, 8),
/// ReLU::new()]`.
#[macro_export]
macro_rules! seq {
    ($($layer:expr),* $(,)?) => {
        $crate::Sequential::new()$(.with($layer))*
    };
}

#[cfg(test)]
mod tests {
    use crate::{Forward, Linear, ReLU, Tensor, Workspace};

    /// Nested chains share one workspace, each step with a buffer of its
    /// own: results equal `forward` whatever the batch size does between
    /// calls, and a failed call leaves the workspace usable.
    #[test]
    fn forward_into_through_nested_chains_survives_errors_and_batch_changes() {
        let model = crate::with_seed(3, || {
            seq![
                Linear::new(5, 7),
                seq![ReLU::new(), Linear::new(7, 4), ReLU::new()],
                Linear::new(4, 3),
            ]
        });
        let mut ws = Workspace::new();
        let mut out = Tensor::zeros(0, 0);
        let mut g = crate::Generator::new(9);
        for (i, rows) in [1usize, 3, 1, 0, 8, 2].into_iter().enumerate() {
            if i % 2 == 1 {
                let bad = g.uniform_tensor(rows.max(1), 6, -1.0, 1.0);
                assert!(model.forward_into(&bad, &mut out, &mut ws).is_err());
            }
            let x = g.uniform_tensor(rows, 5, -1.0, 1.0);
            model.forward_into(&x, &mut out, &mut ws).unwrap();
            assert_eq!(out, model.forward(&x).unwrap(), "rows={rows}");
        }
        // One buffer per step (3 outer, 3 inner, of which the inner Linear
        // and the ReLU after it run as one fused step): failed calls did
        // not leave the cursor behind.
        assert_eq!(ws.slot_count(), 5);
    }

    /// A ReLU after a Linear is fused into it at inference (the batch-1
    /// kernel applies it to the sums; other batches as a pass over the
    /// output): the results equal the two layers run one by one, exactly,
    /// before and after the layer packs its weight, NaN included.
    #[test]
    fn a_relu_fused_into_the_linear_before_it_changes_nothing() {
        for (i, o, bias) in [
            (100, 50, true),
            (7, 3, false),
            (33, 17, true),
            (16, 64, true),
        ] {
            let (fc, relu, last) = crate::with_seed(5, || {
                let fc = if bias {
                    Linear::new(i, o)
                } else {
                    Linear::new_no_bias(i, o)
                };
                (fc, ReLU::new(), Linear::new(o, 2))
            });
            let model = seq![fc.clone(), relu.clone(), last.clone()];
            let mut g = crate::Generator::new(1);
            let (mut out, mut ws) = (Tensor::zeros(0, 0), Workspace::new());
            for call in 0..40 {
                let rows = [1, 1, 3, 1][call % 4];
                let mut x = g.uniform_tensor(rows, i, -1.0, 1.0);
                if call % 5 == 0 {
                    x[(0, 1)] = f32::NAN;
                }
                // The model's layers see every row twice (two calls), and
                // so do these, so that both pack their weights together.
                let reference = || last.forward(&relu.forward(&fc.forward(&x)?)?);
                let expected = reference().unwrap();
                let y = model.forward(&x).unwrap();
                let expected_into = reference().unwrap();
                model.forward_into(&x, &mut out, &mut ws).unwrap();
                for (got, expected, what) in [
                    (&y, &expected, "forward"),
                    (&out, &expected_into, "forward_into"),
                ] {
                    let same = got
                        .iter()
                        .zip(expected.iter())
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{i}->{o} bias={bias} call {call} {what}: {got} vs {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn index_names_are_decimal() {
        let mut buf = [0u8; 20];
        for i in [0usize, 7, 10, 99, 1234, usize::MAX] {
            assert_eq!(super::index_name(i, &mut buf), i.to_string());
        }
    }
}
