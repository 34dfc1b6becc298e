//! Dropout.

use std::fmt;

use crate::forward::{Backward, Forward};
use crate::module::Module;
use crate::ops::ensure_shape;
use crate::print::py_float;
use crate::{Error, Generator, ModulePath, Result, Tensor, with_default_generator};

/// PyTorch's `nn.Dropout(p)`: in training, each element is zeroed with
/// probability `p` and the survivors are scaled by `1 / (1 - p)`.
///
/// Dropout acts only in [`Backward::forward_train`] while the module is in
/// training mode (`model.train()`, the default). [`Forward::forward`] is
/// inference and always the identity, whatever the mode: in nncore,
/// training state never changes what `forward` returns, so that a model can
/// serve predictions from several threads while another one trains.
///
/// The masks are drawn from the default generator at each training forward,
/// as PyTorch draws them (so `nncore::manual_seed` makes them
/// reproducible, and building a `Dropout` draws nothing, keeping the other
/// layers' initial weights equal to PyTorch's), or from the layer's own
/// generator given with [`Dropout::with_generator`]. The masks are not
/// PyTorch's bit for bit.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// use nncore::Dropout;
/// let mut d = Dropout::new(0.5)?;
/// assert_eq!(d.to_string(), "Dropout(p=0.5, inplace=False)");
/// let x = Tensor::from_element(4, 100, 1.0);
/// let y = d.forward_train(&x)?.clone();
/// assert!(y.iter().all(|v| *v == 0.0 || *v == 2.0));
/// d.eval();
/// assert_eq!(d.forward_train(&x)?, &x);
/// assert_eq!(d.forward(&x)?, x);
/// assert!(Dropout::new(1.5).is_err());
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug)]
pub struct Dropout {
    p: f64,
    training: bool,
    generator: Option<Generator>,
    mask: Tensor,
    output: Tensor,
    grad_input: Tensor,
    /// What the last `forward_train` did: `None` before any, `Some(true)`
    /// when it applied a mask, `Some(false)` when it was the identity.
    recorded: Option<bool>,
    /// The shape of the last `forward_train`'s input.
    shape: (usize, usize),
}

impl Dropout {
    /// `nn.Dropout(p)`, drawing its masks from the default generator.
    ///
    /// # Errors
    /// `p` outside `[0, 1]` (PyTorch's message).
    pub fn new(p: f64) -> Result<Self> {
        Self::build(p, None)
    }

    /// `nn.Dropout(p)` drawing its masks from its own `generator`.
    ///
    /// # Errors
    /// `p` outside `[0, 1]`.
    pub fn with_generator(p: f64, generator: Generator) -> Result<Self> {
        Self::build(p, Some(generator))
    }

    fn build(p: f64, generator: Option<Generator>) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::InvalidArgument(format!(
                "dropout probability has to be between 0 and 1, but got {}",
                py_float(p)
            )));
        }
        Ok(Self {
            p,
            training: true,
            generator,
            mask: Tensor::zeros(0, 0),
            output: Tensor::zeros(0, 0),
            grad_input: Tensor::zeros(0, 0),
            recorded: None,
            shape: (0, 0),
        })
    }

    /// The drop probability.
    #[must_use]
    pub fn p(&self) -> f64 {
        self.p
    }
}

impl Module for Dropout {
    fn name(&self) -> &str {
        "Dropout"
    }

    fn extra_repr(&self) -> String {
        format!("p={}, inplace=False", py_float(self.p))
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn is_training(&self) -> bool {
        self.training
    }
}

impl Forward for Dropout {
    fn is_elementwise(&self) -> bool {
        true
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }

    fn forward_owned(&self, x: Tensor) -> Result<Tensor> {
        Ok(x)
    }

    fn forward_row<'y>(
        &self,
        x: &[f32],
        y: &'y mut [std::mem::MaybeUninit<f32>],
        act: Option<crate::forward::Activation>,
    ) -> Option<&'y mut [f32]> {
        crate::forward::copy_row(x, y, act)
    }

    fn forward_into(&self, x: &Tensor, out: &mut Tensor, _ws: &mut crate::Workspace) -> Result<()> {
        crate::ops::copy_into(x, out);
        Ok(())
    }
}

