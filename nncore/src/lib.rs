//! # nncore
//!
//! The runtime of a PyTorch-style neural network library: tensors on
//! nalgebra, layers, the [`Module`] and [`Forward`] traits, and the
//! `#[derive(Module)]` macro that wires a struct of layers into a model
//! that prints, registers its parameters and runs forward exactly as the
//! same `nn.Module` does in PyTorch.
//!
//! ```
//! use nncore::prelude::*;
//!
//! #[derive(Module)]
//! struct SimpleNet {
//!     fc1: Linear,
//!     relu: ReLU,
//!     fc2: Linear,
//! }
//!
//! let model = SimpleNet {
//!     fc1: Linear::new(100, 50),
//!     relu: ReLU::new(),
//!     fc2: Linear::new(50, 10),
//! };
//! let y = model.forward(&Tensor::zeros(64, 100))?;
//! assert_eq!(y.shape(), (64, 10));
//! assert_eq!(model.num_parameters(), 5560);
//! # Ok::<(), nncore::Error>(())
//! ```
//!
//! # A path through the crate
//!
//! ## 1. Define and print
//! Fields are layers; the derive registers their parameters under
//! PyTorch's names (`fc1.weight`) and prints exactly what `print(model)`
//! prints. Layers: [`Linear`], the activations ([`ReLU`], [`GELU`], ...),
//! [`Dropout`], [`LayerNorm`], [`BatchNorm1d`]. `nncore::prelude::*` brings
//! them all.
//!
//! ## 2. Train
//! Training is the [`Backward`] trait, which a model has when every layer
//! in it can be trained (the compiler checks it: training a model with a
//! hand-written layer that has no backward pass does not compile).
//! [`Backward::forward_train`] records what [`Backward::backward`] needs; a
//! loss gives the output's gradient; an optimizer steps:
//!
//! ```
//! use nncore::prelude::*;
//!
//! #[derive(Module)]
//! struct Net { fc1: Linear, relu: ReLU, fc2: Linear }
//!
//! let mut net = Net { fc1: Linear::new(4, 8), relu: ReLU::new(), fc2: Linear::new(8, 3) };
//! let mut opt = Adam::new(1e-2);
//! let x = nncore::rand_uniform(16, 4, -1.0, 1.0);
//! let labels: Vec<u64> = (0..16).map(|i| i % 3).collect();
//! for _ in 0..50 {
//!     net.zero_grad();
//!     let logits = net.forward_train(&x)?;
//!     let (loss, grad) = cross_entropy(logits, &labels)?;
//!     net.backward_params(&grad)?;
//!     opt.step(&mut net)?;
//!     let _ = loss;
//! }
//! # Ok::<(), nncore::Error>(())
//! ```
//!
//! Losses: [`MSELoss`], [`CrossEntropyLoss`], [`BCEWithLogitsLoss`];
//! optimizers: [`Sgd`], [`Adam`] (and `Adam::adamw`); schedules:
//! [`StepLr`], [`CosineAnnealingLr`]; clipping: [`clip_grad_norm_`].
//!
//! ## 3. Containers
//! [`Sequential`] (`seq![...]`) is `nn.Sequential`; `Vec<M>` and `[M; N]`
//! fields are `nn.ModuleList`; `Option<M>` fields register only when
//! `Some`; `Vec<Box<dyn Layer>>` mixes layer types ([`Layer`]).
//!
//! ## 4. Write `forward`
//! Anything but a plain chain (a residual block, a gate, a concatenation)
//! is written as PyTorch's `forward` is, and trains with no hand-written
//! gradient: give the struct a [`Tape`] field and put [`macro@forward`] on
//! an `impl` block (see [`Tape`] and [`Forward`] for examples, and the
//! README for what a forward may contain). [`gradcheck`] checks any
//! module's backward against finite differences. A layer written wholly
//! by hand takes `#[module(custom_forward)]`, an `impl` [`Forward`] and, to
//! be trained, an `impl` [`Backward`] (example there).
//!
//! ## 5. Images
//! A batch of images is an [`NdTensor`] `(N, C, H, W)`; models take it
//! through [`ForwardExt::forward_nd`] and [`ForwardExt::forward_train_nd`].
//! Layers: [`Conv2d`] ([`Conv2dConfig`] for stride, [`Padding`],
//! [`PaddingMode`], dilation, groups), [`MaxPool2d`], [`AvgPool2d`], [`AdaptiveAvgPool2d`],
//! [`Flatten`], [`BatchNorm2d`], [`Dropout2d`]; [`summary_nd`] prints their shapes and
//! [`GradCheck::run_nd`] checks their gradients. See [`shape`] for how
//! images are stored.
//!
//! ## 6. Weights, buffers and checkpoints
//! [`ModuleExt::save_safetensors`] / [`ModuleExt::load_safetensors`] exchange
//! files with PyTorch's `safetensors.torch` under the same names, shapes
//! and order, buffers ([`Buffer`], BatchNorm's running statistics)
//! included; a failed load reports everything and changes nothing
//! ([`LoadError`]). [`save_checkpoint`] / [`load_checkpoint`] add the
//! optimizer's and schedule's state, for bit-exact resumption.
//!
//! ## 7. Inspect
//! [`summary()`](fn@summary) prints torchinfo's table; [`ModuleExt::named_parameters`],
//! [`ModuleExt::named_buffers`], [`ModuleExt::state_dict`] list what a model holds.
//!
//! ## 8. Speed
//! [`Forward::forward_into`] writes into a caller's output with buffers
//! from a [`Workspace`]: after the first call of a shape it allocates
//! nothing, and training steps after the first allocate nothing either.
//! One row runs on a batch-1 kernel, a few rows on a small-batch kernel,
//! larger batches on faer's GEMM; [`ops::set_num_threads`] sets the
//! threads. The README has the measurements.
//!
//! ## Tensors
//! A [`Tensor`] is nalgebra's `DMatrix<f32>` of shape `(batch, features)`,
//! one row per sample, like PyTorch's 2-D inputs (an [`NdTensor`] adds the
//! shape of each sample to one). nalgebra stores matrices
//! **column-major**; PyTorch stores row-major. Conversions to and from
//! PyTorch's layout go through [`Param::to_row_major`] and
//! [`Param::copy_from_row_major`].
#![deny(missing_docs)]

