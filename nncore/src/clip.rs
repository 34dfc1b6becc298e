//! Gradient clipping, as `torch.nn.utils.clip_grad_norm_` and
//! `clip_grad_value_`.

use crate::module::ModuleExt;
use crate::{Error, Module, Param, Result};

/// PyTorch's `clip_grad_norm_(model.parameters(), max_norm)`: the 2-norm of
/// all gradients together (as one vector) is computed and, when above
/// `max_norm`, every gradient is scaled by `max_norm / (norm + 1e-6)`.
/// Returns the total norm before clipping. Parameters without a gradient
/// are left out.
///
/// # Errors
/// A `max_norm` that is NaN.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// let mut fc = Linear::from_weights(Tensor::from_element(1, 2, 1.0), None)?;
/// fc.forward_train(&Tensor::from_row_slice(1, 2, &[3.0, 4.0]))?;
/// let g = Tensor::from_element(1, 1, 1.0);
/// fc.backward(&g)?;                                    // grad [3, 4], norm 5
/// let norm = nncore::clip_grad_norm_(&mut fc, 1.0)?;
/// assert_eq!(norm, 5.0);
/// let grad = fc.weight().grad().unwrap();
/// assert!((grad[(0, 0)] - 0.6).abs() < 1e-6 && (grad[(0, 1)] - 0.8).abs() < 1e-6);
/// # Ok::<(), nncore::Error>(())
/// ```
pub fn clip_grad_norm_<M: Module + ?Sized>(model: &mut M, max_norm: f64) -> Result<f32> {
    clip_grad_norm_with(model, max_norm, 2.0, false)
}

/// PyTorch's `clip_grad_norm_(parameters, max_norm, norm_type,
/// error_if_nonfinite)`: `norm_type` is any positive `p` or
/// `f64::INFINITY` (the largest absolute value). Each gradient's norm is
/// taken, then the norm of those norms, as PyTorch does.
///
/// # Errors
/// A NaN `max_norm`, a `norm_type` that is not positive; with
/// `error_if_nonfinite`, a total norm that is NaN or infinite (PyTorch's
/// message; the gradients are left as they are). Without it, such a norm
/// scales the gradients by NaN, as in PyTorch.
pub fn clip_grad_norm_with<M: Module + ?Sized>(
    model: &mut M,
    max_norm: f64,
    norm_type: f64,
    error_if_nonfinite: bool,
) -> Result<f32> {
    if max_norm.is_nan() {
        return Err(Error::InvalidArgument(
            "clip_grad_norm_: max_norm is NaN".into(),
        ));
    }
    if norm_type.is_nan() || norm_type <= 0.0 {
        return Err(Error::InvalidArgument(format!(
            "clip_grad_norm_: norm_type must be positive or inf, got {norm_type}"
        )));
    }
    let norm_of = |values: &mut dyn Iterator<Item = f32>| -> f32 {
        if norm_type.is_infinite() {
            values.fold(0.0f32, |m, v| m.max(v.abs()))
        } else {
            let s: f64 = values.map(|v| f64::from(v.abs()).powf(norm_type)).sum();
            s.powf(1.0 / norm_type) as f32
        }
    };
    let mut norms = Vec::new();
    model.for_each_parameter_mut(&mut |p: &mut Param| {
        if let Some(g) = p.grad() {
            norms.push(norm_of(&mut g.iter().copied()));
        }
    });
    if norms.is_empty() {
        return Ok(0.0);
    }
    let total = norm_of(&mut norms.iter().copied());
    if error_if_nonfinite && !total.is_finite() {
        return Err(Error::InvalidArgument(format!(
            "The total norm of order {norm_type:?} for gradients from `parameters` is non-finite, so it cannot be clipped. To disable this error and scale the gradients by the non-finite norm anyway, set `error_if_nonfinite=False`"
        )));
    }
    let coef = (max_norm as f32 / (total + 1e-6)).min(1.0);
    let coef = if coef.is_nan() { f32::NAN } else { coef };
    model.for_each_parameter_mut(&mut |p: &mut Param| {
        if let Some(g) = p.grad_mut() {
            g.apply(|v| *v *= coef);
        }
    });
    Ok(total)
}

/// PyTorch's `clip_grad_value_(model.parameters(), clip_value)`: every
/// gradient element is clamped to `[-clip_value, clip_value]`.
///
/// # Errors
/// A NaN or negative `clip_value`.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// let mut fc = Linear::from_weights(Tensor::from_element(1, 2, 1.0), None)?;
/// fc.forward_train(&Tensor::from_row_slice(1, 2, &[3.0, -0.5]))?;
/// let g = Tensor::from_element(1, 1, 1.0);
/// fc.backward(&g)?;
/// nncore::clip_grad_value_(&mut fc, 1.0)?;
/// assert_eq!(fc.weight().grad().unwrap().as_slice(), &[1.0, -0.5]);
/// # Ok::<(), nncore::Error>(())
/// ```
pub fn clip_grad_value_<M: Module + ?Sized>(model: &mut M, clip_value: f64) -> Result<()> {
    if clip_value.is_nan() || clip_value < 0.0 {
        return Err(Error::InvalidArgument(format!(
            "clip_grad_value_: clip_value must be >= 0, got {clip_value}"
        )));
    }
    let c = clip_value as f32;
    model.for_each_parameter_mut(&mut |p: &mut Param| {
        if let Some(g) = p.grad_mut() {
            g.apply(|v| *v = v.clamp(-c, c));
        }
    });
    Ok(())
}
