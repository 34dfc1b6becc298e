//! The [`Module`] trait (what a layer or model provides), [`ModuleExt`]
//! (what every module gets from it) and the walks over parameters,
//! buffers and submodules in PyTorch's order.

use std::fmt;
use std::path::Path;

use crate::print::fmt_module;
use crate::serialize::{self, LoadOptions, LoadReport, SaveOptions, StateDict};
use crate::{Buffer, Error, ModulePath, Param, Result, Tensor};

/// A node of a model: its name, its direct parameters and its child
/// modules. What `nn.Module` is to PyTorch, minus `forward` (see
/// [`Forward`](crate::Forward)).
///
/// Implement it with `#[derive(Module)]` on a struct whose fields are
/// modules; the derive also implements [`Forward`](crate::Forward) (the fields applied in
/// declaration order) and `Display` (exactly PyTorch's `print(model)`).
/// Layers such as [`Linear`](crate::Linear) implement it by hand.
///
/// The trait holds what an implementor writes: the name, `extra_repr`,
/// the visitors of children, own parameters and own buffers, printing and
/// the training mode. Everything built on them (`named_parameters`,
/// `state_dict`, `zero_grad`, `train`, files) is on [`ModuleExt`], which
/// every module gets.
///
/// The trait is object safe: children are visited as `&dyn Module`.
///
/// # Example
/// ```
/// use nncore::prelude::*;
///
/// #[derive(Module)]
/// struct SimpleNet {
///     fc1: Linear,
///     relu: ReLU,
///     fc2: Linear,
/// }
///
/// let model = SimpleNet {
///     fc1: Linear::new(100, 50),
///     relu: ReLU::new(),
///     fc2: Linear::new(50, 10),
/// };
/// let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
/// assert_eq!(model.num_parameters(), 5560);
/// assert_eq!(
///     model.to_string(),
///     "SimpleNet(\n  (fc1): Linear(in_features=100, out_features=50, bias=True)\n  \
///      (relu): ReLU()\n  (fc2): Linear(in_features=50, out_features=10, bias=True)\n)"
/// );
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a module",
    label = "`{Self}` does not implement `nncore::Module`",
    note = "derive it with `#[derive(Module)]`, or mark a field that holds plain data with `#[module(skip)]`"
)]
pub trait Module {
    /// The type name PyTorch prints (`_get_name()`): `Linear`, `SimpleNet`.
    fn name(&self) -> &str;

    /// The text inside the parentheses (PyTorch's `extra_repr`), such as
    /// `in_features=100, out_features=50, bias=True`. Empty by default.
    fn extra_repr(&self) -> String {
        String::new()
    }

    /// Calls `f` with the name and value of each child module, in
    /// registration order.
    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module)) {
        let _ = f;
    }

    /// Calls `f` with the name and value of each child module, mutably.
    fn visit_children_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn Module)) {
        let _ = f;
    }

    /// Calls `f` with the parameters this module owns directly (not its
    /// children's), in registration order: `weight`, then `bias` for
    /// `Linear`.
    fn visit_own_parameters<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) {
        let _ = f;
    }

    /// Calls `f` with the parameters this module owns directly, mutably.
    fn visit_own_parameters_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        let _ = f;
    }

    /// Calls `f` with the buffers this module owns directly (not its
    /// children's), in registration order: `running_mean`, `running_var`,
    /// `num_batches_tracked` for `BatchNorm1d`.
    fn visit_own_buffers<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Buffer)) {
        let _ = f;
    }

    /// Calls `f` with the buffers this module owns directly, mutably.
    fn visit_own_buffers_mut(&mut self, f: &mut dyn FnMut(&str, &mut Buffer)) {
        let _ = f;
    }

    /// Writes the module as PyTorch's `repr(module)` does. Containers that
    /// print differently (PyTorch's `ModuleList`) override it.
    ///
    /// # Errors
    /// Only those of the formatter.
    fn fmt_repr(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_module(self, f)
    }

    /// Switches training mode for this module and, by default, all of its
    /// children. Layers with a mode of their own (dropout) override it.
    fn set_training(&mut self, training: bool) {
        self.visit_children_mut(&mut |_, child| child.set_training(training));
    }

    /// Whether the module is in training mode (PyTorch's `training`):
    /// by default, whether all its children are; a module without children
    /// that keeps no mode says `true`, PyTorch's default.
    fn is_training(&self) -> bool {
        let mut all = true;
        self.visit_children(&mut |_, child| all &= child.is_training());
        all
    }
}