extern crate self as nncore;

mod activation;
mod buffer;
#[doc(hidden)]
pub mod chain;
mod checkpoint;
mod clip;
mod container;
mod conv;
mod dropout;
mod error;
mod forward;
mod gradcheck;
#[doc(hidden)]
pub mod kernels;
mod linear;
mod loss;
mod module;
mod norm;
pub mod ops;
mod optim;
mod param;
mod pool;
mod print;
mod rng;
mod serialize;
pub mod shape;
mod summary;
mod threads;
mod written;

pub use activation::{GELU, GeluApproximate, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh};
pub use buffer::Buffer;
pub use checkpoint::{OptimizerState, SchedulerState, load_checkpoint, save_checkpoint};
pub use clip::{clip_grad_norm_, clip_grad_norm_with, clip_grad_value_};
pub use container::{Layer, Sequential};
pub use conv::{Conv2d, Conv2dConfig, Padding, PaddingMode};
pub use dropout::{Dropout, Dropout2d};
pub use error::{Error, ModulePath, Result};
/// Internals of printing and of the chain engine; not public API.
#[doc(hidden)]
pub use forward::Flow;
pub use forward::{Backward, Forward, ForwardExt, Workspace};
pub use gradcheck::{GradCheck, GradCheckReport, gradcheck};
pub use linear::Linear;
pub use loss::{
    BCEWithLogitsLoss, CrossEntropyLoss, LossOutput, MSELoss, Reduction, bce_with_logits,
    cross_entropy, mse_loss,
};
pub use module::{Module, ModuleExt};
pub use norm::{BatchNorm1d, BatchNorm2d, LayerNorm};
pub use optim::{
    Adam, AdamW, CosineAnnealingLr, LrScheduler, Optimizer, OptimizerCheckpoint,
    SchedulerCheckpoint, Sgd, StepLr,
};
pub use param::Param;
pub use pool::{AdaptiveAvgPool2d, AvgPool2d, Flatten, MaxPool2d};
pub use print::repr;
#[doc(hidden)]
pub use print::{add_indent, fmt_module};
pub use rng::{
    DEFAULT_SEED, Generator, manual_seed, rand_uniform, with_default_generator, with_seed,
};
pub use serialize::{
    DType, LoadError, LoadOptions, LoadReport, SaveDtype, SaveOptions, StateDict, TensorData,
};
pub use shape::{Dims, MAX_DIMS, NdTensor, Size2d};
pub use summary::Trace;
pub use summary::{Summary, SummaryRow, human_count, summary, summary_nd};
pub use written::{Tape, Var};

