//! State dicts and safetensors files, interchangeable with PyTorch.
//!
//! Keys, shapes and element order are PyTorch's: `fc1.weight` has shape
//! `[50, 100]` and is stored row-major. A file written by
//! `safetensors.torch.save_file(model.state_dict(), path)` for the
//! equivalent PyTorch model loads here unchanged, and a file written here
//! loads into PyTorch with `model.load_state_dict(load_file(path))`.
//!
//! ```
//! use nncore::prelude::*;
//!
//! #[derive(Module)]
//! struct Net { fc: Linear }
//!
//! let dir = std::env::temp_dir().join(format!("nncore-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("net.safetensors");
//!
//! let net = Net { fc: Linear::new(3, 2) };
//! net.save_safetensors(&path)?;
//! let mut other = Net { fc: Linear::new(3, 2) };
//! other.load_safetensors(&path)?;
//! assert_eq!(net.fc.weight().value(), other.fc.weight().value());
//!
//! // A model of another shape is refused as a whole, and left untouched.
//! let mut wrong = Net { fc: Linear::new(4, 2) };
//! let err = wrong.load_safetensors(&path).unwrap_err();
//! assert!(err.to_string().contains("size mismatch for fc.weight"));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), nncore::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype as StDtype, SafeTensors, View};

use crate::module::{State, StateMut, walk_state, walk_state_mut};
use crate::{Error, Module, Param, Result};

/// The element type of a [`TensorData`]: what a state dict holds.
/// Parameters and most buffers are `F32`; counters such as BatchNorm's
/// `num_batches_tracked` are `I64` (PyTorch's `torch.long`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit floats (`torch.float32`).
    F32,
    /// 64-bit signed integers (`torch.int64`, `torch.long`).
    I64,
}

#[derive(Debug, Clone, PartialEq)]
enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::I64(v) => v.len(),
        }
    }
}

/// One tensor of a [`StateDict`]: a PyTorch shape and its values in
/// row-major (C) order, `f32` or `i64`. A scalar has shape `[]` and one
/// value.
///
/// # Example
/// ```
/// use nncore::{DType, TensorData};
/// let w = TensorData::new(vec![2, 3], vec![0.0; 6])?;
/// assert_eq!((w.dtype(), w.shape(), w.numel()), (DType::F32, &[2, 3][..], 6));
/// let count = TensorData::from_i64(vec![], vec![7])?;
/// assert_eq!(count.as_i64(), Some(&[7i64][..]));
/// assert_eq!(count.as_f32(), None);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    shape: Vec<usize>,
    values: Values,
}

fn check_numel(what: &str, shape: &[usize], len: usize) -> Result<()> {
    match shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(n) if n == len => Ok(()),
        Some(n) => Err(Error::InvalidArgument(format!(
            "{what}: shape {shape:?} holds {n} elements, got {len} values"
        ))),
        None => Err(Error::InvalidArgument(format!(
            "{what}: shape {shape:?} has more elements than memory can hold (got {len} values)"
        ))),
    }
}

