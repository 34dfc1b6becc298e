//! Buffers: a module's state that is saved with it but not trained.

use crate::serialize::{DType, TensorData};
use crate::{Error, Result};

/// PyTorch's buffer (`register_buffer`): state a module keeps beside its
/// parameters, such as BatchNorm's `running_mean`, `running_var` and
/// `num_batches_tracked`. Optimizers never see buffers; `state_dict`, the
/// safetensors files and `load_state_dict` carry the persistent ones,
/// after each module's own parameters and before its children's, in
/// PyTorch's order. A non-persistent buffer (PyTorch's
/// `register_buffer(name, t, persistent=False)`) is listed by
/// `named_buffers` but neither saved nor loaded.
///
/// In a `#[derive(Module)]` struct, a field of type `Buffer` is registered
/// under its field name (it is not a child and does not print, as in
/// PyTorch).
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// use nncore::{Buffer, TensorData};
///
/// #[derive(Module)]
/// struct Net {
///     fc: Linear,
///     scale: Buffer,
///     cache: Buffer,
/// }
///
/// let net = Net {
///     fc: Linear::new(3, 2),
///     scale: Buffer::new(TensorData::new(vec![2], vec![1.0, 2.0])?),
///     cache: Buffer::new(TensorData::new(vec![2], vec![0.0; 2])?).persistent(false),
/// };
/// let names: Vec<String> = net.named_buffers().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["scale", "cache"]);
/// let keys: Vec<String> = net.state_dict().keys().map(String::from).collect();
/// assert_eq!(keys, ["scale", "fc.weight", "fc.bias"]);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Buffer {
    data: TensorData,
    persistent: bool,
    /// Loading leaves the buffer as it is when the source lacks it
    /// (BatchNorm's `num_batches_tracked`, which PyTorch fills in for
    /// state dicts without one).
    optional: bool,
}

impl Buffer {
    /// A persistent buffer holding `data`.
    #[must_use]
    pub fn new(data: TensorData) -> Self {
        Self {
            data,
            persistent: true,
            optional: false,
        }
    }

    /// An `f32` buffer of `[len]` zeros.
    #[must_use]
    pub fn zeros(len: usize) -> Self {
        Self::filled(len, 0.0)
    }

    /// An `f32` buffer of `[len]` values equal to `value`.
    #[must_use]
    pub fn filled(len: usize, value: f32) -> Self {
        Self::new(TensorData::vector(vec![value; len]))
    }

    /// An `i64` scalar (shape `[]`), as PyTorch's `torch.tensor(v)`.
    #[must_use]
    pub fn scalar_i64(value: i64) -> Self {
        Self::new(TensorData::scalar_i64(value))
    }

    /// Sets whether the buffer is part of `state_dict` (PyTorch's
    /// `persistent` argument of `register_buffer`).
    #[must_use]
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    pub(crate) fn optional_on_load(mut self) -> Self {
        self.optional = true;
        self
    }

    pub(crate) fn is_optional_on_load(&self) -> bool {
        self.optional
    }

    /// Whether the buffer is saved and loaded.
    #[must_use]
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// The value.
    #[must_use]
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// PyTorch's shape.
    #[must_use]
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// The element type.
    #[must_use]
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The values of an `f32` buffer; `None` for `i64`.
    #[must_use]
    pub fn as_f32(&self) -> Option<&[f32]> {
        self.data.as_f32()
    }

    /// The values of an `i64` buffer; `None` for `f32`.
    #[must_use]
    pub fn as_i64(&self) -> Option<&[i64]> {
        self.data.as_i64()
    }

    /// The values of an `f32` buffer, mutably.
    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        self.data.as_f32_mut()
    }

    /// The values of an `i64` buffer, mutably.
    pub fn as_i64_mut(&mut self) -> Option<&mut [i64]> {
        self.data.as_i64_mut()
    }

    /// Replaces the value by one of the same shape and dtype (PyTorch's
    /// `buffer.copy_(t)`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on a shape or dtype mismatch; the buffer
    /// is then unchanged.
    pub fn set(&mut self, data: TensorData) -> Result<()> {
        if data.shape() != self.shape() || data.dtype() != self.dtype() {
            return Err(Error::InvalidArgument(format!(
                "Buffer::set: a {:?} tensor of shape {:?} cannot replace a {:?} buffer of shape {:?}",
                data.dtype(),
                data.shape(),
                self.dtype(),
                self.shape()
            )));
        }
        self.data = data;
        Ok(())
    }

    pub(crate) fn data_mut(&mut self) -> &mut TensorData {
        &mut self.data
    }
}
