//! A model summary in the manner of torchinfo.

use std::fmt;

use crate::module::{Forward, Module, Trace};
use crate::{Result, Tensor};

/// One line of a [`Summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    /// The dotted path (`encoder.fc`); empty for the model itself.
    pub path: String,
    /// The type name (`Linear`).
    pub type_name: String,
    /// Nesting depth: 0 for the model.
    pub depth: usize,
    /// `(batch, features)` of the module's output for the summary's input,
    /// `None` when its forward was not traced (inside a custom forward).
    pub output_shape: Option<(usize, usize)>,
    /// Parameter elements of the module and its submodules.
    pub params: usize,
}

/// A table of a model's layers for a given input shape: path, type, output
/// shape and parameter count of each, then the totals (all, trainable,
/// frozen) and the parameter memory. Built by [`summary`]; print it with
/// `{}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The layers, the model first, depth first.
    pub rows: Vec<SummaryRow>,
    /// All parameter elements.
    pub total_params: usize,
    /// Elements of parameters that train (`requires_grad`).
    pub trainable_params: usize,
    /// Elements of frozen parameters.
    pub frozen_params: usize,
    /// Bytes the parameters take (`f32`).
    pub param_bytes: usize,
    /// The input shape the summary was made for.
    pub input_shape: (usize, usize),
}

/// The most rows `summary` runs the model on.
const TRACE_BATCH: usize = 64;

/// A parameter count for people: `950`, `5.6K`, `1.2M`, `3.4B`.
///
/// # Example
/// ```
/// assert_eq!(nncore::human_count(5560), "5.6K");
/// assert_eq!(nncore::human_count(1_234_567), "1.2M");
/// assert_eq!(nncore::human_count(950), "950");
/// ```
#[must_use]
pub fn human_count(n: usize) -> String {
    let n = n as f64;
    for (scale, suffix) in [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")] {
        if n >= scale {
            return format!("{:.1}{suffix}", n / scale);
        }
    }
    format!("{n}")
}