impl TensorData {
    /// An `f32` tensor of `shape` with row-major `data`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `data` does not have as many
    /// elements as `shape` says (or the count overflows).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        check_numel("TensorData::new", &shape, data.len())?;
        Ok(Self {
            shape,
            values: Values::F32(data),
        })
    }

    /// An `i64` tensor of `shape` with row-major `data`.
    ///
    /// # Errors
    /// As [`TensorData::new`].
    pub fn from_i64(shape: Vec<usize>, data: Vec<i64>) -> Result<Self> {
        check_numel("TensorData::from_i64", &shape, data.len())?;
        Ok(Self {
            shape,
            values: Values::I64(data),
        })
    }

    /// An `f32` tensor whose shape the caller knows to hold `data.len()`
    /// values (a parameter's shape and storage).
    pub(crate) fn from_checked(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self {
            shape,
            values: Values::F32(data),
        }
    }

    /// A one-dimensional `f32` tensor (shape `[data.len()]`).
    #[must_use]
    pub fn vector(data: Vec<f32>) -> Self {
        Self {
            shape: vec![data.len()],
            values: Values::F32(data),
        }
    }

    /// An `i64` scalar (shape `[]`), as `torch.tensor(value)`.
    #[must_use]
    pub fn scalar_i64(value: i64) -> Self {
        Self {
            shape: Vec::new(),
            values: Values::I64(vec![value]),
        }
    }

    /// PyTorch's shape (`[]` for a scalar).
    #[must_use]
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    #[must_use]
    pub fn dtype(&self) -> DType {
        match self.values {
            Values::F32(_) => DType::F32,
            Values::I64(_) => DType::I64,
        }
    }

    /// The number of elements (1 for a scalar).
    #[must_use]
    pub fn numel(&self) -> usize {
        self.values.len()
    }

    /// The values, row-major, of an `f32` tensor; `None` for `i64`.
    #[must_use]
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.values {
            Values::F32(v) => Some(v),
            Values::I64(_) => None,
        }
    }

    /// The values, row-major, of an `i64` tensor; `None` for `f32`.
    #[must_use]
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.values {
            Values::I64(v) => Some(v),
            Values::F32(_) => None,
        }
    }

    /// The values of an `f32` tensor, mutably (the shape stays).
    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match &mut self.values {
            Values::F32(v) => Some(v),
            Values::I64(_) => None,
        }
    }

    /// The values of an `i64` tensor, mutably (the shape stays).
    pub fn as_i64_mut(&mut self) -> Option<&mut [i64]> {
        match &mut self.values {
            Values::I64(v) => Some(v),
            Values::F32(_) => None,
        }
    }

    fn source(&self) -> Source<'_> {
        match &self.values {
            Values::F32(v) => Source::F32(v),
            Values::I64(v) => Source::I64(v),
        }
    }
}

/// PyTorch's `state_dict()`: parameter names to tensors, in the model's
/// order.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// use nncore::TensorData;
///
/// let fc = Linear::new(3, 2);
/// let mut sd = fc.state_dict();
/// assert_eq!(sd.keys().collect::<Vec<_>>(), ["weight", "bias"]);
/// assert_eq!(sd.get("weight").unwrap().shape(), &[2, 3]);
/// sd.insert("bias", TensorData::new(vec![2], vec![0.5, -0.5])?);
/// let mut other = Linear::new(3, 2);
/// other.load_state_dict(&sd, true)?;
/// assert_eq!(other.bias().unwrap().to_row_major(), vec![0.5, -0.5]);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateDict {
    entries: Vec<(String, TensorData)>,
}

impl StateDict {
    /// An empty state dict.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `name`; returns the tensor it replaced.
    pub fn insert(&mut self, name: impl Into<String>, tensor: TensorData) -> Option<TensorData> {
        let name = name.into();
        if let Some((_, t)) = self.entries.iter_mut().find(|(n, _)| *n == name) {
            return Some(std::mem::replace(t, tensor));
        }
        self.entries.push((name, tensor));
        None
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &str) -> Option<TensorData> {
        let i = self.entries.iter().position(|(n, _)| n == name)?;
        Some(self.entries.remove(i).1)
    }

    /// The tensor called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&TensorData> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// Names and tensors, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TensorData)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// The number of tensors.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tensors.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the state dict as a safetensors file, atomically (see
    /// [`ModuleExt::save_safetensors`](crate::ModuleExt::save_safetensors)).
    ///
    /// # Errors
    /// I/O errors, with the path.
    pub fn save_safetensors(&self, path: impl AsRef<Path>, options: SaveOptions) -> Result<()> {
        let bytes = to_safetensors_bytes(self, options)?;
        write_atomically(path.as_ref(), &bytes)
    }

    /// Reads every tensor of a safetensors file (floating-point dtypes are
    /// converted to `f32`).
    ///
    /// # Errors
    /// A malformed file; a tensor of an integer or boolean dtype.
    pub fn load_safetensors(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = FileBytes::open(path)?;
        Self::from_safetensors_bytes(bytes.as_slice()).map_err(|e| with_path(e, path))
    }

    /// Reads a safetensors file's tensors and its metadata (the
    /// header's `__metadata__`, empty when there is none).
    pub(crate) fn load_with_metadata(path: &Path) -> Result<(Self, HashMap<String, String>)> {
        let bytes = FileBytes::open(path)?;
        let bytes = bytes.as_slice();
        let read = || -> Result<(Self, HashMap<String, String>)> {
            let sd = Self::from_safetensors_bytes(bytes)?;
            let (_, meta) =
                SafeTensors::read_metadata(bytes).map_err(|e| Error::Format(explain(bytes, &e)))?;
            Ok((sd, meta.metadata().clone().unwrap_or_default()))
        };
        read().map_err(|e| with_path(e, path))
    }

