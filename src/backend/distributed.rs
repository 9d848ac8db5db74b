//! Data-parallel training with ONNX Runtime: every rank of a
//! [`World`] runs the step's gradient graph on its contiguous slice of the
//! global batch, the ranks sum one fused f32 buffer (every gradient scaled by
//! the slice's loss denominator, the denominators, the loss numerators and the
//! slice's logits), and every rank runs the apply graph (SGD) on the same sums
//! ([`crate::compile::split`]). The result is the step of one process on the
//! whole batch: `grad(N / D) = sum_r D_r grad(loss_r) / sum_r D_r`
//! ([`crate::distributed::loss`]), and all ranks keep bitwise identical
//! parameters and momentum buffers.
//!
//! BatchNorm uses each rank's slice statistics (as PyTorch's
//! DistributedDataParallel does); each rank updates its own running statistics
//! and the ranks average them before anything reads them (evaluation, a
//! checkpoint, the deployable model): at every epoch's end at the latest. The
//! running update is affine, so the average equals averaging at the epoch's
//! end whenever it happens: the mean is the global batch's running mean
//! exactly when the slices are equal; the variance is the mean of the slices'
//! unbiased variances, which leaves out the spread of the slice means around
//! the batch mean.

use crate::backend::onnxruntime::{session, Predictor};
use crate::backend::trainer::{Backend, Batch, Device, StepOutput, Trainer};
use crate::compile::split::{split, SplitStep};
use crate::compile::{inference_model, CompileOptions, TrainStep};
use crate::distributed::{checksum, loss, slice_of, World};
use crate::error::{Error, Result};
use crate::ldam::contract::{self, PatchRecord, StateKind, StateTensor, LR_INPUT};
use crate::ldam::LossConfig;
use crate::onnx::tensor::{f32_tensor, f32_values};
use crate::onnx::{ModelProto, TensorProto};
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

fn runtime_error(context: &str) -> impl Fn(ort::Error) -> Error + '_ {
    move |e| Error::Runtime {
        reason: format!("{context}: {e}"),
    }
}

/// The trainer of `patched` in `world`: the data-parallel one in an MPI world
/// (even of one process), else [`crate::backend::create_trainer`]'s.
pub fn create_trainer(
    world: &Arc<World>,
    backend: Backend,
    patched: &ModelProto,
    options: &CompileOptions,
    device: Device,
) -> Result<Box<dyn Trainer>> {
    if !world.is_mpi() {
        return crate::backend::create_trainer(backend, patched, options, device);
    }
    if options.sam.is_some() {
        // SAM's ascent step normalises each rank's own gradient: exact
        // data-parallel SAM would need a second allreduce inside the step.
        return Err(Error::setting(
            "sam",
            "is not available in data-parallel training (its ascent step would use each rank's \
             slice gradient, not the global batch's)",
        ));
    }
    match backend {
        Backend::OnnxRuntime => Ok(Box::new(create(world.clone(), patched, options, device)?)),
        Backend::Torch => Err(world.error(
            "data-parallel training runs the compiled step (backend ort); the torch backend \
             trains one process only",
        )),
    }
}

/// The trainer of a data-parallel run of the compiled `patched` model.
pub fn create(
    world: Arc<World>,
    patched: &ModelProto,
    options: &CompileOptions,
    device: Device,
) -> Result<DistributedTrainer> {
    let step = crate::compile::compile(patched, options)?;
    // Each rank computes on the GPU of its rank on the node.
    let device = match device {
        Device::Cuda(_) => Device::Cuda(world.local_rank()),
        Device::Cpu => Device::Cpu,
    };
    DistributedTrainer::new(world, &step, device)
}

/// One state tensor's place.
struct Slot {
    state: StateTensor,
    dims: Vec<i64>,
}