/// What every [`Module`] can do, written once on top of what an implementor
/// provides (the `StreamExt` / `ServiceExt` pattern): PyTorch's
/// `train()` / `eval()`, `named_parameters()`, `num_parameters()`,
/// `zero_grad()`, `state_dict()`, safetensors files and the rest. It is
/// implemented for every module, `dyn Module` included, and cannot be
/// overridden, so the conveniences never disagree with the visitors they
/// are built on. `use nncore::prelude::*` brings it into scope.
///
/// # Example
/// ```
/// use nncore::prelude::*;
///
/// let mut fc = Linear::new(3, 2);
/// assert_eq!(fc.num_parameters(), 8);
/// let names: Vec<String> = fc.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["weight", "bias"]);
/// fc.eval();
/// assert!(!fc.is_training());
/// // The same through a trait object.
/// let m: &dyn Module = &fc;
/// assert_eq!(m.state_dict().len(), 2);
/// ```
pub trait ModuleExt: Module {
    /// PyTorch's `train()`: training mode for the module and every
    /// submodule.
    fn train(&mut self) {
        self.set_training(true);
    }

    /// PyTorch's `eval()`: evaluation mode for the module and every
    /// submodule.
    fn eval(&mut self) {
        self.set_training(false);
    }

    /// Every parameter with its dotted PyTorch name (`fc1.weight`), in
    /// PyTorch's order: own parameters first, then each child's, depth
    /// first.
    fn named_parameters(&self) -> Vec<(String, &Param)> {
        let mut out = Vec::new();
        let mut prefix = String::new();
        walk_parameters(self, &mut prefix, &mut |name: &str, p| {
            out.push((name.to_owned(), p));
        });
        out
    }

    /// Every parameter, in the order of [`ModuleExt::named_parameters`].
    fn parameters(&self) -> Vec<&Param> {
        self.named_parameters()
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// Calls `f` with every parameter's dotted name and value, mutably, in
    /// the order of [`ModuleExt::named_parameters`]. Loaders use it.
    fn visit_parameters_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        let mut prefix = String::new();
        walk_parameters_mut(self, &mut prefix, f);
    }

