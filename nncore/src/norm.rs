//! Normalization layers.

use std::fmt;

use crate::activation::py_float;
use crate::kernels;
use crate::module::{Forward, Module};
use crate::ops::ensure_shape;
use crate::{Error, ModulePath, Param, Result, Tensor};

/// PyTorch's `nn.LayerNorm(normalized_shape)` over the features of a
/// `(batch, features)` input: each row is normalized to mean 0 and
/// variance 1 (the biased variance, with `eps` added), then scaled by
/// `weight` and shifted by `bias`.
///
/// Shapes: input and output `(batch, normalized_shape)`; `weight` and
/// `bias` `[normalized_shape]`, initialized to ones and zeros as in
/// PyTorch.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// use nncore::LayerNorm;
///
/// let ln = LayerNorm::new(4);
/// assert_eq!(ln.to_string(), "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)");
/// let y = ln.forward(&Tensor::from_row_slice(1, 4, &[1.0, 2.0, 3.0, 4.0]))?;
/// assert!((y.row(0).sum()).abs() < 1e-5);
/// let plain = LayerNorm::with_options(4, 1e-3, false, false);
/// assert_eq!(plain.num_parameters(), 0);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LayerNorm {
    features: usize,
    eps: f64,
    affine: bool,
    weight: Option<Param>,
    bias: Option<Param>,
    training: bool,
    // Training buffers: the normalized input, 1/std per row, the output
    // and the input gradient.
    xhat: Tensor,
    rstd: Vec<f32>,
    output: Tensor,
    grad_input: Tensor,
    scratch: Vec<f32>,
    col_sums: Vec<f32>,
    recorded: bool,
}

impl LayerNorm {
    /// `nn.LayerNorm(features)`: `eps=1e-5`, with a weight and a bias.
    #[must_use]
    pub fn new(features: usize) -> Self {
        Self::with_options(features, 1e-5, true, true)
    }

    /// `nn.LayerNorm(features, eps, elementwise_affine, bias)`; `bias` only
    /// applies with `elementwise_affine`, as in PyTorch.
    #[must_use]
    pub fn with_options(features: usize, eps: f64, elementwise_affine: bool, bias: bool) -> Self {
        let ones = vec![1.0; features];
        let zeros = vec![0.0; features];
        Self {
            features,
            eps,
            affine: elementwise_affine,
            weight: elementwise_affine.then(|| Param::vector(&ones)),
            bias: (elementwise_affine && bias).then(|| Param::vector(&zeros)),
            training: true,
            xhat: Tensor::zeros(0, 0),
            rstd: Vec::new(),
            output: Tensor::zeros(0, 0),
            grad_input: Tensor::zeros(0, 0),
            scratch: Vec::new(),
            col_sums: Vec::new(),
            recorded: false,
        }
    }

    /// The normalized features.
    #[must_use]
    pub fn normalized_shape(&self) -> usize {
        self.features
    }

    /// `eps`.
    #[must_use]
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// The weight (`[features]`), with `elementwise_affine`.
    #[must_use]
    pub fn weight(&self) -> Option<&Param> {
        self.weight.as_ref()
    }

    /// The bias (`[features]`), with `elementwise_affine` and `bias`.
    #[must_use]
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        if x.ncols() != self.features {
            return Err(Error::InvalidInput {
                path: ModulePath::leaf("LayerNorm"),
                message: format!(
                    "Given normalized_shape=[{}], expected input with shape [*, {}], but got input of size[{}, {}]",
                    self.features,
                    self.features,
                    x.nrows(),
                    x.ncols()
                ),
            });
        }
        Ok(())
    }

    /// `out = xhat * weight + bias` with the per-row statistics in `mean`
    /// and `rstd`; `xhat` is kept when given (training).
    fn compute(
        &self,
        x: &Tensor,
        xhat: Option<&mut Tensor>,
        rstd: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        out: &mut Tensor,
    ) {
        let (rows, cols) = x.shape();
        ensure_shape(out, rows, cols);
        rstd.resize(rows, 0.0);
        mean.resize(rows, 0.0);
        kernels::row_moments(x.as_slice(), rows, self.eps as f32, mean, rstd);
        let w = self.weight.as_ref().map(|p| p.value().as_slice());
        let b = self.bias.as_ref().map(|p| p.value().as_slice());
        let xhat = xhat.map(|h| {
            ensure_shape(h, rows, cols);
            h.as_mut_slice()
        });
        kernels::normalize_rows(
            x.as_slice(),
            rows,
            mean,
            rstd,
            w,
            b,
            xhat,
            out.as_mut_slice(),
        );
    }
}

