//! Resumable training: the state of optimizers and schedules, and
//! checkpoints that hold them with the model.
//!
//! PyTorch resumes a run from `model.state_dict()`,
//! `optimizer.state_dict()` and `scheduler.state_dict()`; nncore does the
//! same, in safetensors files. An optimizer's tensors (momentum buffers,
//! Adam's moments and step counts) are keyed by the model's parameter
//! names (`fc1.weight.exp_avg`), so they load into a freshly built model
//! and optimizer in another process; hyper-parameters (the learning rate a
//! schedule moved, betas, ...) travel as metadata, as exact decimal text.
//! A run that stops after `k` steps and resumes from a checkpoint ends
//! bit for bit where the uninterrupted run ends.
//!
//! ```
//! use nncore::prelude::*;
//! use nncore::{load_checkpoint, save_checkpoint, StepLr};
//!
//! #[derive(Module)]
//! struct Net { fc: Linear }
//!
//! fn step(net: &mut Net, opt: &mut Adam) -> nncore::Result<()> {
//!     let x = Tensor::from_element(4, 3, 0.5);
//!     net.zero_grad();
//!     let y = net.forward_train(&x)?;
//!     let (_, g) = nncore::mse_loss(y, &Tensor::zeros(4, 2))?;
//!     net.backward_params(&g)?;
//!     opt.step(net)
//! }
//!
//! let dir = std::env::temp_dir().join(format!("nncore-ckpt-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("run.safetensors");
//!
//! let mut net = Net { fc: Linear::new(3, 2) };
//! let mut opt = Adam::new(0.01);
//! let mut sched = StepLr::new(&opt, 1, 0.5);
//! step(&mut net, &mut opt)?;
//! sched.step(&mut opt);
//! save_checkpoint(&path, &net, &opt, Some(&sched))?;
//!
//! // Later, elsewhere: build the same things afresh and load.
//! let mut net2 = Net { fc: Linear::new(3, 2) };
//! let mut opt2 = Adam::new(0.01);
//! let mut sched2 = StepLr::new(&opt2, 1, 0.5);
//! load_checkpoint(&path, &mut net2, &mut opt2, Some(&mut sched2))?;
//! assert_eq!(opt2.lr(), 0.005);
//! step(&mut net, &mut opt)?;
//! step(&mut net2, &mut opt2)?;
//! assert_eq!(net.fc.weight().value(), net2.fc.weight().value());
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), nncore::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::module::ModuleExt;
use crate::optim::{OptimizerCheckpoint, SchedulerCheckpoint};
use crate::serialize::{self, SaveOptions, StateDict, TensorData};
use crate::{Error, LoadError, Module, Param, Result, Tensor};

/// Metadata key naming the optimizer's kind in a file.
const OPTIMIZER_KEY: &str = "nncore.optimizer";
/// Metadata key naming the schedule's kind in a file.
const SCHEDULER_KEY: &str = "nncore.scheduler";
/// Metadata key marking a checkpoint file.
const CHECKPOINT_KEY: &str = "nncore.checkpoint";

/// An optimizer's state (PyTorch's `optimizer.state_dict()`): its kind
/// (`SGD`, `Adam`, `AdamW`), its hyper-parameters as exact text, and its
/// per-parameter tensors keyed `<parameter name>.<slot>`
/// (`fc1.weight.momentum_buffer`, `fc1.weight.exp_avg`,
/// `fc1.weight.step`), each of its parameter's PyTorch shape (steps are
/// `i64` scalars).
///
/// Made by [`OptimizerCheckpoint::state_dict`], applied by
/// [`OptimizerCheckpoint::load_state_dict`], saved alone with
/// [`OptimizerState::save_safetensors`] or with the model by
/// [`save_checkpoint`].
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    kind: String,
    hyper: BTreeMap<String, String>,
    tensors: StateDict,
}

