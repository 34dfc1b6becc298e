//! Learnable tensors.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result, Tensor};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

fn fresh_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

fn fresh_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}

/// A learnable tensor with its PyTorch shape and room for its gradient:
/// what `nn.Parameter` is to PyTorch.
///
/// The value is a [`Tensor`] (nalgebra's column-major `DMatrix<f32>`) in
/// PyTorch's orientation: a 2-D parameter of shape `[rows, cols]` is a
/// `rows x cols` matrix (a `Linear` weight is `[out_features,
/// in_features]`, so `value()[(o, i)]` is PyTorch's `weight[o, i]`); a 1-D
/// parameter of shape `[n]` is an `n x 1` column. Because nalgebra stores
/// columns contiguously, [`Param::to_row_major`] and
/// [`Param::copy_from_row_major`] convert to and from PyTorch's memory order.
///
/// # Example
/// ```
/// use nncore::{Param, Tensor};
/// let p = Param::vector(&[1.0, 2.0, 3.0]);
/// assert_eq!(p.shape(), &[3]);
/// assert!(p.grad().is_none());
/// let w = Param::matrix(Tensor::from_row_slice(2, 3, &[1., 2., 3., 4., 5., 6.]));
/// assert_eq!(w.shape(), &[2, 3]);
/// assert_eq!(w.to_row_major(), vec![1., 2., 3., 4., 5., 6.]);
/// ```
pub struct Param {
    value: Tensor,
    shape: Vec<usize>,
    grad: Tensor,
    has_grad: bool,
    requires_grad: bool,
    id: u64,
    version: u64,
}

impl Param {
    /// A 2-D parameter of PyTorch shape `[value.nrows(), value.ncols()]`.
    #[must_use]
    pub fn matrix(value: Tensor) -> Self {
        let shape = vec![value.nrows(), value.ncols()];
        Self::with_shape(value, shape)
    }

    /// A 1-D parameter of PyTorch shape `[values.len()]`.
    #[must_use]
    pub fn vector(values: &[f32]) -> Self {
        Self::with_shape(
            Tensor::from_column_slice(values.len(), 1, values),
            vec![values.len()],
        )
    }

    /// A parameter of PyTorch shape `shape` (rank 3 or more, such as a
    /// convolution's `[out_channels, in_channels / groups, kh, kw]`) held
    /// as the `shape[0] x (product of the rest)` matrix `value`, whose
    /// row-major order is PyTorch's.
    pub(crate) fn nd(value: Tensor, shape: Vec<usize>) -> Self {
        debug_assert_eq!(value.nrows(), shape[0]);
        debug_assert_eq!(value.ncols(), shape[1..].iter().product::<usize>());
        Self::with_shape(value, shape)
    }

    fn with_shape(value: Tensor, shape: Vec<usize>) -> Self {
        Self {
            grad: Tensor::zeros(0, 0),
            value,
            shape,
            has_grad: false,
            requires_grad: true,
            id: fresh_id(),
            version: fresh_version(),
        }
    }

    /// PyTorch's shape: `[out, in]` for a `Linear` weight, `[out]` for its
    /// bias.
    #[must_use]
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of elements.
    #[must_use]
    pub fn numel(&self) -> usize {
        self.value.len()
    }

    /// The value (see the type's docs for the orientation).
    #[must_use]
    pub fn value(&self) -> &Tensor {
        &self.value
    }

