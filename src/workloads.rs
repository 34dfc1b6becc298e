//! The models and steps of the speed workloads (`benches/workloads.rs`,
//! `scripts/bench_pytorch.py`), shared with the allocation tests.
//!
//! f32; inputs uniform in [-1, 1]; fixed seeds.

use nncore::MSELoss;
use nncore::prelude::*;

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

/// `Linear -> BatchNorm1d -> ReLU -> Linear -> LayerNorm -> Linear`: the
/// normalization layers in a chain (the allocation test, the norm bench).
#[derive(Module, Debug)]
pub struct NormMlp {
    /// `Linear(inputs, width)`.
    pub fc1: Linear,
    /// `BatchNorm1d(width)`.
    pub bn: BatchNorm1d,
    /// `ReLU()`.
    pub relu: ReLU,
    /// `Linear(width, width)`.
    pub fc2: Linear,
    /// `LayerNorm(width)`.
    pub ln: LayerNorm,
    /// `Linear(width, outputs)`.
    pub fc3: Linear,
}

/// The normalized MLP with the weights of `torch.manual_seed(seed)`.
#[must_use]
pub fn norm_mlp(seed: u64, inputs: usize, width: usize, outputs: usize) -> NormMlp {
    nncore::with_seed(seed, || NormMlp {
        fc1: Linear::new(inputs, width),
        bn: BatchNorm1d::new(width),
        relu: ReLU::new(),
        fc2: Linear::new(width, width),
        ln: LayerNorm::new(width),
        fc3: Linear::new(width, outputs),
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

impl<M: Backward> TrainStep<M> {
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

/// A residual block written as in PyTorch: `relu(fc2(relu(fc1(x))) + x)`.
#[derive(Module, Debug)]
pub struct ResBlock {
    /// `Linear(width, width)`.
    pub fc1: Linear,
    /// `Linear(width, width)`.
    pub fc2: Linear,
    /// The recording of the written forward.
    pub tape: Tape,
}

#[nncore::forward]
impl ResBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = relu(self.fc1(x)?);
        let h = self.fc2(h)?;
        Ok(relu(h + x))
    }
}

/// `stem -> blocks (residual, in a loop) -> head`, written as in PyTorch.
#[derive(Module, Debug)]
pub struct ResMlp {
    /// `Linear(inputs, width)`.
    pub stem: Linear,
    /// The residual blocks.
    pub blocks: Vec<ResBlock>,
    /// `Linear(width, outputs)`.
    pub head: Linear,
    /// The recording of the written forward.
    pub tape: Tape,
}

#[nncore::forward]
impl ResMlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.stem(x)?;
        for block in &self.blocks {
            h = block(h)?;
        }
        self.head(h)
    }
}

/// The same residual block written by hand with `custom_forward`: forward,
/// recording forward and backward, as before written forwards existed.
#[derive(Module, Debug)]
#[module(custom_forward)]
pub struct HandBlock {
    /// `Linear(width, width)`.
    pub fc1: Linear,
    /// `ReLU()`.
    pub relu: ReLU,
    /// `Linear(width, width)`.
    pub fc2: Linear,
    #[module(skip)]
    out: Tensor,
    #[module(skip)]
    grad_out: Tensor,
    #[module(skip)]
    grad_in: Tensor,
}

impl Forward for HandBlock {
    fn forward(&self, x: &Tensor) -> nncore::Result<Tensor> {
        let h = self.relu.forward_owned(self.fc1.forward(x)?)?;
        let h = self.fc2.forward(&h)? + x;
        self.relu.forward_owned(h)
    }
}

impl Backward for HandBlock {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> nncore::Result<&'a Tensor> {
        let h = self.fc1.forward_train(x)?;
        let h = self.relu.forward_train(h)?;
        let h = self.fc2.forward_train(h)?;
        nncore::ops::copy_into(h, &mut self.out);
        for (o, x) in self.out.as_mut_slice().iter_mut().zip(x.as_slice()) {
            *o = (*o + *x).max(0.0);
        }
        Ok(&self.out)
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> nncore::Result<&'a Tensor> {
        nncore::ops::copy_into(grad, &mut self.grad_out);
        for (g, o) in self
            .grad_out
            .as_mut_slice()
            .iter_mut()
            .zip(self.out.as_slice())
        {
            if *o <= 0.0 {
                *g = 0.0;
            }
        }
        let g = self.fc2.backward(&self.grad_out)?;
        let g = self.relu.backward(g)?;
        let g = self.fc1.backward(g)?;
        nncore::ops::copy_into(g, &mut self.grad_in);
        self.grad_in += &self.grad_out;
        Ok(&self.grad_in)
    }
}

/// `stem -> hand-written blocks -> head` (a derived chain).
#[derive(Module, Debug)]
pub struct HandResMlp {
    /// `Linear(inputs, width)`.
    pub stem: Linear,
    /// The residual blocks.
    pub blocks: Vec<HandBlock>,
    /// `Linear(width, outputs)`.
    pub head: Linear,
}