/// `#[derive(Module)]`: see the [`Module`] trait and the crate's README.
pub use nnmacro::Module;

/// `#[nncore::forward]`: write `forward` as in PyTorch and get training
/// for free (see [`Tape`]).
pub use nnmacro::forward;

/// nalgebra, re-exported so that users need not depend on the same
/// version themselves.
pub use nalgebra;

/// A 2-D `f32` tensor: nalgebra's `DMatrix<f32>`, **column-major**, of
/// shape `(batch, features)` for layer inputs and outputs.
pub type Tensor = nalgebra::DMatrix<f32>;

/// Re-exports the generated code uses; not public API.
#[doc(hidden)]
pub mod __private_v1 {
    pub use crate::chain;
    pub use crate::forward::Flow;
    pub use crate::written::{
        Binary, Engine, Eval, HasTape, ScalarOp, Site, Unary, Written, backward, backward_params,
        dyn_mut, forward, forward_dims, forward_into, forward_into_dims, forward_traced,
        forward_traced_dims, forward_train, forward_train_dims,
    };
    pub use std::string::String;

    /// A child module as `dyn Module`; the derive calls it spanned on a
    /// field's type, so that a field that is not a module is reported
    /// there, once.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a module",
        label = "`{Self}` does not implement `nncore::Module`",
        note = "derive it with `#[derive(Module)]`, or mark a field that holds plain data with `#[module(skip)]`"
    )]
    pub trait Child {
        /// `self` as a module.
        fn as_module(&self) -> &dyn crate::Module;
        /// `self` as a mutable module.
        fn as_module_mut(&mut self) -> &mut dyn crate::Module;
    }

    impl<M: crate::Module> Child for M {
        #[inline]
        fn as_module(&self) -> &dyn crate::Module {
            self
        }
        #[inline]
        fn as_module_mut(&mut self) -> &mut dyn crate::Module {
            self
        }
    }
}

/// What a model file needs: `use nncore::prelude::*;`.
///
/// It brings `Result` (nncore's, `Result<T, E = nncore::Error>`, so that
/// `Result<T, OtherError>` keeps working), the layers, containers, losses,
/// optimizers, `Tape` and the `forward` attribute, and [`ModuleExt`]
/// (`named_parameters`, `state_dict`, `train`, ...).
pub mod prelude {
    pub use crate::{
        Adam, AdaptiveAvgPool2d, AvgPool2d, BCEWithLogitsLoss, Backward, BatchNorm1d, BatchNorm2d,
        Buffer, Conv2d, CrossEntropyLoss, Dims, Dropout, Flatten, Forward, ForwardExt, GELU,
        GeluApproximate, Identity, LayerNorm, LeakyReLU, Linear, LoadOptions, LrScheduler, MSELoss,
        MaxPool2d, Module, ModuleExt, NdTensor, Optimizer, OptimizerCheckpoint, Param, ReLU,
        Reduction, Result, SchedulerCheckpoint, Sequential, Sgd, Sigmoid, Softmax, Tanh, Tape,
        Tensor, bce_with_logits, clip_grad_norm_, clip_grad_value_, cross_entropy, forward,
        mse_loss, seq,
    };
}