    /// The value, mutably; the view cannot change the shape.
    pub fn value_mut(&mut self) -> nalgebra::DMatrixViewMut<'_, f32> {
        self.version = fresh_version();
        self.value.as_view_mut()
    }

    /// Replaces the value with a tensor of the same shape.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `value` has another shape.
    pub fn set_value(&mut self, value: Tensor) -> Result<()> {
        if value.shape() != self.value.shape() {
            return Err(Error::ShapeMismatch {
                context: "Param::set_value".into(),
                expected: vec![self.value.nrows(), self.value.ncols()],
                got: vec![value.nrows(), value.ncols()],
            });
        }
        self.value = value;
        self.version = fresh_version();
        Ok(())
    }

    /// The accumulated gradient, `None` until a backward pass reached this
    /// parameter since the last `zero_grad` (PyTorch's `param.grad`).
    #[must_use]
    pub fn grad(&self) -> Option<&Tensor> {
        self.has_grad.then_some(&self.grad)
    }

    /// Whether training updates this parameter (PyTorch's
    /// `requires_grad`).
    #[must_use]
    pub fn requires_grad(&self) -> bool {
        self.requires_grad
    }

    /// Freezes (`false`) or unfreezes (`true`) the parameter. A frozen
    /// parameter keeps no gradient and optimizers leave it alone.
    pub fn set_requires_grad(&mut self, requires_grad: bool) {
        self.requires_grad = requires_grad;
        if !requires_grad {
            self.has_grad = false;
        }
    }

    /// Forgets the gradient (PyTorch's `zero_grad(set_to_none=True)`); the
    /// buffer is kept, so the next backward allocates nothing.
    pub fn zero_grad(&mut self) {
        self.has_grad = false;
    }

    /// A process-unique identity: optimizers key their state on it.
    /// Cloning a `Param` gives the clone a new id.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A stamp that changes whenever the value may have changed (PyTorch's
    /// `tensor._version`): every mutable access to the value takes a new,
    /// process-unique stamp, so two reads giving the same stamp saw the
    /// same values. Caches derived from the value (such as the transposed
    /// weight [`Linear`](crate::Linear) keeps for inference) key on it.
    ///
    /// ```
    /// use nncore::Param;
    /// let mut p = Param::vector(&[1.0, 2.0]);
    /// let v = p.version();
    /// assert_eq!(p.version(), v);
    /// p.value_mut()[0] = 3.0;
    /// assert_ne!(p.version(), v);
    /// ```
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The gradient, mutably, if the parameter has one (what gradient
    /// clipping changes in place).
    pub fn grad_mut(&mut self) -> Option<&mut Tensor> {
        self.has_grad.then_some(&mut self.grad)
    }

    /// The value and the gradient buffer at once, for layers computing a
    /// gradient from the value. Returns `None` when the parameter is
    /// frozen. The `bool` says whether the buffer already holds a gradient
    /// to accumulate into (`beta = 1`) or is to be overwritten (`beta = 0`);
    /// the buffer is sized to the value. The caller must write the whole
    /// buffer; the parameter then counts as having a gradient.
    pub fn grad_slot(&mut self) -> Option<(&Tensor, &mut Tensor, bool)> {
        if !self.requires_grad {
            return None;
        }
        let accumulate = self.has_grad;
        if self.grad.shape() != self.value.shape() {
            self.grad = Tensor::zeros(self.value.nrows(), self.value.ncols());
        }
        self.has_grad = true;
        Some((&self.value, &mut self.grad, accumulate))
    }

    /// The value and the gradient (if any), for optimizers.
    pub fn value_and_grad(&mut self) -> (&mut Tensor, Option<&Tensor>) {
        self.version = fresh_version();
        let grad = self.has_grad.then_some(&self.grad);
        (&mut self.value, grad)
    }

    /// The values in PyTorch's row-major (C) order.
    #[must_use]
    pub fn to_row_major(&self) -> Vec<f32> {
        if self.shape.len() >= 2 {
            self.value.transpose().as_slice().to_vec()
        } else {
            self.value.as_slice().to_vec()
        }
    }

    /// Overwrites the values from an iterator in PyTorch's row-major (C)
    /// order; stops early if it runs out.
    pub fn fill_row_major(&mut self, values: impl Iterator<Item = f32>) {
        self.version = fresh_version();
        if self.shape.len() >= 2 {
            // Row-major source into column-major storage: element (r, c)
            // lives at r + c * rows.
            let (rows, cols) = self.value.shape();
            let data = self.value.as_mut_slice();
            let mut values = values;
            for r in 0..rows {
                for c in 0..cols {
                    match values.next() {
                        Some(v) => data[r + c * rows] = v,
                        None => return,
                    }
                }
            }
        } else {
            for (d, v) in self.value.iter_mut().zip(values) {
                *d = v;
            }
        }
    }

    /// Overwrites the values from PyTorch's row-major (C) order.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `data` does not have [`Param::numel`]
    /// elements.
    pub fn copy_from_row_major(&mut self, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            return Err(Error::ShapeMismatch {
                context: "Param::copy_from_row_major".into(),
                expected: vec![self.numel()],
                got: vec![data.len()],
            });
        }
        self.fill_row_major(data.iter().copied());
        Ok(())
    }
}

impl Clone for Param {
    fn clone(&self) -> Self {
        Self {
            value: self.value.clone(),
            shape: self.shape.clone(),
            grad: self.grad.clone(),
            has_grad: self.has_grad,
            requires_grad: self.requires_grad,
            id: fresh_id(),
            // Same values: a cache made from either is valid for both.
            version: self.version,
        }
    }
}

impl fmt::Debug for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Param")
            .field("shape", &self.shape)
            .field("requires_grad", &self.requires_grad)
            .field("has_grad", &self.has_grad)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_round_trip() {
        let mut p = Param::matrix(Tensor::zeros(2, 3));
        p.copy_from_row_major(&[1., 2., 3., 4., 5., 6.]).unwrap();
        assert_eq!(p.value()[(0, 2)], 3.0);
        assert_eq!(p.value()[(1, 0)], 4.0);
        assert_eq!(p.to_row_major(), vec![1., 2., 3., 4., 5., 6.]);
        assert!(p.copy_from_row_major(&[1.0]).is_err());
    }

    #[test]
    fn frozen_params_have_no_grad_slot() {
        let mut p = Param::vector(&[1.0, 2.0]);
        assert!(p.grad_slot().is_some());
        assert!(p.grad().is_some());
        p.set_requires_grad(false);
        assert!(p.grad().is_none());
        assert!(p.grad_slot().is_none());
    }

    #[test]
    fn clone_gets_new_id() {
        let p = Param::vector(&[1.0]);
        assert_ne!(p.id(), p.clone().id());
    }
}