    /// Parses safetensors bytes, as [`StateDict::load_safetensors`].
    ///
    /// # Errors
    /// As [`StateDict::load_safetensors`].
    pub fn from_safetensors_bytes(bytes: &[u8]) -> Result<Self> {
        let entries = parse(bytes)?;
        let mut out = Self::new();
        for e in &entries.list {
            let values = match e.source {
                Source::Raw(dtype, bytes) => decode(dtype, bytes).ok_or_else(|| {
                    Error::Format(format!(
                        "tensor {} has dtype {dtype:?}; only floating-point tensors (F32, F16, BF16, F64) and integer tensors (I64, I32, I16, I8, U32, U16, U8) can be loaded",
                        e.name
                    ))
                })?,
                Source::F32(values) => Values::F32(values.to_vec()),
                Source::I64(values) => Values::I64(values.to_vec()),
            };
            out.entries.push((
                e.name.to_owned(),
                TensorData {
                    shape: e.shape.to_vec(),
                    values,
                },
            ));
        }
        Ok(out)
    }
}

/// The element type to write a safetensors file in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveDtype {
    /// 32-bit floats, as the model holds them.
    #[default]
    F32,
    /// IEEE half precision (PyTorch's `float16`); rounds to nearest.
    F16,
    /// bfloat16 (PyTorch's `bfloat16`); rounds to nearest.
    BF16,
}

/// Options for saving.
#[derive(Debug, Clone, Copy, Default)]
pub struct SaveOptions {
    /// The element type of the file.
    pub dtype: SaveDtype,
}

impl SaveOptions {
    /// Saves in the given dtype.
    #[must_use]
    pub fn dtype(dtype: SaveDtype) -> Self {
        Self { dtype }
    }
}

/// Options for loading.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    strict: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self::strict()
    }
}

impl LoadOptions {
    /// PyTorch's `strict=True`: every parameter must be in the file and
    /// every tensor of the file must be a parameter.
    #[must_use]
    pub fn strict() -> Self {
        Self { strict: true }
    }

    /// PyTorch's `strict=False`: load what matches, report the rest.
    /// Shape and dtype mismatches are still errors, as in PyTorch.
    #[must_use]
    pub fn non_strict() -> Self {
        Self { strict: false }
    }
}

/// What a load found (PyTorch's `_IncompatibleKeys`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Parameters of the model that the source did not hold.
    pub missing_keys: Vec<String>,
    /// Tensors of the source that the model has no parameter for.
    pub unexpected_keys: Vec<String>,
}

/// Why a state dict could not be loaded; displays as PyTorch's
/// `Error(s) in loading state_dict for Model:` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The model's type name.
    pub model: String,
    /// Missing keys (reported in strict mode).
    pub missing_keys: Vec<String>,
    /// Unexpected keys (reported in strict mode).
    pub unexpected_keys: Vec<String>,
    /// Size and dtype mismatches, one message each.
    pub mismatches: Vec<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = |keys: &[String]| {
            keys.iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut msgs = Vec::new();
        if !self.missing_keys.is_empty() {
            msgs.push(format!(
                "Missing key(s) in state_dict: {}. ",
                quoted(&self.missing_keys)
            ));
        }
        if !self.unexpected_keys.is_empty() {
            msgs.push(format!(
                "Unexpected key(s) in state_dict: {}. ",
                quoted(&self.unexpected_keys)
            ));
        }
        msgs.extend(self.mismatches.iter().cloned());
        write!(
            f,
            "Error(s) in loading state_dict for {}:\n\t{}",
            self.model,
            msgs.join("\n\t")
        )
    }
}

/// PyTorch's `torch.Size([50, 100])`.
fn torch_size(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    format!("torch.Size([{}])", dims.join(", "))
}

#[derive(Clone, Copy)]
enum Source<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
    Raw(StDtype, &'a [u8]),
}