impl Backward for Dropout {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
        self.shape = x.shape();
        if !self.training || self.p == 0.0 {
            self.recorded = Some(false);
            return Ok(x);
        }
        ensure_shape(&mut self.mask, x.nrows(), x.ncols());
        ensure_shape(&mut self.output, x.nrows(), x.ncols());
        let p = self.p as f32;
        let scale = if self.p >= 1.0 {
            0.0
        } else {
            (1.0 / (1.0 - self.p)) as f32
        };
        let (mask, output) = (&mut self.mask, &mut self.output);
        let mut fill = |g: &mut Generator| {
            for ((m, o), v) in mask
                .as_mut_slice()
                .iter_mut()
                .zip(output.as_mut_slice())
                .zip(x.as_slice())
            {
                *m = if g.uniform(0.0, 1.0) < p { 0.0 } else { scale };
                *o = *v * *m;
            }
        };
        match &mut self.generator {
            Some(g) => fill(g),
            None => with_default_generator(fill),
        }
        self.recorded = Some(true);
        Ok(&self.output)
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
        let recorded = self.recorded.take();
        if recorded.is_some() && grad.shape() != self.shape {
            return Err(Error::gradient_shape("Dropout", self.shape, grad.shape()));
        }
        match recorded {
            None => Err(Error::NoRecordedForward {
                path: ModulePath::leaf("Dropout"),
            }),
            Some(false) => Ok(grad),
            Some(true) => {
                ensure_shape(&mut self.grad_input, grad.nrows(), grad.ncols());
                for ((d, g), m) in self
                    .grad_input
                    .as_mut_slice()
                    .iter_mut()
                    .zip(grad.as_slice())
                    .zip(self.mask.as_slice())
                {
                    *d = *g * *m;
                }
                Ok(&self.grad_input)
            }
        }
    }
}

impl fmt::Display for Dropout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_repr(f)
    }
}

/// PyTorch's `nn.Dropout2d(p)`: in training, each channel of each image
/// of an `(N, C, H, W)` batch is zeroed as a whole with probability `p`,
/// and the surviving channels are scaled by `1 / (1 - p)`.
///
/// As [`Dropout`]: it acts only in the training forward in training mode,
/// the masks (one value per image and channel, drawn in that order) come
/// from the default generator or the layer's own (not PyTorch's masks bit
/// for bit), and inference is the identity. Images only (`forward_nd`,
/// `forward_train_nd`).
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// use nncore::Dropout2d;
/// let mut d = Dropout2d::new(0.5)?;
/// assert_eq!(d.to_string(), "Dropout2d(p=0.5, inplace=False)");
/// let x = NdTensor::from_row_major(&[2, 3, 2, 2], &[1.0; 24])?;
/// let (y, _) = d.forward_train_nd(&x)?;
/// let y = NdTensor::new(y.clone(), x.dims())?;
/// // Each channel of each image is all 0 or all 2.
/// for n in 0..2 {
///     for c in 0..3 {
///         let v = y.get(&[n, c, 0, 0]).unwrap();
///         assert!(v == 0.0 || v == 2.0);
///         assert!((0..2).all(|h| (0..2).all(|w| y.get(&[n, c, h, w]) == Some(v))));
///     }
/// }
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug)]
pub struct Dropout2d {
    p: f64,
    training: bool,
    generator: Option<Generator>,
    // One factor per (image, channel), image fastest, and the shape of the
    // last training forward's input (N, C, H*W).
    mask: Vec<f32>,
    output: Tensor,
    grad_input: Tensor,
    recorded: Option<bool>,
    shape: (usize, usize, usize),
}

impl Dropout2d {
    /// `nn.Dropout2d(p)`, drawing its masks from the default generator.
    ///
    /// # Errors
    /// `p` outside `[0, 1]` (PyTorch's message).
    pub fn new(p: f64) -> Result<Self> {
        Self::build(p, None)
    }

    /// `nn.Dropout2d(p)` drawing its masks from its own `generator`.
    ///
    /// # Errors
    /// `p` outside `[0, 1]`.
    pub fn with_generator(p: f64, generator: Generator) -> Result<Self> {
        Self::build(p, Some(generator))
    }

    fn build(p: f64, generator: Option<Generator>) -> Result<Self> {
        Dropout::build(p, None)?;
        Ok(Self {
            p,
            training: true,
            generator,
            mask: Vec::new(),
            output: Tensor::zeros(0, 0),
            grad_input: Tensor::zeros(0, 0),
            recorded: None,
            shape: (0, 0, 0),
        })
    }

    /// The drop probability.
    #[must_use]
    pub fn p(&self) -> f64 {
        self.p
    }