impl OptimizerState {
    /// An empty state of `kind`; optimizers fill it.
    #[must_use]
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            hyper: BTreeMap::new(),
            tensors: StateDict::new(),
        }
    }

    /// The optimizer's kind: `SGD`, `Adam` or `AdamW` for nncore's.
    #[must_use]
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The hyper-parameters, as text (`lr` -> `"0.01"`).
    #[must_use]
    pub fn hyperparameters(&self) -> &BTreeMap<String, String> {
        &self.hyper
    }

    /// The per-parameter tensors.
    #[must_use]
    pub fn tensors(&self) -> &StateDict {
        &self.tensors
    }

    /// Sets a hyper-parameter; floats should be written with `{:?}`, which
    /// reads back exactly.
    pub fn set_hyperparameter(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.hyper.insert(name.into(), value.into());
    }

    /// Adds a per-parameter tensor under `<param>.<slot>`.
    pub fn insert_tensor(&mut self, param: &str, slot: &str, tensor: TensorData) {
        self.tensors.insert(format!("{param}.{slot}"), tensor);
    }

    /// Writes the state as a safetensors file (atomically): the tensors
    /// under their keys, the kind and hyper-parameters as metadata.
    ///
    /// # Errors
    /// I/O errors, with the path.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = serialize::to_safetensors_bytes_with(
            &self.tensors,
            SaveOptions::default(),
            self.metadata(),
        )?;
        serialize::write_atomically(path.as_ref(), &bytes)
    }

    /// Reads a state written by [`OptimizerState::save_safetensors`].
    ///
    /// # Errors
    /// A malformed file, or one that holds no optimizer state.
    pub fn load_safetensors(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (sd, meta) = StateDict::load_with_metadata(path)?;
        Self::from_parts(sd, &meta, "").ok_or_else(|| Error::InvalidFile {
            path: path.to_owned(),
            message: format!("no optimizer state in it (its metadata has no {OPTIMIZER_KEY})"),
        })
    }

    /// The kind and hyper-parameters as file metadata
    /// (`optimizer.lr`, ...).
    fn metadata(&self) -> HashMap<String, String> {
        let mut meta: HashMap<String, String> = self
            .hyper
            .iter()
            .map(|(k, v)| (format!("optimizer.{k}"), v.clone()))
            .collect();
        meta.insert(OPTIMIZER_KEY.into(), self.kind.clone());
        meta
    }

    /// The state from a file's metadata and those of its tensors whose
    /// keys start with `prefix` (the prefix removed).
    fn from_parts(sd: StateDict, meta: &HashMap<String, String>, prefix: &str) -> Option<Self> {
        let kind = meta.get(OPTIMIZER_KEY)?.clone();
        let hyper = meta
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("optimizer.")?.to_owned(), v.clone())))
            .collect();
        let mut tensors = StateDict::new();
        for (k, t) in sd.iter() {
            if let Some(rest) = k.strip_prefix(prefix) {
                tensors.insert(rest, t.clone());
            }
        }
        Some(Self {
            kind,
            hyper,
            tensors,
        })
    }
}

/// A schedule's state (PyTorch's `scheduler.state_dict()`): its kind and
/// its fields as exact text.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerState {
    kind: String,
    values: BTreeMap<String, String>,
}

impl SchedulerState {
    /// An empty state of `kind`; schedules fill it.
    #[must_use]
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            values: BTreeMap::new(),
        }
    }

    /// The schedule's kind: `StepLR`, `CosineAnnealingLR`.
    #[must_use]
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The fields, as text.
    #[must_use]
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.values
    }

    /// Sets a field; floats should be written with `{:?}`.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }
}

/// Reads typed fields from text, collecting every problem.
pub(crate) struct Fields<'a> {
    owner: &'a str,
    values: &'a BTreeMap<String, String>,
    pub(crate) problems: Vec<String>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(owner: &'a str, values: &'a BTreeMap<String, String>) -> Self {
        Self {
            owner,
            values,
            problems: Vec::new(),
        }
    }

    /// The field `name` parsed as `T`, or a problem noted.
    pub(crate) fn get<T: std::str::FromStr>(&mut self, name: &str) -> Option<T> {
        match self.values.get(name) {
            None => {
                self.problems
                    .push(format!("{}: the state has no {name}", self.owner));
                None
            }
            Some(text) => match text.parse() {
                Ok(v) => Some(v),
                Err(_) => {
                    self.problems.push(format!(
                        "{}: {name} is {text:?}, which does not read as a {}",
                        self.owner,
                        std::any::type_name::<T>()
                    ));
                    None
                }
            },
        }
    }

    /// The problems as one error, if any.
    pub(crate) fn finish(self) -> Result<()> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.problems.join("; ")))
        }
    }
}

