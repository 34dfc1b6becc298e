//! Tensors that know their shape: [`Dims`] (a sample's shape, PyTorch's
//! shape without the batch dimension) and [`NdTensor`] (a batch of such
//! samples, such as images `(N, C, H, W)`).
//!
//! Storage is the same [`Tensor`] every layer takes: one row per sample,
//! the sample's values in PyTorch's order along the row (what
//! `x.reshape(N, -1)` gives in PyTorch). A batch of images is therefore a
//! `N x (C*H*W)` matrix whose column `c*H*W + h*W + w` is pixel `(h, w)`
//! of channel `c`; since nalgebra is column-major, the `N` values of one
//! pixel sit next to each other in memory (the `CHWN` order), which lets
//! convolution be one matrix product and pooling work on whole batches at
//! once. `Flatten` changes only the shape, never the data.

use std::fmt;

use crate::{Error, Result, Tensor};

/// The most dimensions a sample may have (`C, H, W` for images, one more
/// for volumes).
pub const MAX_DIMS: usize = 4;

/// The shape of one sample: PyTorch's `x.shape[1:]`. `[features]` for the
/// `(batch, features)` matrices of fully connected layers, `[C, H, W]` for
/// images.
///
/// # Example
/// ```
/// use nncore::Dims;
/// let d = Dims::new(&[3, 8, 8])?;
/// assert_eq!(d.as_slice(), &[3, 8, 8]);
/// assert_eq!(d.numel(), 192);
/// assert_eq!(Dims::flat(10).as_slice(), &[10]);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dims {
    len: u8,
    d: [usize; MAX_DIMS],
}

impl Dims {
    /// A sample of `features` values: the rows of a `(batch, features)`
    /// matrix.
    #[must_use]
    pub const fn flat(features: usize) -> Self {
        Self {
            len: 1,
            d: [features, 0, 0, 0],
        }
    }

    /// A sample of shape `dims` (1 to [`MAX_DIMS`] sizes).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no sizes, more than [`MAX_DIMS`], or
    /// a product that overflows.
    pub fn new(dims: &[usize]) -> Result<Self> {
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(Error::InvalidArgument(format!(
                "a sample has 1 to {MAX_DIMS} dimensions, got {dims:?}"
            )));
        }
        if dims
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .is_none()
        {
            return Err(Error::InvalidArgument(format!(
                "a sample of shape {dims:?} has more elements than memory can hold"
            )));
        }
        let mut d = [0; MAX_DIMS];
        d[..dims.len()].copy_from_slice(dims);
        Ok(Self {
            len: dims.len() as u8,
            d,
        })
    }

    /// `[C, H, W]`.
    #[must_use]
    pub const fn image(c: usize, h: usize, w: usize) -> Self {
        Self {
            len: 3,
            d: [c, h, w, 0],
        }
    }

    /// The sizes.
    #[must_use]
    pub fn as_slice(&self) -> &[usize] {
        &self.d[..self.len as usize]
    }

    /// The number of dimensions (PyTorch's `x.dim() - 1`).
    #[must_use]
    pub fn rank(&self) -> usize {
        self.len as usize
    }

    /// The number of values in one sample (the matrix's columns).
    #[must_use]
    pub fn numel(&self) -> usize {
        self.as_slice().iter().product()
    }

    /// The full PyTorch shape of a batch of `n` such samples.
    #[must_use]
    pub fn with_batch(&self, n: usize) -> Vec<usize> {
        let mut v = Vec::with_capacity(self.rank() + 1);
        v.push(n);
        v.extend_from_slice(self.as_slice());
        v
    }

    /// `(C, H, W)` of an image sample.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `module` when the sample is not 3-d,
    /// in PyTorch's words for that layer.
    pub(crate) fn chw(&self, module: &str, n: usize) -> Result<(usize, usize, usize)> {
        match *self.as_slice() {
            [c, h, w] => Ok((c, h, w)),
            _ => Err(Error::InvalidInput {
                path: crate::ModulePath::leaf(module),
                message: rank_message(module, &self.with_batch(n)),
            }),
        }
    }
}