impl Source<'_> {
    /// The element type the data is: float or integer (or neither).
    fn kind(&self) -> Option<DType> {
        match self {
            Self::F32(_) => Some(DType::F32),
            Self::I64(_) => Some(DType::I64),
            Self::Raw(d, _) if is_float(*d) => Some(DType::F32),
            Self::Raw(d, _) if is_int(*d) => Some(DType::I64),
            Self::Raw(..) => None,
        }
    }

    /// The file's dtype name, as safetensors spells it.
    fn dtype_name(&self) -> String {
        match self {
            Self::F32(_) => "F32".into(),
            Self::I64(_) => "I64".into(),
            Self::Raw(d, _) => format!("{d:?}"),
        }
    }
}

struct Entry<'a> {
    name: String,
    shape: Vec<usize>,
    source: Source<'a>,
}

struct Entries<'a> {
    list: Vec<Entry<'a>>,
}

/// Floating-point bytes to `f32`, integer bytes to `i64`; `None` for
/// other dtypes.
fn decode(dtype: StDtype, bytes: &[u8]) -> Option<Values> {
    if is_int(dtype) {
        let mut out = Vec::new();
        decode_int(dtype, bytes, |v| out.push(v))?;
        return Some(Values::I64(out));
    }
    let mut out = Vec::new();
    decode_into(dtype, bytes, |v| out.push(v))?;
    Some(Values::F32(out))
}

fn decode_int(dtype: StDtype, bytes: &[u8], mut f: impl FnMut(i64)) -> Option<()> {
    fn each<const N: usize>(bytes: &[u8], mut f: impl FnMut([u8; N])) {
        bytes.chunks_exact(N).for_each(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a);
        });
    }
    match dtype {
        StDtype::I64 => each::<8>(bytes, |a| f(i64::from_le_bytes(a))),
        StDtype::I32 => each::<4>(bytes, |a| f(i32::from_le_bytes(a).into())),
        StDtype::U32 => each::<4>(bytes, |a| f(u32::from_le_bytes(a).into())),
        StDtype::I16 => each::<2>(bytes, |a| f(i16::from_le_bytes(a).into())),
        StDtype::U16 => each::<2>(bytes, |a| f(u16::from_le_bytes(a).into())),
        StDtype::I8 => each::<1>(bytes, |a| f(i8::from_le_bytes(a).into())),
        StDtype::U8 => each::<1>(bytes, |a| f(u8::from_le_bytes(a).into())),
        _ => return None,
    }
    Some(())
}

/// Integer dtypes that convert to `i64` exactly.
fn is_int(dtype: StDtype) -> bool {
    matches!(
        dtype,
        StDtype::I64
            | StDtype::I32
            | StDtype::U32
            | StDtype::I16
            | StDtype::U16
            | StDtype::I8
            | StDtype::U8
    )
}

fn decode_into(dtype: StDtype, bytes: &[u8], mut f: impl FnMut(f32)) -> Option<()> {
    match dtype {
        StDtype::F32 => bytes
            .chunks_exact(4)
            .for_each(|c| f(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        StDtype::F16 => bytes
            .chunks_exact(2)
            .for_each(|c| f(half::f16::from_le_bytes([c[0], c[1]]).to_f32())),
        StDtype::BF16 => bytes
            .chunks_exact(2)
            .for_each(|c| f(half::bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        StDtype::F64 => bytes.chunks_exact(8).for_each(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            f(f64::from_le_bytes(a) as f32);
        }),
        _ => return None,
    }
    Some(())
}

fn is_float(dtype: StDtype) -> bool {
    matches!(
        dtype,
        StDtype::F32 | StDtype::F16 | StDtype::BF16 | StDtype::F64
    )
}

/// Rejects headers that name one tensor twice: JSON parsers keep the last
/// value silently.
fn check_duplicate_keys(bytes: &[u8]) -> Result<()> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut dup = None;
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if dup.is_none() && !seen.insert(key.clone()) {
                    dup = Some(key);
                }
            }
            Ok(dup)
        }
    }

    // The header was validated by the safetensors parser before this runs.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default()) as usize;
    let header = &bytes[8..8 + n];
    let mut de = serde_json::Deserializer::from_slice(header);
    match de.deserialize_map(Keys) {
        Ok(None) => Ok(()),
        Ok(Some(key)) => Err(Error::Format(format!(
            "the header names tensor \"{key}\" more than once"
        ))),
        Err(e) => Err(Error::Format(format!("header: {e}"))),
    }
}