    /// Calls `f` with every parameter, mutably and without building names:
    /// what an optimizer step uses, allocation free.
    fn for_each_parameter_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        fn walk<M: Module + ?Sized>(m: &mut M, f: &mut dyn FnMut(&mut Param)) {
            m.visit_own_parameters_mut(&mut |_, p| f(p));
            m.visit_children_mut(&mut |_, child| walk(child, f));
        }
        walk(self, f);
    }

    /// The total number of parameter elements (PyTorch's
    /// `sum(p.numel() for p in model.parameters())`).
    fn num_parameters(&self) -> usize {
        let mut n = 0;
        let mut prefix = String::new();
        walk_parameters(self, &mut prefix, &mut |_, p| n += p.numel());
        n
    }

    /// The module and every submodule with its dotted path, the module
    /// itself first with the empty name (PyTorch's `named_modules()`).
    fn named_modules(&self) -> Vec<(String, &dyn Module)>
    where
        Self: Sized,
    {
        let mut out: Vec<(String, &dyn Module)> = vec![(String::new(), self)];
        let mut prefix = String::new();
        walk_modules(self, &mut prefix, &mut |name, m| {
            out.push((name.to_owned(), m))
        });
        out
    }

    /// The direct children with their names (PyTorch's
    /// `named_children()`).
    fn named_children(&self) -> Vec<(String, &dyn Module)> {
        let mut out = Vec::new();
        self.visit_children(&mut |name, m| out.push((name.to_owned(), m)));
        out
    }

    /// Forgets every parameter's gradient (PyTorch's `zero_grad()`).
    fn zero_grad(&mut self) {
        self.for_each_parameter_mut(&mut |p| p.zero_grad());
    }

    /// Freezes (`false`) or unfreezes (`true`) every parameter of the
    /// module (PyTorch's `module.requires_grad_(flag)`).
    fn requires_grad_(&mut self, requires_grad: bool) {
        self.for_each_parameter_mut(&mut |p| p.set_requires_grad(requires_grad));
    }

    /// Every buffer (persistent or not) with its dotted PyTorch name
    /// (`bn.running_mean`), in PyTorch's order: own buffers first, then
    /// each child's, depth first.
    fn named_buffers(&self) -> Vec<(String, &Buffer)> {
        let mut out = Vec::new();
        let mut prefix = String::new();
        walk_state(self, &mut prefix, &mut |name: &str, s| {
            if let State::Buffer(b) = s {
                out.push((name.to_owned(), b));
            }
        });
        out
    }

    /// The old name of [`ModuleExt::requires_grad_`]: a setter named like
    /// `Param::requires_grad`, a getter.
    #[deprecated(since = "0.1.0", note = "renamed `requires_grad_`, as PyTorch's")]
    fn requires_grad(&mut self, requires_grad: bool) {
        self.requires_grad_(requires_grad);
    }

    /// PyTorch's `state_dict()`: every parameter and persistent buffer
    /// under its dotted name, row-major, in PyTorch's order (each module's
    /// parameters, then its buffers, then its children's).
    fn state_dict(&self) -> StateDict {
        serialize::state_dict(self)
    }

    /// PyTorch's `load_state_dict(sd, strict)`. Every problem is reported
    /// at once (missing and unexpected keys in strict mode, every size
    /// mismatch), and a failed load leaves the model exactly as it was.
    ///
    /// # Errors
    /// [`Error::LoadStateDict`] with PyTorch's message.
    fn load_state_dict(&mut self, state_dict: &StateDict, strict: bool) -> Result<LoadReport> {
        serialize::load_state_dict(self, state_dict, strict)
    }

    /// Writes the parameters as a safetensors file in `f32` (see
    /// [`ModuleExt::save_safetensors_with`]).
    ///
    /// # Errors
    /// I/O errors, with the path.
    fn save_safetensors<P: AsRef<Path>>(&self, path: P) -> Result<()>
    where
        Self: Sized,
    {
        self.save_safetensors_with(path, SaveOptions::default())
    }

    /// Writes the parameters as a safetensors file, under PyTorch's names
    /// and shapes, row-major, with the metadata `format: pt`. The write is
    /// atomic: a temporary file in the same directory, flushed to disk,
    /// then renamed over `path`.
    ///
    /// # Errors
    /// I/O errors, with the path.
    fn save_safetensors_with<P: AsRef<Path>>(&self, path: P, options: SaveOptions) -> Result<()>
    where
        Self: Sized,
    {
        self.state_dict().save_safetensors(path, options)
    }

    /// Loads a safetensors file strictly (PyTorch's
    /// `load_state_dict(load_file(path))`). `f16`, `bf16` and `f64` tensors
    /// are converted; files of 16 MiB and more are memory-mapped.
    ///
    /// # Errors
    /// A malformed file ([`Error::Format`]), I/O errors, and everything
    /// [`ModuleExt::load_state_dict`] reports.
    fn load_safetensors<P: AsRef<Path>>(&mut self, path: P) -> Result<LoadReport>
    where
        Self: Sized,
    {
        self.load_safetensors_with(path, LoadOptions::strict())
    }

    /// Loads a safetensors file with options (strict or not).
    ///
    /// # Errors
    /// As [`ModuleExt::load_safetensors`].
    fn load_safetensors_with<P: AsRef<Path>>(
        &mut self,
        path: P,
        options: LoadOptions,
    ) -> Result<LoadReport>
    where
        Self: Sized,
    {
        serialize::load_file(self, path.as_ref(), options)
    }

    /// Loads safetensors data held in memory.
    ///
    /// # Errors
    /// As [`ModuleExt::load_safetensors`].
    fn load_safetensors_bytes(&mut self, bytes: &[u8], options: LoadOptions) -> Result<LoadReport> {
        serialize::load_bytes(self, bytes, options)
    }

    /// `Err` naming the first parameter or float buffer (a running
    /// variance, ...) that holds NaN or an infinity.
    ///
    /// # Errors
    /// [`Error::NonFinite`].
    fn check_finite(&self) -> Result<()> {
        serialize::check_finite(self)
    }
}

impl<M: Module + ?Sized> ModuleExt for M {}

pub(crate) fn join(prefix: &mut String, name: &str) -> usize {
    let len = prefix.len();
    if !prefix.is_empty() {
        prefix.push('.');
    }
    prefix.push_str(name);
    len
}

fn walk_parameters<'a, M: Module + ?Sized>(
    m: &'a M,
    prefix: &mut String,
    f: &mut dyn FnMut(&str, &'a Param),
) {
    m.visit_own_parameters(&mut |name, p| {
        let len = join(prefix, name);
        f(prefix, p);
        prefix.truncate(len);
    });
    m.visit_children(&mut |name, child| {
        let len = join(prefix, name);
        walk_parameters(child, prefix, f);
        prefix.truncate(len);
    });
}

fn walk_parameters_mut<M: Module + ?Sized>(
    m: &mut M,
    prefix: &mut String,
    f: &mut dyn FnMut(&str, &mut Param),
) {
    m.visit_own_parameters_mut(&mut |name, p| {
        let len = join(prefix, name);
        f(prefix, p);
        prefix.truncate(len);
    });
    m.visit_children_mut(&mut |name, child| {
        let len = join(prefix, name);
        walk_parameters_mut(child, prefix, f);
        prefix.truncate(len);
    });
}

