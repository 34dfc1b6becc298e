//! A model summary in the manner of torchinfo.

use std::fmt;

use crate::forward::Forward;
use crate::module::ModuleExt;
use crate::module::{Module, join};
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
    /// The module's output shape for the summary's input, as PyTorch
    /// gives it (`[batch, features]`, `[N, C, H, W]` for images); `None`
    /// when its forward was not traced (inside a custom forward).
    pub output_shape: Option<Vec<usize>>,
    /// Parameter elements of the module and its submodules.
    pub params: usize,
    /// Of those, the elements of parameters that train.
    pub trainable_params: usize,
    /// Whether the module has no children (torchinfo's leaf layer).
    pub is_leaf: bool,
}

/// A table of a model's layers for a given input shape, as
/// `torchinfo.summary(model, input_size=(batch, features))` prints it: the
/// tree by depth (`├─Linear: 1-1`), each layer's output shape and parameter
/// count (`--` for containers), the totals, the mult-adds, and the input,
/// forward/backward pass, parameter and total sizes in MB. Built by
/// [`summary`]; print it with `{}`, or with `{:#}` for a form with dotted
/// paths (`encoder.fc (Linear)`).
///
/// The rows follow registration order, one per module: torchinfo lists
/// modules in the order the forward calls them, one row per call, so a
/// written forward that calls its children in another order, or one child
/// twice, prints differently there.
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
    /// The input shape the summary was made for (batch first).
    pub input_shape: Vec<usize>,
    /// torchinfo's mult-adds: for each leaf layer, its parameter count
    /// times the batch (for a convolution, times the batch and the output
    /// pixels).
    pub mult_adds: u64,
    /// torchinfo's forward/backward pass size: twice the output bytes of
    /// every leaf layer that has parameters.
    pub pass_bytes: u64,
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

/// All and trainable parameter elements of `m` and its submodules.
fn count<M: Module + ?Sized>(m: &M) -> (usize, usize) {
    m.parameters().iter().fold((0, 0), |(all, tr), p| {
        let n = p.numel();
        (all + n, tr + if p.requires_grad() { n } else { 0 })
    })
}