pub struct DistributedTrainer {
    world: Arc<World>,
    step_model: ModelProto,
    split: SplitStep,
    gradient_session: Session,
    apply_session: Session,
    device: Device,
    data_input: String,
    labels_input: String,
    epoch_input: String,
    loss_output: String,
    logits_output: String,
    loss: LossConfig,
    classes: usize,
    slots: Vec<Slot>,
    /// Current values, in the step's state order (behind a cell: reading the
    /// state averages the running statistics first, a collective operation).
    values: RefCell<Vec<Vec<f32>>>,
    /// Whether the ranks' running statistics have moved apart since the last average.
    statistics_apart: Cell<bool>,
    /// Whether the ranks have compared their starting state.
    compared_start: bool,
    steps: u64,
    predictor: Predictor,
}

impl DistributedTrainer {
    pub fn new(world: Arc<World>, step: &TrainStep, device: Device) -> Result<Self> {
        let split = split(step)?;
        let graph = step
            .model
            .graph
            .as_ref()
            .ok_or_else(|| Error::invalid("the training step has no graph"))?;
        let record: &PatchRecord = &step.record;
        let state_names: Vec<&str> = step.state.iter().map(|s| s.name.as_str()).collect();
        let mut skip = vec![
            record.labels_input.as_str(),
            record.epoch_input.as_str(),
            LR_INPUT,
        ];
        skip.extend(&state_names);
        let data_input = match contract::data_inputs(graph, &skip).as_slice() {
            [one] => one.name().to_string(),
            other => {
                return Err(Error::config(format!(
                    "training needs a model with exactly one data input, this one has {}",
                    other.len()
                )))
            }
        };
        let initial = step.initial_values();
        let mut slots = Vec::with_capacity(step.state.len());
        let mut values = Vec::with_capacity(step.state.len());
        for s in &step.state {
            let tensor = initial.get(&s.name).ok_or_else(|| {
                Error::invalid(format!("state tensor '{}' has no initial value", s.name))
            })?;
            let value = f32_values(tensor).ok_or_else(|| {
                Error::invalid(format!("state tensor '{}' is not inline float32", s.name))
            })?;
            slots.push(Slot {
                state: s.clone(),
                dims: tensor.dims.clone(),
            });
            values.push(value);
        }
        Ok(DistributedTrainer {
            gradient_session: session(&split.gradient, device)?,
            apply_session: session(&split.apply, device)?,
            world,
            step_model: step.model.clone(),
            split,
            device,
            data_input,
            labels_input: record.labels_input.clone(),
            epoch_input: record.epoch_input.clone(),
            loss_output: record.loss_output.clone(),
            logits_output: record.logits_output.clone(),
            loss: record.config.clone(),
            classes: record.config.class_counts.len(),
            slots,
            values: RefCell::new(values),
            statistics_apart: Cell::new(false),
            compared_start: false,
            steps: 0,
            predictor: Predictor::new(&record.logits_output, device),
        })
    }

    /// Elements summed over the ranks in each step.
    pub fn fused_len(&self, batch_size: usize) -> usize {
        self.split.gradient_len() + 2 + batch_size * self.classes
    }

    fn is_statistic(kind: StateKind) -> bool {
        matches!(kind, StateKind::RunningMean | StateKind::RunningVar)
    }

    /// Averages the ranks' running statistics if they have moved apart.
    fn average_statistics(&self) -> Result<()> {
        if !self.statistics_apart.get() {
            return Ok(());
        }
        let mut values = self.values.borrow_mut();
        let mut buffer: Vec<f32> = Vec::new();
        for (slot, value) in self.slots.iter().zip(values.iter()) {
            if Self::is_statistic(slot.state.kind) {
                buffer.extend_from_slice(value);
            }
        }
        self.world.sum_in_place(&mut buffer)?;
        let ranks = self.world.size() as f32;
        let mut at = 0;
        for (slot, value) in self.slots.iter().zip(values.iter_mut()) {
            if Self::is_statistic(slot.state.kind) {
                for (v, sum) in value.iter_mut().zip(&buffer[at..]) {
                    *v = sum / ranks;
                }
                at += value.len();
            }
        }
        self.statistics_apart.set(false);
        Ok(())
    }