    /// `out = x * mask`, one factor per (image, channel): in `CHWN` order
    /// channel `c` of the batch is a run of `H*W` blocks of `N` values.
    fn apply(mask: &[f32], x: &[f32], (n, c, hw): (usize, usize, usize), out: &mut [f32]) {
        for ch in 0..c {
            let m = &mask[ch * n..(ch + 1) * n];
            let at = ch * hw * n;
            for (o, v) in out[at..at + hw * n]
                .chunks_exact_mut(n.max(1))
                .zip(x[at..at + hw * n].chunks_exact(n.max(1)))
            {
                for ((o, v), m) in o.iter_mut().zip(v).zip(m) {
                    *o = v * m;
                }
            }
        }
    }
}

impl Module for Dropout2d {
    fn name(&self) -> &str {
        "Dropout2d"
    }

    fn extra_repr(&self) -> String {
        format!("p={}, inplace=False", py_float(self.p))
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn is_training(&self) -> bool {
        self.training
    }
}

impl Forward for Dropout2d {
    /// A plain matrix has no channels: use
    /// [`ForwardExt::forward_nd`](crate::ForwardExt::forward_nd).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Err(crate::shape::needs_image("Dropout2d", x))
    }

    fn forward_dims(&self, x: &Tensor, dims: crate::Dims) -> Result<(Tensor, crate::Dims)> {
        crate::forward::check_dims("Dropout2d", x, dims)?;
        dims.chw("Dropout2d", x.nrows())?;
        Ok((x.clone(), dims))
    }

    fn forward_owned_dims(&self, x: Tensor, dims: crate::Dims) -> Result<(Tensor, crate::Dims)> {
        crate::forward::check_dims("Dropout2d", &x, dims)?;
        dims.chw("Dropout2d", x.nrows())?;
        Ok((x, dims))
    }

    fn forward_into_dims(
        &self,
        x: &Tensor,
        dims: crate::Dims,
        out: &mut Tensor,
        _ws: &mut crate::Workspace,
    ) -> Result<crate::Dims> {
        crate::forward::check_dims("Dropout2d", x, dims)?;
        dims.chw("Dropout2d", x.nrows())?;
        crate::ops::copy_into(x, out);
        Ok(dims)
    }
}

impl Backward for Dropout2d {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
        Err(crate::shape::needs_image("Dropout2d", x))
    }

    fn forward_train_dims<'a>(
        &'a mut self,
        x: &'a Tensor,
        dims: crate::Dims,
    ) -> Result<(&'a Tensor, crate::Dims)> {
        crate::forward::check_dims("Dropout2d", x, dims)?;
        let (c, h, w) = dims.chw("Dropout2d", x.nrows())?;
        let n = x.nrows();
        self.shape = (n, c, h * w);
        if !self.training || self.p == 0.0 {
            self.recorded = Some(false);
            return Ok((x, dims));
        }
        let p = self.p as f32;
        let scale = if self.p >= 1.0 {
            0.0
        } else {
            (1.0 / (1.0 - self.p)) as f32
        };
        // Drawn image by image, channel by channel; stored channel-major
        // for `apply`.
        self.mask.clear();
        self.mask.resize(n * c, 0.0);
        let mask = &mut self.mask;
        let mut fill = |g: &mut Generator| {
            for img in 0..n {
                for ch in 0..c {
                    mask[ch * n + img] = if g.uniform(0.0, 1.0) < p { 0.0 } else { scale };
                }
            }
        };
        match &mut self.generator {
            Some(g) => fill(g),
            None => with_default_generator(fill),
        }
        ensure_shape(&mut self.output, n, x.ncols());
        Self::apply(
            &self.mask,
            x.as_slice(),
            self.shape,
            self.output.as_mut_slice(),
        );
        self.recorded = Some(true);
        Ok((&self.output, dims))
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
        let recorded = self.recorded.take();
        let (n, c, hw) = self.shape;
        if recorded.is_some() && grad.shape() != (n, c * hw) {
            return Err(Error::gradient_shape(
                "Dropout2d",
                (n, c * hw),
                grad.shape(),
            ));
        }
        match recorded {
            None => Err(Error::NoRecordedForward {
                path: ModulePath::leaf("Dropout2d"),
            }),
            Some(false) => Ok(grad),
            Some(true) => {
                ensure_shape(&mut self.grad_input, n, c * hw);
                Self::apply(
                    &self.mask,
                    grad.as_slice(),
                    self.shape,
                    self.grad_input.as_mut_slice(),
                );
                Ok(&self.grad_input)
            }
        }
    }
}

impl fmt::Display for Dropout2d {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_repr(f)
    }
}