/// The written residual MLP (`inputs -> width`, `blocks` blocks, `-> outputs`)
/// with the weights of `torch.manual_seed(seed)`.
#[must_use]
pub fn res_mlp(seed: u64, inputs: usize, width: usize, blocks: usize, outputs: usize) -> ResMlp {
    nncore::with_seed(seed, || ResMlp {
        stem: Linear::new(inputs, width),
        blocks: (0..blocks)
            .map(|_| ResBlock {
                fc1: Linear::new(width, width),
                fc2: Linear::new(width, width),
                tape: Tape::default(),
            })
            .collect(),
        head: Linear::new(width, outputs),
        tape: Tape::default(),
    })
}

/// The hand-written twin of [`res_mlp`], with the same weights.
#[must_use]
pub fn hand_res_mlp(
    seed: u64,
    inputs: usize,
    width: usize,
    blocks: usize,
    outputs: usize,
) -> HandResMlp {
    nncore::with_seed(seed, || HandResMlp {
        stem: Linear::new(inputs, width),
        blocks: (0..blocks)
            .map(|_| HandBlock {
                fc1: Linear::new(width, width),
                relu: ReLU::new(),
                fc2: Linear::new(width, width),
                out: Tensor::zeros(0, 0),
                grad_out: Tensor::zeros(0, 0),
                grad_in: Tensor::zeros(0, 0),
            })
            .collect(),
        head: Linear::new(width, outputs),
    })
}

/// LeNet-5 for 28x28 grey images: `Conv2d(1, 6, 5) -> ReLU -> MaxPool2d(2)
/// -> Conv2d(6, 16, 5) -> ReLU -> MaxPool2d(2) -> Flatten -> Linear(256,
/// 120) -> ReLU -> Linear(120, 84) -> ReLU -> Linear(84, 10)`.
#[derive(Module, Debug)]
pub struct LeNet {
    /// `Conv2d(1, 6, 5)`.
    pub conv1: Conv2d,
    /// `ReLU()`.
    pub relu1: ReLU,
    /// `MaxPool2d(2)`.
    pub pool1: MaxPool2d,
    /// `Conv2d(6, 16, 5)`.
    pub conv2: Conv2d,
    /// `ReLU()`.
    pub relu2: ReLU,
    /// `MaxPool2d(2)`.
    pub pool2: MaxPool2d,
    /// `Flatten()`.
    pub flat: Flatten,
    /// `Linear(256, 120)`.
    pub fc1: Linear,
    /// `ReLU()`.
    pub relu3: ReLU,
    /// `Linear(120, 84)`.
    pub fc2: Linear,
    /// `ReLU()`.
    pub relu4: ReLU,
    /// `Linear(84, 10)`.
    pub fc3: Linear,
}

/// LeNet with the weights of `torch.manual_seed(seed)`.
#[must_use]
pub fn lenet(seed: u64) -> LeNet {
    nncore::with_seed(seed, || LeNet {
        conv1: Conv2d::new(1, 6, 5),
        relu1: ReLU::new(),
        pool1: MaxPool2d::new(2),
        conv2: Conv2d::new(6, 16, 5),
        relu2: ReLU::new(),
        pool2: MaxPool2d::new(2),
        flat: Flatten::new(),
        fc1: Linear::new(256, 120),
        relu3: ReLU::new(),
        fc2: Linear::new(120, 84),
        relu4: ReLU::new(),
        fc3: Linear::new(84, 10),
    })
}

/// A batch of `batch` images `1 x 28 x 28`, uniform in [-1, 1].
#[must_use]
pub fn images(batch: usize, seed: u64) -> NdTensor {
    NdTensor::new(input(batch, 28 * 28, seed), Dims::image(1, 28, 28))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One LeNet training step: zero_grad, forward, cross-entropy on fixed
/// labels, backward of the parameters, SGD (lr 0.01).
#[derive(Debug)]
pub struct CnnStep {
    /// The model.
    pub model: LeNet,
    /// The optimizer.
    pub opt: Sgd,
    /// The input batch.
    pub x: NdTensor,
    /// The labels.
    pub labels: Vec<usize>,
}

impl CnnStep {
    /// A step on a batch of `batch` images.
    #[must_use]
    pub fn new(batch: usize) -> Self {
        Self {
            model: lenet(0),
            opt: Sgd::new(0.01),
            x: images(batch, 1),
            labels: (0..batch).map(|i| (i * 7) % 10).collect(),
        }
    }

    /// Runs one step and returns the loss.
    ///
    /// # Errors
    /// Whatever the model, loss or optimizer reports.
    pub fn step(&mut self) -> nncore::Result<f32> {
        self.model.zero_grad();
        let (out, _) = self.model.forward_train_nd(&self.x)?;
        let (loss, grad) = cross_entropy(out, &self.labels)?;
        self.model.backward_params(&grad)?;
        self.opt.step(&mut self.model)?;
        Ok(loss)
    }
}