fn is_leaf<M: Module + ?Sized>(m: &M) -> bool {
    let mut leaf = true;
    m.visit_children(&mut |_, _| leaf = false);
    leaf
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
/// assert_eq!(s.rows[1].output_shape, Some(vec![64, 50]));
/// assert_eq!(s.total_params, 5560);
/// println!("{s}");
/// # Ok::<(), nncore::Error>(())
/// ```
pub fn summary<M: Forward + ?Sized>(model: &M, input_shape: (usize, usize)) -> Result<Summary> {
    summary_nd(model, &[input_shape.0, input_shape.1])
}

/// [`summary`] for an input of any shape (batch first), such as images:
/// `torchinfo.summary(model, input_size=(N, C, H, W))`.
///
/// # Errors
/// As [`summary`]; an input shape without a batch dimension.
///
/// # Example
/// ```
/// use nncore::prelude::*;
///
/// #[derive(Module)]
/// struct Cnn { conv: Conv2d, relu: ReLU, pool: MaxPool2d, flat: Flatten, fc: Linear }
///
/// let cnn = Cnn {
///     conv: Conv2d::new(1, 16, 3),
///     relu: ReLU::new(),
///     pool: MaxPool2d::new(2),
///     flat: Flatten::new(),
///     fc: Linear::new(16 * 3 * 3, 10),
/// };
/// let s = nncore::summary_nd(&cnn, &[32, 1, 8, 8])?;
/// assert_eq!(s.rows[1].output_shape, Some(vec![32, 16, 6, 6]));
/// assert_eq!(s.rows[3].output_shape, Some(vec![32, 16, 3, 3]));
/// // torchinfo's mult-adds: a convolution's parameters times the output
/// // pixels of the batch, a Linear's times the batch.
/// assert_eq!(s.mult_adds, 160 * 32 * 36 + 1450 * 32);
/// # Ok::<(), nncore::Error>(())
/// ```
pub fn summary_nd<M: Forward + ?Sized>(model: &M, input_shape: &[usize]) -> Result<Summary> {
    // The forward is traced on at most TRACE_BATCH rows: a summary for a
    // batch of a million must not allocate it. Outputs with as many rows
    // as the traced input are reported with the requested batch.
    let Some((&batch, sample)) = input_shape.split_first() else {
        return Err(crate::Error::InvalidArgument(
            "summary: the input shape needs a batch dimension first, got []".into(),
        ));
    };
    let dims = crate::Dims::new(sample)?;
    let features = dims.numel();
    let traced = batch.min(TRACE_BATCH);
    let too_large = || {
        crate::Error::InvalidArgument(format!(
            "summary: an input of shape {input_shape:?} is too large to trace"
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
    model.forward_traced_dims(&Tensor::from_vec(traced, features, data), dims, &mut trace)?;
    let scale = |shape: Option<&[usize]>| {
        shape.map(|s| {
            let mut s = s.to_vec();
            if s.first() == Some(&traced) {
                s[0] = batch;
            }
            s
        })
    };
    let (params, trainable_params) = count(model);
    let mut rows = vec![SummaryRow {
        path: String::new(),
        type_name: model.name().to_owned(),
        depth: 0,
        output_shape: scale(trace.full_shape_of("")),
        params,
        trainable_params,
        is_leaf: is_leaf(model),
    }];
    fn walk<N: Module + ?Sized>(
        m: &N,
        prefix: &str,
        depth: usize,
        trace: &dyn Fn(&str) -> Option<Vec<usize>>,
        rows: &mut Vec<SummaryRow>,
    ) {
        m.visit_children(&mut |name, child| {
            let path = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}.{name}")
            };
            let (params, trainable_params) = count(child);
            // A ModuleList is never called (PyTorch's has no forward):
            // torchinfo shows no output for it.
            let output_shape = if child.name() == "ModuleList" {
                None
            } else {
                trace(&path)
            };
            rows.push(SummaryRow {
                path: path.clone(),
                type_name: child.name().to_owned(),
                depth,
                output_shape,
                params,
                trainable_params,
                is_leaf: is_leaf(child),
            });
            walk(child, &path, depth + 1, trace, rows);
        });
    }
    walk(
        model,
        "",
        1,
        &|path| scale(trace.full_shape_of(path)),
        &mut rows,
    );
    let mut total = 0;
    let mut trainable = 0;
    for p in model.parameters() {
        total += p.numel();
        if p.requires_grad() {
            trainable += p.numel();
        }
    }
    let leaves = || rows.iter().filter(|r| r.is_leaf && r.depth > 0);
    // torchinfo: a convolution's parameters count once per output pixel
    // of the batch, any other layer's once per sample.
    let mult_adds = leaves()
        .map(|r| {
            let per_param = r.output_shape.as_ref().map_or(0, |s| {
                if r.type_name.contains("Conv") {
                    s[0] as u64 * s.iter().skip(2).map(|&d| d as u64).product::<u64>()
                } else {
                    s[0] as u64
                }
            });
            per_param * r.params as u64
        })
        .sum();
    let pass_bytes = leaves()
        .filter(|r| r.params > 0)
        .map(|r| {
            r.output_shape
                .as_ref()
                .map_or(0, |s| 2 * 4 * s.iter().map(|&d| d as u64).product::<u64>())
        })
        .sum();
    Ok(Summary {
        total_params: total,
        trainable_params: trainable,
        frozen_params: total - trainable,
        param_bytes: total * std::mem::size_of::<f32>(),
        input_shape: input_shape.to_vec(),
        mult_adds,
        pass_bytes,
        rows,
    })
}

/// `[3, 6, 9, 8]`, as PyTorch prints a shape's list.
fn shape_text(s: &[usize]) -> String {
    let parts: Vec<String> = s.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// torchinfo's number with its unit: `: 5,560`, ` (Units.MEGABYTES):
/// 0.18` (the unit as torchinfo prints it under Python 3.11+).
fn torchinfo_num(n: u64, auto_units: bool) -> String {
    let (unit, v) = if !auto_units {
        ("", n as f64)
    } else if n as f64 >= 1e12 {
        (" (Units.TERABYTES)", n as f64 / 1e12)
    } else if n as f64 >= 1e9 {
        (" (Units.GIGABYTES)", n as f64 / 1e9)
    } else {
        (" (Units.MEGABYTES)", n as f64 / 1e6)
    };
    if v.fract() == 0.0 {
        format!("{unit}: {}", with_commas(v as usize))
    } else {
        let s = format!("{v:.2}");
        let (int, frac) = s.split_once('.').unwrap_or((&s, "00"));
        let int: usize = int.parse().unwrap_or(0);
        format!("{unit}: {}.{frac}", with_commas(int))
    }
}

impl Summary {
    /// torchinfo's table.
    fn fmt_torchinfo(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX_DEPTH: usize = 3;
        const COL: usize = 25;
        // depth-idx: a counter per depth, over the rows in order.
        let mut counters: Vec<usize> = Vec::new();
        let titles: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                if r.depth == 0 {
                    return r.type_name.clone();
                }
                if counters.len() < r.depth {
                    counters.resize(r.depth, 0);
                }
                counters[r.depth - 1] += 1;
                format!("{}: {}-{}", r.type_name, r.depth, counters[r.depth - 1])
            })
            .collect();
        // The name column: 40 wide, or the longest name rounded up to 5.
        let longest = self
            .rows
            .iter()
            .zip(&titles)
            .map(|(r, t)| t.chars().count() + r.depth * 5 + 1)
            .max()
            .unwrap_or(0);
        let name_w = if longest >= 40 {
            longest.div_ceil(5) * 5
        } else {
            40
        };
        let rule = "=".repeat(name_w + 2 * COL);
        let row = |name: &str, out: &str, params: &str| {
            let line = format!("{name:<name_w$} {out:<COL$} {params:<COL$} ");
            line.trim_end().to_owned()
        };
        let own = |i: usize| -> usize {
            // Parameters of row i not in its children (torchinfo's
            // leftover parameters).
            let r = &self.rows[i];
            let children: usize = self.rows[i + 1..]
                .iter()
                .take_while(|c| c.depth > r.depth)
                .filter(|c| c.depth == r.depth + 1)
                .map(|c| c.params)
                .sum();
            r.params.saturating_sub(children)
        };
        writeln!(f, "{rule}")?;
        writeln!(
            f,
            "{}",
            row("Layer (type:depth-idx)", "Output Shape", "Param #")
        )?;
        writeln!(f, "{rule}")?;
        for (i, (r, title)) in self.rows.iter().zip(&titles).enumerate() {
            if r.depth > MAX_DEPTH {
                continue;
            }
            let start = match r.depth {
                0 => String::new(),
                1 => "├─".to_owned(),
                d => format!("{}└─", "│    ".repeat(d - 1)),
            };
            let out = r
                .output_shape
                .as_deref()
                .map_or_else(|| "--".to_owned(), shape_text);
            let params = if r.params == 0 {
                "--".to_owned()
            } else if r.is_leaf || r.depth == MAX_DEPTH {
                let n = with_commas(r.params);
                if r.trainable_params > 0 {
                    n
                } else {
                    format!("({n})")
                }
            } else {
                match own(i) {
                    0 => "--".to_owned(),
                    n => with_commas(n),
                }
            };
            writeln!(f, "{}", row(&format!("{start}{title}"), &out, &params))?;
        }
        let input_bytes = self.input_shape.iter().map(|&d| d as u64).product::<u64>() * 4;
        let leaf_param_bytes: u64 = self
            .rows
            .iter()
            .filter(|r| r.is_leaf && r.depth > 0)
            .map(|r| 4 * r.params as u64)
            .sum();
        let mb = |b: u64| b as f64 / 1e6;
        writeln!(f, "{rule}")?;
        writeln!(
            f,
            "Total params{}",
            torchinfo_num(self.total_params as u64, false)
        )?;
        writeln!(
            f,
            "Trainable params{}",
            torchinfo_num(self.trainable_params as u64, false)
        )?;
        writeln!(
            f,
            "Non-trainable params{}",
            torchinfo_num(self.frozen_params as u64, false)
        )?;
        writeln!(f, "Total mult-adds{}", torchinfo_num(self.mult_adds, true))?;
        writeln!(f, "{rule}")?;
        writeln!(f, "Input size (MB): {:.2}", mb(input_bytes))?;
        writeln!(
            f,
            "Forward/backward pass size (MB): {:.2}",
            mb(self.pass_bytes)
        )?;
        writeln!(f, "Params size (MB): {:.2}", mb(leaf_param_bytes))?;
        writeln!(
            f,
            "Estimated Total Size (MB): {:.2}",
            mb(input_bytes + self.pass_bytes + leaf_param_bytes)
        )?;
        write!(f, "{rule}")
    }

    /// The dotted-path form (`{:#}`).
    fn fmt_paths(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layer = |r: &SummaryRow| {
            let indent = "  ".repeat(r.depth);
            if r.path.is_empty() {
                r.type_name.clone()
            } else {
                format!("{indent}{} ({})", r.path, r.type_name)
            }
        };
        let shape = |r: &SummaryRow| {
            r.output_shape
                .as_deref()
                .map_or_else(|| "--".to_owned(), shape_text)
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
        writeln!(f, "Input shape: {}", shape_text(&self.input_shape))?;
        writeln!(f, "Params size (MB): {:.2}", self.param_bytes as f64 / 1e6)?;
        write!(f, "{rule}")
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            self.fmt_paths(f)
        } else {
            self.fmt_torchinfo(f)
        }
    }
}

/// The output shapes seen during [`Forward::forward_traced`], by module
/// path.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    path: String,
    shapes: Vec<(String, Vec<usize>)>,
}

impl Trace {
    /// An empty trace.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` one level down, in child `name`.
    pub fn child<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = join(&mut self.path, name);
        let r = f(self);
        self.path.truncate(len);
        r
    }

    /// Records `out` as the output of the module at the current path.
    pub fn record(&mut self, out: &Tensor) {
        self.shapes
            .push((self.path.clone(), vec![out.nrows(), out.ncols()]));
    }

    /// Records an output of `n` samples of shape `dims` (an image layer's
    /// `[N, C, H, W]`).
    pub fn record_dims(&mut self, n: usize, dims: crate::Dims) {
        self.shapes.push((self.path.clone(), dims.with_batch(n)));
    }

    /// The recorded output shape of the module at `path` (`""` for the
    /// model itself) as a `(batch, numel)` matrix.
    #[must_use]
    pub fn shape_of(&self, path: &str) -> Option<(usize, usize)> {
        self.full_shape_of(path)
            .map(|s| (s[0], s[1..].iter().product()))
    }

    /// The recorded output shape of the module at `path` as PyTorch
    /// prints it (`[N, C, H, W]` for images).
    #[must_use]
    pub fn full_shape_of(&self, path: &str) -> Option<&[usize]> {
        self.shapes
            .iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, s)| s.as_slice())
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