/// What PyTorch says when image layer `module` gets an input of `shape`
/// (batch first) that is not 4-d (or, for pooling, has an empty
/// dimension).
pub(crate) fn rank_message(module: &str, shape: &[usize]) -> String {
    let rank = shape.len();
    match module {
        "Conv2d" => format!(
            "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: {shape:?}"
        ),
        "MaxPool2d" => "non-empty 3D or 4D (batch mode) tensor expected for input".into(),
        "AvgPool2d" => format!(
            "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, but got:{shape:?}"
        ),
        "AdaptiveAvgPool2d" => {
            format!("adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got {shape:?}")
        }
        "BatchNorm2d" => format!("expected 4D input (got {rank}D input)"),
        _ => format!("expected a 4-d input (N, C, H, W), got a {rank}-d input of shape {shape:?}"),
    }
}

impl fmt::Debug for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

/// A batch of samples with their shape: PyTorch's N-d tensor, such as
/// images `(N, C, H, W)`. The values live in a [`Tensor`] with one row per
/// sample (see the [module docs](self) for the layout), so it goes into
/// a model with [`ForwardExt::forward_nd`](crate::ForwardExt::forward_nd) and
/// comes out of `Flatten` as the plain matrix every loss takes.
///
/// # Example
/// Two 1x2x3 images from PyTorch's (row-major) order:
/// ```
/// use nncore::NdTensor;
/// let x = NdTensor::from_row_major(&[2, 1, 2, 3], &(0..12).map(|v| v as f32).collect::<Vec<_>>())?;
/// assert_eq!(x.shape(), vec![2, 1, 2, 3]);
/// assert_eq!(x.get(&[1, 0, 1, 2]), Some(11.0));
/// assert_eq!(x.tensor().shape(), (2, 6)); // x.reshape(2, -1)
/// assert_eq!(x.to_row_major(), (0..12).map(|v| v as f32).collect::<Vec<_>>());
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct NdTensor {
    data: Tensor,
    dims: Dims,
}

impl NdTensor {
    /// `data` (`N x numel`, one sample per row in PyTorch's order) seen as
    /// samples of shape `dims`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `data` does not have `dims.numel()`
    /// columns.
    pub fn new(data: Tensor, dims: Dims) -> Result<Self> {
        if data.ncols() != dims.numel() {
            return Err(Error::ShapeMismatch {
                context: format!("NdTensor::new: samples of shape {dims:?}"),
                expected: vec![data.nrows(), dims.numel()],
                got: vec![data.nrows(), data.ncols()],
            });
        }
        Ok(Self { data, dims })
    }

    /// Zeros of PyTorch shape `shape` (batch first).
    ///
    /// # Errors
    /// As [`Dims::new`] for `shape[1..]`; no batch dimension.
    pub fn zeros(shape: &[usize]) -> Result<Self> {
        let (n, dims) = split(shape)?;
        Ok(Self {
            data: Tensor::zeros(n, dims.numel()),
            dims,
        })
    }

    /// A tensor of PyTorch shape `shape` from values in PyTorch's
    /// (row-major, `NCHW`) memory order, as `torch.tensor(...).reshape(shape)`
    /// or a safetensors file holds them.
    ///
    /// # Errors
    /// As [`NdTensor::zeros`]; [`Error::ShapeMismatch`] when `data` does not
    /// hold exactly as many values as the shape.
    pub fn from_row_major(shape: &[usize], data: &[f32]) -> Result<Self> {
        let (n, dims) = split(shape)?;
        let f = dims.numel();
        if n.checked_mul(f) != Some(data.len()) {
            return Err(Error::ShapeMismatch {
                context: "NdTensor::from_row_major".into(),
                expected: vec![n.saturating_mul(f)],
                got: vec![data.len()],
            });
        }
        Ok(Self {
            data: Tensor::from_row_slice(n, f, data),
            dims,
        })
    }

    /// PyTorch's `x.shape`: the batch size, then the sample's shape.
    #[must_use]
    pub fn shape(&self) -> Vec<usize> {
        self.dims.with_batch(self.data.nrows())
    }

    /// The shape of one sample (`x.shape[1:]`).
    #[must_use]
    pub fn dims(&self) -> Dims {
        self.dims
    }

    /// The values as a `(batch, numel)` matrix: PyTorch's
    /// `x.reshape(N, -1)`.
    #[must_use]
    pub fn tensor(&self) -> &Tensor {
        &self.data
    }

    /// [`NdTensor::tensor`], by value.
    #[must_use]
    pub fn into_tensor(self) -> Tensor {
        self.data
    }

