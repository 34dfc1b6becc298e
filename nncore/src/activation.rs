//! Activation functions.

use crate::module::{Forward, Module};
use crate::ops::ensure_shape;
use crate::{Error, ModulePath, Result, Tensor};

/// PyTorch's `nn.ReLU`: `max(x, 0)` element-wise (NaN stays NaN).
///
/// Shapes: any `(batch, features)` input; the output has the same shape.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// let relu = ReLU::new();
/// let y = relu.forward(&Tensor::from_row_slice(1, 3, &[-1.0, 0.0, 2.0]))?;
/// assert_eq!(y, Tensor::from_row_slice(1, 3, &[0.0, 0.0, 2.0]));
/// assert_eq!(relu.to_string(), "ReLU()");
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ReLU {
    training: bool,
    output: Tensor,
    grad_input: Tensor,
    recorded: bool,
}

impl Default for ReLU {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

impl ReLU {
    /// `nn.ReLU()`.
    #[must_use]
    pub fn new() -> Self {
        Self {
            training: true,
            output: Tensor::zeros(0, 0),
            grad_input: Tensor::zeros(0, 0),
            recorded: false,
        }
    }
}

impl Module for ReLU {
    fn name(&self) -> &str {
        "ReLU"
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn is_training(&self) -> bool {
        self.training
    }
}

impl Forward for ReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.map(relu))
    }

    fn forward_owned(&self, mut x: Tensor) -> Result<Tensor> {
        x.apply(|v| *v = relu(*v));
        Ok(x)
    }

    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
        ensure_shape(&mut self.output, x.nrows(), x.ncols());
        for (o, v) in self.output.iter_mut().zip(x.iter()) {
            *o = relu(*v);
        }
        self.recorded = true;
        Ok(&self.output)
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
        if !self.recorded {
            return Err(Error::NoRecordedForward {
                path: ModulePath::leaf("ReLU"),
            });
        }
        if grad.shape() != self.output.shape() {
            return Err(Error::InvalidInput {
                path: ModulePath::leaf("ReLU"),
                message: format!(
                    "expected gradient of shape [{}, {}], got [{}, {}]",
                    self.output.nrows(),
                    self.output.ncols(),
                    grad.nrows(),
                    grad.ncols()
                ),
            });
        }
        self.recorded = false;
        ensure_shape(&mut self.grad_input, grad.nrows(), grad.ncols());
        for ((d, g), o) in self
            .grad_input
            .iter_mut()
            .zip(grad.iter())
            .zip(self.output.iter())
        {
            *d = if *o > 0.0 { *g } else { 0.0 };
        }
        Ok(&self.grad_input)
    }
}

impl std::fmt::Display for ReLU {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fmt_repr(f)
    }
}