impl Module for LayerNorm {
    fn name(&self) -> &str {
        "LayerNorm"
    }

    fn extra_repr(&self) -> String {
        format!(
            "({},), eps={}, elementwise_affine={}, bias={}",
            self.features,
            py_float(self.eps),
            if self.affine { "True" } else { "False" },
            if self.bias.is_some() { "True" } else { "False" }
        )
    }

    fn visit_own_parameters<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) {
        if let Some(w) = &self.weight {
            f("weight", w);
        }
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }

    fn visit_own_parameters_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        if let Some(w) = &mut self.weight {
            f("weight", w);
        }
        if let Some(b) = &mut self.bias {
            f("bias", b);
        }
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn is_training(&self) -> bool {
        self.training
    }
}

impl Forward for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check(x)?;
        let mut out = Tensor::zeros(0, 0);
        let (mut rstd, mut mean) = (Vec::new(), Vec::new());
        self.compute(x, None, &mut rstd, &mut mean, &mut out);
        Ok(out)
    }

    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
        self.check(x)?;
        let mut xhat = std::mem::replace(&mut self.xhat, Tensor::zeros(0, 0));
        let mut out = std::mem::replace(&mut self.output, Tensor::zeros(0, 0));
        let mut rstd = std::mem::take(&mut self.rstd);
        let mut mean = std::mem::take(&mut self.scratch);
        self.compute(x, Some(&mut xhat), &mut rstd, &mut mean, &mut out);
        (self.xhat, self.output, self.rstd, self.scratch) = (xhat, out, rstd, mean);
        self.recorded = true;
        Ok(&self.output)
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
        if !self.recorded {
            return Err(Error::NoRecordedForward {
                path: ModulePath::leaf("LayerNorm"),
            });
        }
        if grad.shape() != self.xhat.shape() {
            return Err(Error::gradient_shape(
                "LayerNorm",
                self.xhat.shape(),
                grad.shape(),
            ));
        }
        self.recorded = false;
        let (rows, cols) = grad.shape();
        let (g, h) = (grad.as_slice(), self.xhat.as_slice());
        let w = self.weight.as_ref().map(|p| p.value().as_slice());
        self.scratch.resize(2 * rows, 0.0);
        self.col_sums.resize(2 * cols, 0.0);
        ensure_shape(&mut self.grad_input, rows, cols);
        kernels::layer_norm_dx(
            g,
            h,
            rows,
            &self.rstd,
            w,
            &mut self.scratch,
            &mut self.col_sums,
            self.grad_input.as_mut_slice(),
        );
        // The weight's and bias's gradients, summed over the rows above.
        let (gw, gb) = self.col_sums.split_at(cols);
        if let Some((_, dw, acc)) = self.weight.as_mut().and_then(Param::grad_slot) {
            for (d, s) in dw.as_mut_slice().iter_mut().zip(gw) {
                *d = if acc { *d + s } else { *s };
            }
        }
        if let Some((_, db, acc)) = self.bias.as_mut().and_then(Param::grad_slot) {
            for (d, s) in db.as_mut_slice().iter_mut().zip(gb) {
                *d = if acc { *d + s } else { *s };
            }
        }
        Ok(&self.grad_input)
    }
}

impl fmt::Display for LayerNorm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_repr(f)
    }
}