    /// The value at PyTorch index `index` (batch first); `None` when out of
    /// range or of the wrong length.
    #[must_use]
    pub fn get(&self, index: &[usize]) -> Option<f32> {
        let (&n, rest) = index.split_first()?;
        let dims = self.dims.as_slice();
        if rest.len() != dims.len() || n >= self.data.nrows() {
            return None;
        }
        let mut f = 0;
        for (&i, &d) in rest.iter().zip(dims) {
            if i >= d {
                return None;
            }
            f = f * d + i;
        }
        Some(self.data[(n, f)])
    }

    /// The values in PyTorch's (row-major) memory order.
    #[must_use]
    pub fn to_row_major(&self) -> Vec<f32> {
        self.data.transpose().as_slice().to_vec()
    }
}

impl fmt::Debug for NdTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdTensor")
            .field("shape", &self.shape())
            .field("data", &self.data)
            .finish()
    }
}

fn split(shape: &[usize]) -> Result<(usize, Dims)> {
    match shape.split_first() {
        Some((&n, rest)) => {
            let dims = Dims::new(rest)?;
            if n.checked_mul(dims.numel()).is_none() {
                return Err(Error::InvalidArgument(format!(
                    "a tensor of shape {shape:?} has more elements than memory can hold"
                )));
            }
            Ok((n, dims))
        }
        None => Err(Error::InvalidArgument(
            "a batch needs a shape with a batch dimension first, got []".into(),
        )),
    }
}

/// A 2-d size (kernel, stride, padding, output size) given as one number
/// for both sides or as `(height, width)`, as PyTorch's layers take it;
/// it remembers which, because PyTorch prints them differently
/// (`kernel_size=2` against `kernel_size=(2, 3)`).
///
/// # Example
/// ```
/// use nncore::Size2d;
/// assert_eq!(Size2d::from(3).to_string(), "3");
/// assert_eq!(Size2d::from((2, 3)).to_string(), "(2, 3)");
/// assert_eq!(Size2d::from(3).h, 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size2d {
    /// The height (first) size.
    pub h: usize,
    /// The width (second) size.
    pub w: usize,
    /// Whether it was given as one number.
    pub square: bool,
}

impl Size2d {
    /// The size as a tuple, whatever form it was given in (how `Conv2d`
    /// prints its sizes).
    #[must_use]
    pub fn tuple(self) -> String {
        format!("({}, {})", self.h, self.w)
    }
}

impl From<usize> for Size2d {
    fn from(v: usize) -> Self {
        Self {
            h: v,
            w: v,
            square: true,
        }
    }
}

impl From<(usize, usize)> for Size2d {
    fn from((h, w): (usize, usize)) -> Self {
        Self {
            h,
            w,
            square: false,
        }
    }
}

impl From<[usize; 2]> for Size2d {
    fn from([h, w]: [usize; 2]) -> Self {
        Self::from((h, w))
    }
}

impl fmt::Display for Size2d {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.square {
            write!(f, "{}", self.h)
        } else {
            write!(f, "({}, {})", self.h, self.w)
        }
    }
}

/// The error of an image layer given a plain `(batch, features)` matrix
/// through [`Forward::forward`](crate::Forward::forward): PyTorch's words
/// for a 2-d input, and how to give it its shape.
pub(crate) fn needs_image(module: &str, x: &Tensor) -> Error {
    Error::InvalidInput {
        path: crate::ModulePath::leaf(module),
        message: format!(
            "{} (an image batch goes in as an NdTensor, through forward_nd)",
            rank_message(module, &[x.nrows(), x.ncols()])
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_round_trips_and_indexes_like_pytorch() {
        let v: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let x = NdTensor::from_row_major(&[2, 3, 2, 2], &v).unwrap();
        assert_eq!(x.shape(), vec![2, 3, 2, 2]);
        assert_eq!(x.to_row_major(), v);
        // x[1, 2, 0, 1] = 12 + 2*4 + 0*2 + 1.
        assert_eq!(x.get(&[1, 2, 0, 1]), Some(21.0));
        assert_eq!(x.get(&[1, 3, 0, 1]), None);
        assert_eq!(x.get(&[1, 2, 0]), None);
        assert!(NdTensor::from_row_major(&[2, 3, 2, 2], &v[1..]).is_err());
        assert!(NdTensor::zeros(&[]).is_err());
        assert!(Dims::new(&[1, 2, 3, 4, 5]).is_err());
        assert!(Dims::new(&[usize::MAX, 2]).is_err());
    }
}