/// A parameter's state tensor (same storage shape as its value) in
/// PyTorch's row-major order under the parameter's shape.
pub(crate) fn tensor_data(p: &Param, t: &Tensor) -> TensorData {
    let values = if p.shape().len() == 2 {
        t.transpose().as_slice().to_vec()
    } else {
        t.as_slice().to_vec()
    };
    // The state tensor has the parameter's storage shape: as many values
    // as the parameter's PyTorch shape holds.
    TensorData::from_checked(p.shape().to_vec(), values)
}

/// The reverse of [`tensor_data`], for data already checked to have the
/// parameter's shape and dtype.
pub(crate) fn to_tensor(p: &Param, data: &TensorData) -> Tensor {
    let (rows, cols) = p.value().shape();
    let values = data.as_f32().unwrap_or(&[]);
    if p.shape().len() == 2 {
        Tensor::from_row_slice(rows, cols, values)
    } else {
        Tensor::from_column_slice(rows, cols, values)
    }
}

/// Matches an optimizer state's tensors to `model`'s parameters: for each
/// parameter with state, its id and its slots. Every key that names no
/// parameter or slot, every tensor of the wrong shape or dtype and every
/// incomplete parameter is reported, all at once, as PyTorch's
/// `load_state_dict` reports.
///
/// `slots` lists `(slot, dtype is i64, required)`.
pub(crate) fn match_state<'s>(
    kind: &str,
    model: &'s dyn Module,
    state: &'s OptimizerState,
    slots: &[(&'static str, bool, bool)],
    mut problems: Vec<String>,
) -> Result<Vec<ParamState<'s>>> {
    let params: HashMap<String, &Param> = model.named_parameters().into_iter().collect();
    let mut found: BTreeMap<String, HashMap<&'static str, &'s TensorData>> = BTreeMap::new();
    let mut unexpected = Vec::new();
    if state.kind() != kind {
        problems.push(format!(
            "the state is a {} optimizer's, this optimizer is {kind}",
            state.kind()
        ));
    }
    for (key, t) in state.tensors.iter() {
        // `<param>.<slot>`: the slot is one of the known names.
        let hit = slots.iter().find_map(|&(slot, is_int, _)| {
            let param = key.strip_suffix(slot)?.strip_suffix('.')?;
            Some((param, slot, is_int))
        });
        let Some((name, slot, is_int)) = hit else {
            unexpected.push(key.to_owned());
            continue;
        };
        let Some(p) = params.get(name) else {
            unexpected.push(key.to_owned());
            continue;
        };
        let want: &[usize] = if is_int { &[] } else { p.shape() };
        let dtype_ok = if is_int {
            t.as_i64().is_some()
        } else {
            t.as_f32().is_some()
        };
        if t.shape() != want {
            problems.push(format!(
                "size mismatch for {key}: copying a state with shape {:?} from checkpoint, the shape in current model is {want:?}.",
                t.shape()
            ));
        } else if !dtype_ok {
            problems.push(format!(
                "dtype mismatch for {key}: the state holds {:?}, expected {}",
                t.dtype(),
                if is_int { "I64" } else { "F32" }
            ));
        } else {
            found.entry(name.to_owned()).or_default().insert(slot, t);
        }
    }
    let mut out = Vec::new();
    for (name, slots_found) in found {
        let missing: Vec<&str> = slots
            .iter()
            .filter(|(s, _, required)| *required && !slots_found.contains_key(s))
            .map(|(s, _, _)| *s)
            .collect();
        if missing.is_empty() {
            out.push((params[&name], slots_found));
        } else {
            problems.push(format!(
                "incomplete state for {name}: no {}",
                missing.join(", ")
            ));
        }
    }
    if problems.is_empty() && unexpected.is_empty() {
        return Ok(out);
    }
    Err(Error::LoadStateDict(LoadError {
        model: kind.to_owned(),
        missing_keys: Vec::new(),
        unexpected_keys: unexpected,
        mismatches: problems,
    }))
}

/// A parameter and its state tensors by slot.
pub(crate) type ParamState<'s> = (&'s Param, HashMap<&'static str, &'s TensorData>);