/// A parameter or a buffer, as `state_dict` lists them.
pub(crate) enum State<'a> {
    Param(&'a Param),
    Buffer(&'a Buffer),
}

/// A parameter or a buffer, mutably.
pub(crate) enum StateMut<'a> {
    Param(&'a mut Param),
    Buffer(&'a mut Buffer),
}

/// Parameters and buffers in `_save_to_state_dict`'s order: a module's own
/// parameters, its own buffers, then each child's, depth first.
pub(crate) fn walk_state<'a, M: Module + ?Sized>(
    m: &'a M,
    prefix: &mut String,
    f: &mut dyn FnMut(&str, State<'a>),
) {
    m.visit_own_parameters(&mut |name, p| {
        let len = join(prefix, name);
        f(prefix, State::Param(p));
        prefix.truncate(len);
    });
    m.visit_own_buffers(&mut |name, b| {
        let len = join(prefix, name);
        f(prefix, State::Buffer(b));
        prefix.truncate(len);
    });
    m.visit_children(&mut |name, child| {
        let len = join(prefix, name);
        walk_state(child, prefix, f);
        prefix.truncate(len);
    });
}

/// [`walk_state`], mutably.
pub(crate) fn walk_state_mut<M: Module + ?Sized>(
    m: &mut M,
    prefix: &mut String,
    f: &mut dyn FnMut(&str, StateMut<'_>),
) {
    m.visit_own_parameters_mut(&mut |name, p| {
        let len = join(prefix, name);
        f(prefix, StateMut::Param(p));
        prefix.truncate(len);
    });
    m.visit_own_buffers_mut(&mut |name, b| {
        let len = join(prefix, name);
        f(prefix, StateMut::Buffer(b));
        prefix.truncate(len);
    });
    m.visit_children_mut(&mut |name, child| {
        let len = join(prefix, name);
        walk_state_mut(child, prefix, f);
        prefix.truncate(len);
    });
}

/// The start of a layer's backward pass: `Err` when no training forward
/// was recorded (or its backward already ran) or when `grad` does not have
/// the recorded output's shape `expected`; otherwise consumes the record.
pub(crate) fn begin_backward(
    recorded: &mut bool,
    name: &str,
    expected: (usize, usize),
    grad: &Tensor,
) -> Result<()> {
    if !*recorded {
        return Err(Error::NoRecordedForward {
            path: ModulePath::leaf(name),
        });
    }
    if grad.shape() != expected {
        return Err(Error::gradient_shape(name, expected, grad.shape()));
    }
    *recorded = false;
    Ok(())
}

/// Every buffer's value (own buffers, then each child's, depth first).
/// Builds no names: for a module without buffers it allocates nothing.
pub(crate) fn save_buffers<M: Module + ?Sized>(m: &M) -> Vec<Buffer> {
    fn walk(m: &dyn Module, out: &mut Vec<Buffer>) {
        m.visit_own_buffers(&mut |_, b| out.push(b.clone()));
        m.visit_children(&mut |_, c| walk(c, out));
    }
    let mut out = Vec::new();
    m.visit_own_buffers(&mut |_, b| out.push(b.clone()));
    m.visit_children(&mut |_, c| walk(c, &mut out));
    out
}

/// Puts back the buffers [`save_buffers`] took from the same module.
pub(crate) fn restore_buffers<M: Module + ?Sized>(m: &mut M, saved: Vec<Buffer>) {
    fn walk(m: &mut dyn Module, saved: &mut std::vec::IntoIter<Buffer>) {
        m.visit_own_buffers_mut(&mut |_, b| {
            if let Some(v) = saved.next() {
                *b = v;
            }
        });
        m.visit_children_mut(&mut |_, c| walk(c, saved));
    }
    if saved.is_empty() {
        return;
    }
    let mut saved = saved.into_iter();
    m.visit_own_buffers_mut(&mut |_, b| {
        if let Some(v) = saved.next() {
            *b = v;
        }
    });
    m.visit_children_mut(&mut |_, c| walk(c, &mut saved));
}

fn walk_modules<'a, M: Module + ?Sized>(
    m: &'a M,
    prefix: &mut String,
    f: &mut dyn FnMut(&str, &'a dyn Module),
) {
    m.visit_children(&mut |name, child| {
        let len = join(prefix, name);
        f(prefix, child);
        walk_modules(child, prefix, f);
        prefix.truncate(len);
    });
}