/// The conversion PyTorch users run on a `torch.save` file.
const CONVERT: &str = "convert it in Python with `safetensors.torch.save_file(torch.load(path), \"model.safetensors\")` (for a full model saved with torch.save: `safetensors.torch.save_file(model.state_dict(), ...)`)";

/// What is wrong with bytes that are not safetensors at all, if that can
/// be told from their start.
fn not_safetensors(bytes: &[u8]) -> Option<String> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Some(format!(
            "not a safetensors file: a zip archive, which is what PyTorch's torch.save writes (.pt, .pth, .bin); {CONVERT}"
        ));
    }
    if bytes.len() >= 2 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) {
        return Some(format!(
            "not a safetensors file: a Python pickle (PyTorch's legacy torch.save format); {CONVERT}"
        ));
    }
    if bytes.len() < 8 {
        return Some(format!(
            "not a safetensors file: {} bytes, fewer than the 8 of the header length",
            bytes.len()
        ));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[..8]);
    let n = u64::from_le_bytes(len);
    if n > (bytes.len() - 8) as u64 {
        let text = bytes[..8]
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
        return Some(if text {
            format!(
                "not a safetensors file: it starts with text ({:?}), not with a header length",
                String::from_utf8_lossy(&bytes[..bytes.len().min(16)])
            )
        } else {
            format!(
                "not a safetensors file: its first 8 bytes give a header of {n} bytes, longer than the file ({} bytes)",
                bytes.len()
            )
        });
    }
    None
}

/// The safetensors crate's error, said in terms of the file, naming the
/// tensor where there is one.
fn explain(bytes: &[u8], e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    let header = || -> Option<serde_json::Map<String, serde_json::Value>> {
        let mut len = [0u8; 8];
        len.copy_from_slice(bytes.get(..8)?);
        let n = usize::try_from(u64::from_le_bytes(len)).ok()?;
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()
    };
    let data_len = || {
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[..8]);
        (bytes.len() as u64).saturating_sub(8 + u64::from_le_bytes(len))
    };
    match e {
        E::TensorInvalidInfo | E::InvalidTensorView(..) | E::ValidationOverflow => {
            let bad = header().and_then(|h| {
                h.into_iter().filter(|(k, _)| k != "__metadata__").find_map(|(name, v)| {
                    let size = match v.get("dtype")?.as_str()? {
                        "F64" | "I64" | "U64" => 8,
                        "F32" | "I32" | "U32" => 4,
                        "F16" | "BF16" | "I16" | "U16" => 2,
                        _ => 1,
                    };
                    let shape: Vec<u64> = v.get("shape")?.as_array()?.iter().map(|d| d.as_u64().unwrap_or(u64::MAX)).collect();
                    let offsets = v.get("data_offsets")?.as_array()?;
                    let (begin, end) = (offsets.first()?.as_u64()?, offsets.get(1)?.as_u64()?);
                    let want = shape.iter().try_fold(size, |a: u64, d| a.checked_mul(*d));
                    (want != end.checked_sub(begin)).then(|| match want {
                        Some(w) => format!(
                            "tensor {name}: shape {shape:?} of {} needs {w} bytes, but its data offsets [{begin}, {end}] hold {}",
                            v["dtype"].as_str().unwrap_or("?"),
                            end.saturating_sub(begin)
                        ),
                        None => format!("tensor {name}: shape {shape:?} is too large"),
                    })
                })
            });
            bad.unwrap_or_else(|| {
                format!("a tensor's shape, data type and data offsets disagree ({e})")
            })
        }
        E::InvalidOffset(name) => format!(
            "tensor {name}: its data offsets do not follow the previous tensor's or lie outside the data"
        ),
        E::MetadataIncompleteBuffer => format!(
            "the tensors' data does not cover the file's data section of {} bytes exactly (bytes left over, or a tensor runs past the end)",
            data_len()
        ),
        E::HeaderTooLarge => "the header is larger than the 100 MB safetensors allows".into(),
        E::InvalidHeaderLength => "the header length runs past the end of the file".into(),
        other => other.to_string(),
    }
}