/// Saves a training run in one safetensors file, atomically: the model's
/// `state_dict` under `model.<name>`, the optimizer's tensors under
/// `optimizer.<name>.<slot>`, and as metadata the optimizer's kind and
/// hyper-parameters and the schedule's state (if any).
///
/// # Errors
/// An optimizer or schedule that cannot save its state; I/O errors, with
/// the path.
pub fn save_checkpoint<M: Module>(
    path: impl AsRef<Path>,
    model: &M,
    optimizer: &dyn OptimizerCheckpoint,
    scheduler: Option<&dyn SchedulerCheckpoint>,
) -> Result<()> {
    let mut sd = StateDict::new();
    for (k, t) in model.state_dict().iter() {
        sd.insert(format!("model.{k}"), t.clone());
    }
    let opt = optimizer.state_dict(model)?;
    for (k, t) in opt.tensors.iter() {
        sd.insert(format!("optimizer.{k}"), t.clone());
    }
    let mut meta = opt.metadata();
    meta.insert(CHECKPOINT_KEY.into(), "1".into());
    if let Some(s) = scheduler {
        let st = s.state()?;
        meta.insert(SCHEDULER_KEY.into(), st.kind.clone());
        for (k, v) in &st.values {
            meta.insert(format!("scheduler.{k}"), v.clone());
        }
    }
    let bytes = serialize::to_safetensors_bytes_with(&sd, SaveOptions::default(), meta)?;
    serialize::write_atomically(path.as_ref(), &bytes)
}

/// Resumes a training run saved by [`save_checkpoint`] into a model,
/// optimizer and schedule built as the saved ones were. Everything is
/// checked first (the model's keys and shapes strictly, the optimizer's
/// kind, parameter names and shapes, the schedule's kind) and every
/// problem is reported at once; on any error, nothing is changed.
///
/// # Errors
/// [`Error::LoadStateDict`] listing every mismatch; a malformed file; a
/// file that is not a checkpoint.
pub fn load_checkpoint<M: Module>(
    path: impl AsRef<Path>,
    model: &mut M,
    optimizer: &mut dyn OptimizerCheckpoint,
    scheduler: Option<&mut dyn SchedulerCheckpoint>,
) -> Result<()> {
    let path = path.as_ref();
    let (sd, meta) = StateDict::load_with_metadata(path)?;
    if !meta.contains_key(CHECKPOINT_KEY) {
        return Err(Error::InvalidFile {
            path: path.to_owned(),
            message: format!(
                "not a checkpoint (its metadata has no {CHECKPOINT_KEY}); load model weights with load_safetensors"
            ),
        });
    }
    let mut model_sd = StateDict::new();
    for (k, t) in sd.iter() {
        if let Some(rest) = k.strip_prefix("model.") {
            model_sd.insert(rest, t.clone());
        }
    }
    let opt_state = OptimizerState::from_parts(sd, &meta, "optimizer.")
        .unwrap_or_else(|| OptimizerState::new("(none)"));
    let sched_state = meta.get(SCHEDULER_KEY).map(|kind| SchedulerState {
        kind: kind.clone(),
        values: meta
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("scheduler.")?.to_owned(), v.clone())))
            .collect(),
    });

    // 1. Check the model without changing it.
    serialize::check_state_dict(model, &model_sd, true)?;
    // 2. The schedule, then the optimizer, each all-or-nothing; the
    //    schedule is put back if the optimizer refuses its state.
    let mut restore: Option<(&mut dyn SchedulerCheckpoint, SchedulerState)> = None;
    match (scheduler, sched_state) {
        (Some(s), Some(st)) => {
            let before = s.state()?;
            s.load_state(&st)?;
            restore = Some((s, before));
        }
        (Some(s), None) => {
            return Err(Error::InvalidFile {
                path: path.to_owned(),
                message: format!(
                    "the checkpoint holds no schedule state, but a {} was given to load into",
                    s.state().map(|st| st.kind).unwrap_or_default()
                ),
            });
        }
        (None, _) => {}
    }
    if let Err(e) = optimizer.load_state_dict(&*model, &opt_state) {
        if let Some((s, before)) = restore {
            // A schedule's own state always loads back.
            let _ = s.load_state(&before);
        }
        return Err(e);
    }
    // 3. The model, checked above: cannot fail now.
    serialize::load_state_dict(model, &model_sd, true)?;
    Ok(())
}