    /// Checks that every rank holds the same state tensors of `kinds`, to the bit.
    fn compare_ranks(&self, when: &str, statistics: bool) -> Result<u64> {
        let values = self.values.borrow();
        let sum = checksum(
            self.slots
                .iter()
                .zip(values.iter())
                .filter(|(slot, _)| statistics || !Self::is_statistic(slot.state.kind))
                .map(|(_, v)| v.as_slice()),
        );
        let (low, high) = self.world.min_max(sum)?;
        if low != high {
            return Err(self.world.error(format!(
                "the ranks hold different state {when} (checksums from {low:016x} to {high:016x}); \
                 was every rank started with the same model, data and settings?"
            )));
        }
        Ok(sum)
    }

    fn host_tensor(&self, index: usize) -> Result<Tensor<f32>> {
        let values = self.values.borrow();
        let slot = &self.slots[index];
        Tensor::from_array((slot.dims.clone(), values[index].clone()))
            .map_err(runtime_error(&slot.state.name))
    }

    /// The state tensors the graph of `part` reads, as session inputs.
    fn state_inputs(&self, part: &ModelProto) -> Result<Vec<(String, SessionInputValue<'static>)>> {
        let graph = part
            .graph
            .as_ref()
            .ok_or_else(|| Error::invalid("a part of the split step has no graph"))?;
        let mut inputs = Vec::new();
        for input in &graph.input {
            if let Some(index) = self.index_of(input.name()) {
                inputs.push((input.name().to_string(), self.host_tensor(index)?.into()));
            }
        }
        Ok(inputs)
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.state.name == name)
    }

    /// Runs the gradient graph on this rank's slice; writes the scaled
    /// gradients, the denominator, the numerator and the logits into `fused`.
    fn local_gradients(
        &mut self,
        batch: &Batch,
        range: std::ops::Range<usize>,
        epoch: i64,
        fused: &mut [f32],
    ) -> Result<()> {
        let labels = &batch.labels[range.clone()];
        let per_example = batch.data.len() / batch.labels.len().max(1);
        let mut shape = batch.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = range.len() as i64;
        }
        let data = batch.data[range.start * per_example..range.end * per_example].to_vec();
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = vec![
            (
                self.data_input.clone(),
                Tensor::from_array((shape, data))
                    .map_err(runtime_error("input batch"))?
                    .into(),
            ),
            (
                self.labels_input.clone(),
                Tensor::from_array((vec![labels.len() as i64], labels.to_vec()))
                    .map_err(runtime_error("labels"))?
                    .into(),
            ),
            (
                self.epoch_input.clone(),
                Tensor::from_array((Vec::<i64>::new(), vec![epoch]))
                    .map_err(runtime_error("epoch"))?
                    .into(),
            ),
        ];
        inputs.extend(self.state_inputs(&self.split.gradient)?);
        let outputs = self
            .gradient_session
            .run(inputs)
            .map_err(runtime_error("gradient step"))?;
        let read = |name: &str| -> Result<Vec<f32>> {
            Ok(outputs[name]
                .try_extract_tensor::<f32>()
                .map_err(runtime_error(name))?
                .1
                .to_vec())
        };
        let denominator = loss::denominator(&self.loss, labels, epoch) as f32;
        for g in &self.split.gradients {
            let gradient = read(&g.gradient)?;
            for (out, value) in fused[g.offset..g.offset + g.len].iter_mut().zip(gradient) {
                *out = value * denominator;
            }
        }
        let at = self.split.gradient_len();
        let batch_loss = read(&self.loss_output)?[0];
        fused[at] = denominator;
        fused[at + 1] = batch_loss * denominator;
        let logits = read(&self.logits_output)?;
        let start = at + 2 + range.start * self.classes;
        fused[start..start + logits.len()].copy_from_slice(&logits);
        let mut values = self.values.borrow_mut();
        for (slot, value) in self.slots.iter().zip(values.iter_mut()) {
            if Self::is_statistic(slot.state.kind) {
                *value = read(&slot.state.next)?;
                self.statistics_apart.set(self.world.size() > 1);
            }
        }
        Ok(())
    }

    /// Runs the apply graph on the summed gradients.
    fn apply(&mut self, gradients: &[f32], lr: f32) -> Result<()> {
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = vec![(
            LR_INPUT.to_string(),
            Tensor::from_array((Vec::<i64>::new(), vec![lr]))
                .map_err(runtime_error("lr"))?
                .into(),
        )];
        for g in &self.split.gradients {
            inputs.push((
                g.gradient.clone(),
                Tensor::from_array((
                    g.dims.clone(),
                    gradients[g.offset..g.offset + g.len].to_vec(),
                ))
                .map_err(runtime_error(&g.gradient))?
                .into(),
            ));
        }
        inputs.extend(self.state_inputs(&self.split.apply)?);
        let outputs = self
            .apply_session
            .run(inputs)
            .map_err(runtime_error("optimizer step"))?;
        let mut values = self.values.borrow_mut();
        for (slot, value) in self.slots.iter().zip(values.iter_mut()) {
            if !Self::is_statistic(slot.state.kind) {
                *value = outputs[slot.state.next.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(runtime_error(&slot.state.next))?
                    .1
                    .to_vec();
            }
        }
        Ok(())
    }
}