fn parse(bytes: &[u8]) -> Result<Entries<'_>> {
    if bytes.is_empty() {
        return Err(Error::Format("the file is empty".into()));
    }
    if let Some(message) = not_safetensors(bytes) {
        return Err(Error::Format(message));
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Format(explain(bytes, &e)))?;
    check_duplicate_keys(bytes)?;
    let mut list: Vec<Entry<'_>> = st
        .iter()
        .map(|(name, view)| Entry {
            name: name.to_owned(),
            shape: view.shape().to_vec(),
            source: Source::Raw(view.dtype(), view.data()),
        })
        .collect();
    // File order: by position of the data.
    let base = bytes.as_ptr() as usize;
    list.sort_by_key(|e| match e.source {
        Source::Raw(_, b) => b.as_ptr() as usize - base,
        Source::F32(_) | Source::I64(_) => 0,
    });
    Ok(Entries { list })
}

impl StateDict {
    fn entries(&self) -> Entries<'_> {
        Entries {
            list: self
                .entries
                .iter()
                .map(|(n, t)| Entry {
                    name: n.clone(),
                    shape: t.shape.clone(),
                    source: t.source(),
                })
                .collect(),
        }
    }
}

/// Checks every entry against the model's parameters and persistent
/// buffers, then (only if all is well) copies them in: a failed load leaves
/// the model as it was.
fn load_entries<M: Module + ?Sized>(
    model: &mut M,
    entries: &Entries<'_>,
    strict: bool,
) -> Result<LoadReport> {
    let report = check_entries(model, entries, strict)?;
    let index = entries.index();
    walk_state_mut(model, &mut String::new(), &mut |name, state| {
        let Some(&i) = index.get(name) else { return };
        let source = entries.list[i].source;
        match state {
            StateMut::Param(p) => copy_into(p, source),
            StateMut::Buffer(b) if b.is_persistent() => copy_into_buffer(b.data_mut(), source),
            StateMut::Buffer(_) => {}
        }
    });
    Ok(report)
}

impl Entries<'_> {
    fn index(&self) -> HashMap<&str, usize> {
        self.list
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.as_str(), i))
            .collect()
    }
}

/// What loading `entries` would report, without changing the model.
fn check_entries<M: Module + ?Sized>(
    model: &M,
    entries: &Entries<'_>,
    strict: bool,
) -> Result<LoadReport> {
    let index = entries.index();
    let mut missing = Vec::new();
    let mut mismatches = Vec::new();
    let mut used = vec![false; entries.list.len()];
    let mut prefix = String::new();
    walk_state(model, &mut prefix, &mut |name, state| {
        let (shape, want, what, optional) = match state {
            State::Param(p) => (p.shape().to_vec(), DType::F32, "param", false),
            State::Buffer(b) if b.is_persistent() => (
                b.shape().to_vec(),
                b.dtype(),
                "buffer",
                b.is_optional_on_load(),
            ),
            State::Buffer(_) => return,
        };
        let Some(&i) = index.get(name) else {
            if !optional {
                missing.push(name.to_owned());
            }
            return;
        };
        used[i] = true;
        let e = &entries.list[i];
        if e.shape != shape {
            mismatches.push(format!(
                "size mismatch for {name}: copying a param with shape {} from checkpoint, the shape in current model is {}.",
                torch_size(&e.shape),
                torch_size(&shape)
            ));
        } else if e.source.kind() != Some(want) {
            let accepts = match want {
                DType::F32 => "F32, F16, BF16 or F64",
                DType::I64 => "I64, I32, I16, I8, U32, U16 or U8",
            };
            mismatches.push(format!(
                "dtype mismatch for {name}: copying a tensor of dtype {} from checkpoint, the {what} in current model is {want:?} (it loads {accepts}).",
                e.source.dtype_name()
            ));
        }
    });
    let unexpected: Vec<String> = entries
        .list
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(e, _)| e.name.clone())
        .collect();
    if !mismatches.is_empty() || (strict && (!missing.is_empty() || !unexpected.is_empty())) {
        return Err(Error::LoadStateDict(LoadError {
            model: model.name().to_owned(),
            missing_keys: if strict { missing } else { Vec::new() },
            unexpected_keys: if strict { unexpected } else { Vec::new() },
            mismatches,
        }));
    }
    Ok(LoadReport {
        missing_keys: missing,
        unexpected_keys: unexpected,
    })
}

