//! The models and steps of the speed workloads (`benches/workloads.rs`,
//! `scripts/bench_pytorch.py`), shared with the allocation tests.
//!
//! f32; inputs uniform in [-1, 1]; fixed seeds.

use nncore::prelude::*;
use nncore::MSELoss;

/// `SimpleNet = Linear(100, 50) -> ReLU -> Linear(50, 10)`.
#[derive(Module, Debug)]
pub struct SimpleNet {
    /// `Linear(100, 50)`.
    pub fc1: Linear,
    /// `ReLU()`.
    pub relu: ReLU,
    /// `Linear(50, 10)`.
    pub fc2: Linear,
}

/// `Linear(784, 1024) -> ReLU -> Linear(1024, 1024) -> ReLU -> Linear(1024, 10)`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `Linear(784, 1024)`.
    pub fc1: Linear,
    /// `ReLU()`.
    pub relu1: ReLU,
    /// `Linear(1024, 1024)`.
    pub fc2: Linear,
    /// `ReLU()`.
    pub relu2: ReLU,
    /// `Linear(1024, 10)`.
    pub fc3: Linear,
}

/// SimpleNet with the weights of `torch.manual_seed(seed)`.
#[must_use]
pub fn simple_net(seed: u64) -> SimpleNet {
    nncore::with_seed(seed, || SimpleNet {
        fc1: Linear::new(100, 50),
        relu: ReLU::new(),
        fc2: Linear::new(50, 10),
    })
}

/// The MLP with the weights of `torch.manual_seed(seed)`.
#[must_use]
pub fn mlp(seed: u64) -> Mlp {
    nncore::with_seed(seed, || Mlp {
        fc1: Linear::new(784, 1024),
        relu1: ReLU::new(),
        fc2: Linear::new(1024, 1024),
        relu2: ReLU::new(),
        fc3: Linear::new(1024, 10),
    })
}

/// A `(batch, features)` input uniform in [-1, 1].
#[must_use]
pub fn input(batch: usize, features: usize, seed: u64) -> Tensor {
    nncore::Generator::new(seed).uniform_tensor(batch, features, -1.0, 1.0)
}

/// One training step: zero_grad, forward, MSE against a fixed target,
/// backward (of the parameters: the input is data, as in PyTorch), SGD (lr
/// 0.01). Holds its buffers so that steps after the
/// first allocate nothing.
#[derive(Debug)]
pub struct TrainStep<M> {
    /// The model.
    pub model: M,
    /// The optimizer.
    pub opt: Sgd,
    /// The input batch.
    pub x: Tensor,
    /// The fixed target.
    pub target: Tensor,
    grad: Tensor,
}

impl<M: Forward> TrainStep<M> {
    /// A step for `model` on a batch of `batch` with `outputs` targets.
    pub fn new(model: M, batch: usize, inputs: usize, outputs: usize) -> Self {
        Self {
            model,
            opt: Sgd::new(0.01),
            x: input(batch, inputs, 1),
            target: input(batch, outputs, 2),
            grad: Tensor::zeros(0, 0),
        }
    }

    /// Runs one step and returns the loss.
    ///
    /// # Errors
    /// Whatever the model, loss or optimizer reports.
    pub fn step(&mut self) -> nncore::Result<f32> {
        self.model.zero_grad();
        let out = self.model.forward_train(&self.x)?;
        let loss = MSELoss::new().forward_into(out, &self.target, &mut self.grad)?;
        self.model.backward_params(&self.grad)?;
        self.opt.step(&mut self.model)?;
        Ok(loss)
    }
}