impl Trainer for DistributedTrainer {
    fn step(&mut self, batch: &Batch, epoch: i64, lr: f32) -> Result<StepOutput> {
        if !self.compared_start {
            self.average_statistics()?;
            self.compare_ranks("at the start", true)?;
            self.compared_start = true;
        }
        let n = batch.labels.len();
        let range = slice_of(n, self.world.rank(), self.world.size());
        let mut fused = vec![0.0f32; self.fused_len(n)];
        if !range.is_empty() {
            self.local_gradients(batch, range, epoch, &mut fused)?;
        }
        self.world.sum_in_place(&mut fused)?;
        let at = self.split.gradient_len();
        let denominator = fused[at];
        for g in &mut fused[..at] {
            *g /= denominator;
        }
        let loss = fused[at + 1] / denominator;
        let logits = fused[at + 2..].to_vec();
        fused.truncate(at);
        self.apply(&fused, lr)?;
        self.predictor.invalidate();
        self.steps += 1;
        if self.world.check_ranks() {
            let sum = self.compare_ranks(&format!("after step {}", self.steps), false)?;
            if self.world.is_writer() {
                eprintln!(
                    "rank check: step {}: {} ranks hold identical parameters and momentum ({sum:016x})",
                    self.steps,
                    self.world.size()
                );
            }
        }
        Ok(StepOutput { loss, logits })
    }

    fn predict(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        if !self.predictor.is_current() {
            let model = self.inference_model()?;
            self.predictor.build(&model)?;
        }
        self.predictor.predict(batch)
    }

    fn state(&self) -> Result<HashMap<String, TensorProto>> {
        self.average_statistics()?;
        let values = self.values.borrow();
        Ok(self
            .slots
            .iter()
            .zip(values.iter())
            .map(|(slot, value)| {
                let name = &slot.state.name;
                (name.clone(), f32_tensor(name, &slot.dims, value))
            })
            .collect())
    }

    fn set_state(&mut self, state: &HashMap<String, TensorProto>) -> Result<()> {
        let mut values = self.values.borrow_mut();
        for (slot, value) in self.slots.iter().zip(values.iter_mut()) {
            let name = &slot.state.name;
            let tensor = state.get(name).ok_or_else(|| {
                Error::config(format!("the checkpoint lacks state tensor '{name}'"))
            })?;
            if tensor.dims != slot.dims {
                return Err(Error::config(format!(
                    "checkpoint tensor '{name}' has shape {:?}, the model expects {:?}",
                    tensor.dims, slot.dims
                )));
            }
            *value = f32_values(tensor).ok_or_else(|| {
                Error::config(format!("checkpoint tensor '{name}' is not inline float32"))
            })?;
        }
        self.statistics_apart.set(false);
        self.compared_start = false;
        self.predictor.invalidate();
        Ok(())
    }

    fn inference_model(&self) -> Result<ModelProto> {
        inference_model(&self.step_model, &self.state()?)
    }

    fn describe(&self) -> String {
        format!(
            "onnxruntime {} on {}, data-parallel over {} rank{} (one allreduce of {} gradient values per step)",
            crate::runtime::ORT_VERSION,
            self.device,
            self.world.size(),
            if self.world.size() == 1 { "" } else { "s" },
            self.split.gradient_len()
        )
    }
}