/// Copies row-major values of the right count into `p` (checked by the
/// caller), decoding straight from the file's bytes: no intermediate copy.
fn copy_into(p: &mut Param, source: Source<'_>) {
    match source {
        Source::F32(values) => p.fill_row_major(values.iter().copied()),
        Source::Raw(StDtype::F32, b) => p.fill_row_major(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        Source::Raw(StDtype::F16, b) => p.fill_row_major(
            b.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        Source::Raw(StDtype::BF16, b) => p.fill_row_major(
            b.chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        Source::Raw(StDtype::F64, b) => p.fill_row_major(b.chunks_exact(8).map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            f64::from_le_bytes(a) as f32
        })),
        // Other dtypes are refused before anything is copied.
        Source::Raw(..) | Source::I64(_) => {}
    }
}

/// Copies checked values into a buffer's data of the same kind.
fn copy_into_buffer(t: &mut TensorData, source: Source<'_>) {
    match (&mut t.values, source) {
        (Values::F32(dst), Source::F32(src)) => dst.copy_from_slice(src),
        (Values::I64(dst), Source::I64(src)) => dst.copy_from_slice(src),
        (Values::F32(dst), Source::Raw(d, b)) => {
            let mut it = dst.iter_mut();
            decode_into(d, b, |v| {
                if let Some(x) = it.next() {
                    *x = v;
                }
            });
        }
        (Values::I64(dst), Source::Raw(d, b)) => {
            let mut it = dst.iter_mut();
            decode_int(d, b, |v| {
                if let Some(x) = it.next() {
                    *x = v;
                }
            });
        }
        // Kinds that disagree are refused before anything is copied.
        _ => {}
    }
}

/// The model's parameters and persistent buffers as a state dict.
pub(crate) fn state_dict<M: Module + ?Sized>(model: &M) -> StateDict {
    let mut entries = Vec::new();
    walk_state(model, &mut String::new(), &mut |name, state| match state {
        State::Param(p) => entries.push((
            name.to_owned(),
            TensorData {
                shape: p.shape().to_vec(),
                values: Values::F32(p.to_row_major()),
            },
        )),
        State::Buffer(b) if b.is_persistent() => entries.push((name.to_owned(), b.data().clone())),
        State::Buffer(_) => {}
    });
    StateDict { entries }
}

/// What [`load_state_dict`] would report, without changing the model.
pub(crate) fn check_state_dict<M: Module + ?Sized>(
    model: &M,
    sd: &StateDict,
    strict: bool,
) -> Result<LoadReport> {
    check_entries(model, &sd.entries(), strict)
}

pub(crate) fn load_state_dict<M: Module + ?Sized>(
    model: &mut M,
    sd: &StateDict,
    strict: bool,
) -> Result<LoadReport> {
    load_entries(model, &sd.entries(), strict)
}

pub(crate) fn load_bytes<M: Module + ?Sized>(
    model: &mut M,
    bytes: &[u8],
    options: LoadOptions,
) -> Result<LoadReport> {
    load_entries(model, &parse(bytes)?, options.strict)
}

pub(crate) fn load_file<M: Module + ?Sized>(
    model: &mut M,
    path: &Path,
    options: LoadOptions,
) -> Result<LoadReport> {
    let bytes = FileBytes::open(path)?;
    load_bytes(model, bytes.as_slice(), options).map_err(|e| with_path(e, path))
}

fn with_path(e: Error, path: &Path) -> Error {
    match e {
        Error::Format(message) => Error::InvalidFile {
            path: path.to_owned(),
            message,
        },
        other => other,
    }
}

/// A file's bytes: read into memory when small, memory-mapped when large
/// so that loading holds no second copy of the weights.
enum FileBytes {
    Owned(Vec<u8>),
    Mapped(memmap2::Mmap),
}

const MMAP_THRESHOLD: u64 = 16 << 20;

impl FileBytes {
    fn open(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < MMAP_THRESHOLD {
            let mut buf = Vec::with_capacity(len as usize);
            std::io::Read::read_to_end(&mut &file, &mut buf).map_err(io)?;
            return Ok(Self::Owned(buf));
        }
        // SAFETY: the map is read-only and lives no longer than this
        // value. Like every reader of memory-mapped weights (safetensors,
        // candle), it assumes no other process truncates the file while it
        // is being loaded.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(Self::Mapped(map))
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Mapped(m) => m,
        }
    }
}