/// `5560` as `5,560`.
fn with_commas(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn count<M: Module + ?Sized>(m: &M) -> usize {
    m.parameters().iter().map(|p| p.numel()).sum()
}

/// Runs `model` once on a zero input of `input_shape` and tabulates each
/// layer's output shape and parameter count.
///
/// # Errors
/// Whatever the forward pass reports for that input shape.
///
/// # Example
/// ```
/// use nncore::prelude::*;
///
/// #[derive(Module)]
/// struct SimpleNet { fc1: Linear, relu: ReLU, fc2: Linear }
///
/// let model = SimpleNet { fc1: Linear::new(100, 50), relu: ReLU::new(), fc2: Linear::new(50, 10) };
/// let s = nncore::summary(&model, (64, 100))?;
/// assert_eq!(s.rows[1].path, "fc1");
/// assert_eq!(s.rows[1].output_shape, Some((64, 50)));
/// assert_eq!(s.total_params, 5560);
/// println!("{s}");
/// # Ok::<(), nncore::Error>(())
/// ```
pub fn summary<M: Forward + ?Sized>(model: &M, input_shape: (usize, usize)) -> Result<Summary> {
    // The forward is traced on at most TRACE_BATCH rows: a summary for a
    // batch of a million must not allocate it. Outputs with as many rows
    // as the traced input are reported with the requested batch.
    let (batch, features) = input_shape;
    let traced = batch.min(TRACE_BATCH);
    let too_large = || {
        crate::Error::InvalidArgument(format!(
            "summary: an input of shape [{batch}, {features}] is too large to trace"
        ))
    };
    let n = traced
        .checked_mul(features)
        .filter(|n| n.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize))
        .ok_or_else(too_large)?;
    let mut data: Vec<f32> = Vec::new();
    data.try_reserve_exact(n).map_err(|_| too_large())?;
    data.resize(n, 0.0);
    let mut trace = Trace::new();
    model.forward_traced(&Tensor::from_vec(traced, features, data), &mut trace)?;
    let scale = |shape: Option<(usize, usize)>| {
        shape.map(|(r, c)| (if r == traced { batch } else { r }, c))
    };
    let mut rows = vec![SummaryRow {
        path: String::new(),
        type_name: model.name().to_owned(),
        depth: 0,
        output_shape: scale(trace.shape_of("")),
        params: count(model),
    }];
    fn walk<N: Module + ?Sized>(
        m: &N,
        prefix: &str,
        depth: usize,
        trace: &dyn Fn(&str) -> Option<(usize, usize)>,
        rows: &mut Vec<SummaryRow>,
    ) {
        m.visit_children(&mut |name, child| {
            let path = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}.{name}")
            };
            rows.push(SummaryRow {
                path: path.clone(),
                type_name: child.name().to_owned(),
                depth,
                output_shape: trace(&path),
                params: count(child),
            });
            walk(child, &path, depth + 1, trace, rows);
        });
    }
    walk(model, "", 1, &|path| scale(trace.shape_of(path)), &mut rows);
    let mut total = 0;
    let mut trainable = 0;
    for p in model.parameters() {
        total += p.numel();
        if p.requires_grad() {
            trainable += p.numel();
        }
    }
    Ok(Summary {
        rows,
        total_params: total,
        trainable_params: trainable,
        frozen_params: total - trainable,
        param_bytes: total * std::mem::size_of::<f32>(),
        input_shape,
    })
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layer = |r: &SummaryRow| {
            let indent = "  ".repeat(r.depth);
            if r.path.is_empty() {
                r.type_name.clone()
            } else {
                format!("{indent}{} ({})", r.path, r.type_name)
            }
        };
        let shape = |r: &SummaryRow| match r.output_shape {
            Some((b, n)) => format!("[{b}, {n}]"),
            None => "--".to_owned(),
        };
        let params = |r: &SummaryRow| {
            if r.params == 0 {
                "--".to_owned()
            } else {
                with_commas(r.params)
            }
        };
        let w0 = self
            .rows
            .iter()
            .map(|r| layer(r).len())
            .chain(["Layer (type)".len()])
            .max()
            .unwrap_or(0)
            + 4;
        let w1 = self
            .rows
            .iter()
            .map(|r| shape(r).len())
            .chain(["Output Shape".len()])
            .max()
            .unwrap_or(0)
            + 4;
        let w2 = self
            .rows
            .iter()
            .map(|r| params(r).len())
            .chain(["Param #".len()])
            .max()
            .unwrap_or(0);
        let rule = "=".repeat(w0 + w1 + w2);
        writeln!(f, "{rule}")?;
        writeln!(
            f,
            "{:<w0$}{:<w1$}{:>w2$}",
            "Layer (type)", "Output Shape", "Param #"
        )?;
        writeln!(f, "{rule}")?;
        for r in &self.rows {
            writeln!(f, "{:<w0$}{:<w1$}{:>w2$}", layer(r), shape(r), params(r))?;
        }
        writeln!(f, "{rule}")?;
        writeln!(
            f,
            "Total params: {} ({})",
            with_commas(self.total_params),
            human_count(self.total_params)
        )?;
        writeln!(
            f,
            "Trainable params: {}",
            with_commas(self.trainable_params)
        )?;
        writeln!(
            f,
            "Non-trainable params: {}",
            with_commas(self.frozen_params)
        )?;
        writeln!(
            f,
            "Input shape: [{}, {}]",
            self.input_shape.0, self.input_shape.1
        )?;
        writeln!(f, "Params size (MB): {:.2}", self.param_bytes as f64 / 1e6)?;
        write!(f, "{rule}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_well() {
        assert_eq!(with_commas(5), "5");
        assert_eq!(with_commas(5560), "5,560");
        assert_eq!(with_commas(1_234_567), "1,234,567");
        assert_eq!(human_count(0), "0");
        assert_eq!(human_count(999), "999");
        assert_eq!(human_count(1000), "1.0K");
        assert_eq!(human_count(2_500_000_000), "2.5B");
    }
}