struct SaveView {
    dtype: StDtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &SaveView {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn encode(values: &Values, dtype: SaveDtype) -> (StDtype, Vec<u8>) {
    let values = match values {
        Values::F32(v) => v,
        Values::I64(v) => {
            return (
                StDtype::I64,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            );
        }
    };
    match dtype {
        SaveDtype::F32 => (
            StDtype::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        SaveDtype::F16 => (
            StDtype::F16,
            values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
        SaveDtype::BF16 => (
            StDtype::BF16,
            values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
    }
}

/// A state dict as safetensors bytes, with the `format: pt` metadata
/// PyTorch-side tools expect.
pub(crate) fn to_safetensors_bytes(sd: &StateDict, options: SaveOptions) -> Result<Vec<u8>> {
    to_safetensors_bytes_with(sd, options, HashMap::new())
}

/// [`to_safetensors_bytes`] with more metadata beside `format: pt`.
pub(crate) fn to_safetensors_bytes_with(
    sd: &StateDict,
    options: SaveOptions,
    mut metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let views: Vec<(String, SaveView)> = sd
        .entries
        .iter()
        .map(|(n, t)| {
            let (dtype, bytes) = encode(&t.values, options.dtype);
            (
                n.clone(),
                SaveView {
                    dtype,
                    shape: t.shape.clone(),
                    bytes,
                },
            )
        })
        .collect();
    if let Some((name, _)) = views.iter().find(|(n, _)| n == "__metadata__") {
        return Err(Error::InvalidArgument(format!(
            "a tensor cannot be named {name}: safetensors reserves that key for the file's metadata"
        )));
    }
    metadata.insert("format".to_owned(), "pt".to_owned());
    safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), Some(metadata))
        .map_err(|e| Error::Format(e.to_string()))
}

/// Writes `bytes` to a temporary file beside `path`, flushes it to disk and
/// renames it over `path`: a crash or a full disk mid-save never destroys
/// the previous file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| Error::Io { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if path.file_name().is_none() {
        let shown = if path.as_os_str().is_empty() {
            "\"\"".to_owned()
        } else {
            path.display().to_string()
        };
        return Err(Error::InvalidArgument(format!(
            "{shown}: not a file path (give a file name to save to)"
        )));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // Short, whatever the target's name: a file name at the system's limit
    // must still be savable. Errors name the path the caller gave.
    let tmp = dir.join(format!(".nncore.{}.{nanos:08x}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io(path))?;
        f.write_all(bytes).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable where the platform allows it.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The first parameter or float buffer holding NaN or ±Inf, in
/// `state_dict` order.
pub(crate) fn check_finite<M: Module + ?Sized>(model: &M) -> Result<()> {
    let mut bad: Option<Error> = None;
    walk_state(model, &mut String::new(), &mut |name, state| {
        if bad.is_some() {
            return;
        }
        let (values, is_buffer) = match state {
            State::Param(p) => (p.to_row_major(), false),
            State::Buffer(b) => match b.as_f32() {
                Some(v) => (v.to_vec(), true),
                None => return,
            },
        };
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            bad = Some(Error::NonFinite {
                name: name.to_owned(),
                index: i,
                value: values[i],
                is_buffer,
            });
        }
    });
    bad.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files of 16 MiB and more are mapped, smaller ones read (the
    /// integration test of the large load checks the values; this one that
    /// the large path is really the mapped one).
    #[test]
    fn large_files_are_memory_mapped() {
        let dir = std::env::temp_dir().join(format!("nncore-mmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (small, large) = (dir.join("small"), dir.join("large"));
        std::fs::write(&small, vec![1u8; 1024]).unwrap();
        std::fs::write(&large, vec![2u8; MMAP_THRESHOLD as usize]).unwrap();
        let s = FileBytes::open(&small).unwrap();
        assert!(matches!(s, FileBytes::Owned(_)));
        let l = FileBytes::open(&large).unwrap();
        assert!(matches!(l, FileBytes::Mapped(_)));
        assert_eq!(l.as_slice().len(), MMAP_THRESHOLD as usize);
        assert!(l.as_slice().iter().all(|b| *b == 2));
        drop(l);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
