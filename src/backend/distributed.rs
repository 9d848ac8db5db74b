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

use crate::backend::onnxruntime::{memory_of, runtime_error, scalar_tensor, session, Predictor};
use crate::backend::trainer::{Backend, Batch, Device, StepOutput, Trainer};
use crate::compile::split::{split, SplitStep, DENOMINATOR, DENOMINATOR_SUM, FUSED_GRADIENTS};
use crate::compile::{inference_model, CompileOptions, TrainStep};
use crate::distributed::{checksum, loss, slice_of, World};
use crate::error::{Error, Result};
use crate::ldam::contract::{PatchRecord, StateKind, StateTensor, LR_INPUT};
use crate::onnx::tensor::{f32_tensor, f32_values};
use crate::onnx::{ModelProto, TensorProto};
use ort::memory::MemoryInfo;
use ort::session::{IoBinding, Session, SessionInputValue};
use ort::value::{Tensor, TensorValueType};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

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
        // libtorch's gradients are summed through host memory by MPI.
        Backend::Torch => crate::backend::torch_trainer(
            patched,
            options,
            rank_device(world, device),
            Some(world.clone()),
        ),
    }
}

/// The device of this rank: the GPU of its rank on the node.
fn rank_device(world: &World, device: Device) -> Device {
    match device {
        Device::Cuda(_) => Device::Cuda(world.local_rank()),
        Device::Cpu => Device::Cpu,
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
    let device = rank_device(&world, device);
    let summation = match device {
        Device::Cpu => Summation::Mpi,
        Device::Cuda(ordinal) => Summation::on_gpu(&world, ordinal)?,
    };
    DistributedTrainer::with_summation(world, &step, device, summation)
}

/// Where the ranks sum the fused gradient buffer.
pub enum Summation {
    /// MPI, through host memory, in one buffer with the loss and the logits.
    Mpi,
    /// NCCL, in GPU memory; the loss and the logits go through MPI.
    #[cfg(all(feature = "mpi", feature = "cuda"))]
    Nccl(crate::distributed::nccl::Nccl),
}

impl Summation {
    /// NCCL on GPU `ordinal` where the build has it, else MPI through host memory.
    fn on_gpu(world: &World, ordinal: usize) -> Result<Summation> {
        #[cfg(all(feature = "mpi", feature = "cuda"))]
        if world.is_mpi() {
            return Ok(Summation::Nccl(crate::distributed::nccl::Nccl::new(
                world, ordinal,
            )?));
        }
        let _ = (world, ordinal);
        Ok(Summation::Mpi)
    }

    fn describe(&self) -> String {
        match self {
            Summation::Mpi => "MPI".to_string(),
            #[cfg(all(feature = "mpi", feature = "cuda"))]
            Summation::Nccl(nccl) => match crate::distributed::nccl::version() {
                Ok(v) => format!(
                    "NCCL {}.{}.{} on cuda:{}",
                    v / 10000,
                    v / 100 % 100,
                    v % 100,
                    nccl.ordinal()
                ),
                Err(_) => format!("NCCL on cuda:{}", nccl.ordinal()),
            },
        }
    }
}

/// The indices of the `slots` whose state tensors the graph of `part` reads.
fn reads(part: &ModelProto, slots: &[Slot]) -> Result<Vec<usize>> {
    let graph = part
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid("a part of the split step has no graph"))?;
    Ok(graph
        .input
        .iter()
        .filter_map(|input| slots.iter().position(|s| s.state.name == input.name()))
        .collect())
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
    /// The gradient graph's inputs and outputs: the fused gradients stay in
    /// `fused_memory`, everything else comes back to the host.
    binding: IoBinding,
    fused_memory: MemoryInfo<'static>,
    host_memory: MemoryInfo<'static>,
    summation: Summation,
    apply_session: Session,
    device: Device,
    data_input: String,
    /// The patched model's contract: labels, epoch, loss and logits names.
    record: PatchRecord,
    slots: Vec<Slot>,
    /// The slots each half of the split step reads, resolved once.
    gradient_reads: Vec<usize>,
    apply_reads: Vec<usize>,
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
    /// The trainer summing through MPI (host memory) on any device.
    pub fn new(world: Arc<World>, step: &TrainStep, device: Device) -> Result<Self> {
        Self::with_summation(world, step, device, Summation::Mpi)
    }

    pub fn with_summation(
        world: Arc<World>,
        step: &TrainStep,
        device: Device,
        summation: Summation,
    ) -> Result<Self> {
        let split = split(step)?;
        let record: &PatchRecord = &step.record;
        let data_input = step.data_input()?;
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
        let gradient_reads = reads(&split.gradient, &slots)?;
        let apply_reads = reads(&split.apply, &slots)?;
        let gradient_session = session(&split.gradient, device)?;
        let binding = gradient_session
            .create_binding()
            .map_err(runtime_error("binding the gradient graph"))?;
        let fused_memory = match summation {
            Summation::Mpi => memory_of(Device::Cpu)?,
            #[cfg(all(feature = "mpi", feature = "cuda"))]
            Summation::Nccl(_) => memory_of(device)?,
        };
        Ok(DistributedTrainer {
            gradient_session,
            binding,
            fused_memory,
            host_memory: memory_of(Device::Cpu)?,
            summation,
            apply_session: session(&split.apply, device)?,
            world,
            step_model: step.model.clone(),
            split,
            device,
            data_input,
            record: record.clone(),
            gradient_reads,
            apply_reads,
            slots,
            values: RefCell::new(values),
            statistics_apart: Cell::new(false),
            compared_start: false,
            steps: 0,
            predictor: Predictor::new(&record.logits_output, device),
        })
    }

    fn classes(&self) -> usize {
        self.record.config.class_counts.len()
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
        self.world.average_in_place(&mut buffer)?;
        let mut at = 0;
        for (slot, value) in self.slots.iter().zip(values.iter_mut()) {
            if Self::is_statistic(slot.state.kind) {
                let len = value.len();
                value.copy_from_slice(&buffer[at..at + len]);
                at += len;
            }
        }
        self.statistics_apart.set(false);
        Ok(())
    }

    /// The checksum of the state: parameters and momentum buffers, and the
    /// running statistics when `statistics`.
    fn checksum(&self, statistics: bool) -> u64 {
        let values = self.values.borrow();
        checksum(
            self.slots
                .iter()
                .zip(values.iter())
                .filter(|(slot, _)| statistics || !Self::is_statistic(slot.state.kind))
                .map(|(_, v)| v.as_slice()),
        )
    }

    fn host_tensor(&self, index: usize) -> Result<Tensor<f32>> {
        let values = self.values.borrow();
        let slot = &self.slots[index];
        Tensor::from_array((slot.dims.clone(), values[index].clone()))
            .map_err(runtime_error(&slot.state.name))
    }

    /// The state tensors of `slots` as named host tensors (session inputs).
    fn state_values(&self, slots: &[usize]) -> Result<Vec<(String, Tensor<f32>)>> {
        slots
            .iter()
            .map(|&index| {
                Ok((
                    self.slots[index].state.name.clone(),
                    self.host_tensor(index)?,
                ))
            })
            .collect()
    }

    /// Runs the gradient graph on this rank's slice with its loss
    /// `denominator`: returns the fused gradients (times the denominator;
    /// where [`Summation`] sums them) and writes the denominator, the loss
    /// numerator and the slice's logits into `extras` (`[D, loss x D,
    /// logits of the whole batch]`, zero outside the slice).
    fn local_gradients(
        &mut self,
        slice: &Batch,
        first: usize,
        epoch: i64,
        denominator: f32,
        extras: &mut [f32],
    ) -> Result<Tensor<f32>> {
        let bind = runtime_error("binding the gradient graph's inputs and outputs");
        let mut inputs: Vec<(String, Tensor<f32>)> = vec![
            (
                self.data_input.clone(),
                Tensor::from_array((slice.shape.clone(), slice.data.clone()))
                    .map_err(runtime_error("input batch"))?,
            ),
            (
                DENOMINATOR.to_string(),
                scalar_tensor(DENOMINATOR, denominator)?,
            ),
        ];
        inputs.extend(self.state_values(&self.gradient_reads)?);
        let labels_value =
            Tensor::from_array((vec![slice.labels.len() as i64], slice.labels.clone()))
                .map_err(runtime_error("labels"))?;
        let epoch_value = scalar_tensor("epoch", epoch)?;
        let binding = &mut self.binding;
        for (name, value) in &inputs {
            binding.bind_input(name, value).map_err(&bind)?;
        }
        binding
            .bind_input(&self.record.labels_input, &labels_value)
            .map_err(&bind)?;
        binding
            .bind_input(&self.record.epoch_input, &epoch_value)
            .map_err(&bind)?;
        binding
            .bind_output_to_device(FUSED_GRADIENTS, &self.fused_memory)
            .map_err(&bind)?;
        let mut host_outputs = vec![
            self.record.loss_output.as_str(),
            self.record.logits_output.as_str(),
        ];
        host_outputs.extend(
            self.slots
                .iter()
                .filter(|slot| Self::is_statistic(slot.state.kind))
                .map(|slot| slot.state.next.as_str()),
        );
        for name in &host_outputs {
            binding
                .bind_output_to_device(*name, &self.host_memory)
                .map_err(&bind)?;
        }
        let mut outputs = self
            .gradient_session
            .run_binding(&self.binding)
            .map_err(runtime_error("gradient step"))?;
        let read = |name: &str| -> Result<Vec<f32>> {
            Ok(outputs[name]
                .try_extract_tensor::<f32>()
                .map_err(runtime_error(name))?
                .1
                .to_vec())
        };
        let batch_loss = read(&self.record.loss_output)?[0];
        extras[0] = denominator;
        extras[1] = batch_loss * denominator;
        let logits = read(&self.record.logits_output)?;
        let start = 2 + first * self.record.config.class_counts.len();
        extras[start..start + logits.len()].copy_from_slice(&logits);
        {
            let mut values = self.values.borrow_mut();
            for (slot, value) in self.slots.iter().zip(values.iter_mut()) {
                if Self::is_statistic(slot.state.kind) {
                    *value = read(&slot.state.next)?;
                }
            }
        }
        let fused = outputs
            .remove(FUSED_GRADIENTS)
            .ok_or_else(|| Error::invalid("the gradient graph did not return its gradients"))?;
        fused
            .downcast::<TensorValueType<f32>>()
            .map_err(runtime_error(FUSED_GRADIENTS))
    }

    /// Sums the fused gradients and `extras` over the ranks: returns the
    /// summed gradients as the apply graph's input.
    fn sum_over_ranks(
        &self,
        fused: Option<Tensor<f32>>,
        extras: &mut [f32],
    ) -> Result<Tensor<f32>> {
        let len = self.split.gradient_len();
        match &self.summation {
            Summation::Mpi => {
                let mut buffer = vec![0.0f32; len + extras.len()];
                if let Some(fused) = &fused {
                    let (_, values) = fused
                        .try_extract_tensor::<f32>()
                        .map_err(runtime_error(FUSED_GRADIENTS))?;
                    buffer[..len].copy_from_slice(values);
                }
                buffer[len..].copy_from_slice(extras);
                self.world.sum_in_place(&mut buffer)?;
                extras.copy_from_slice(&buffer[len..]);
                buffer.truncate(len);
                Tensor::from_array((vec![len as i64], buffer))
                    .map_err(runtime_error(FUSED_GRADIENTS))
            }
            #[cfg(all(feature = "mpi", feature = "cuda"))]
            Summation::Nccl(nccl) => {
                let mut fused = match fused {
                    Some(fused) => fused,
                    None => {
                        // No examples here: a zero buffer on the GPU.
                        let allocator = ort::memory::Allocator::new(
                            &self.gradient_session,
                            self.fused_memory.clone(),
                        )
                        .map_err(runtime_error("the GPU's allocator"))?;
                        let mut zeros = Tensor::<f32>::new(&allocator, [len])
                            .map_err(runtime_error(FUSED_GRADIENTS))?;
                        // SAFETY: `zeros` holds `len` float32 values on this rank's GPU.
                        unsafe { nccl.zero(zeros.data_ptr_mut(), len)? };
                        zeros
                    }
                };
                // SAFETY: the gradient graph's output holds `len` float32
                // values in this rank's GPU memory (bound there), and nothing
                // else reads or writes it until the sum returns.
                unsafe { nccl.sum_in_place(fused.data_ptr_mut(), len)? };
                self.world.sum_in_place(extras)?;
                Ok(fused)
            }
        }
    }

    /// Runs the apply graph on the summed gradients.
    fn apply(&mut self, summed: &Tensor<f32>, denominator: f32, lr: f32) -> Result<()> {
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = vec![
            (LR_INPUT.to_string(), scalar_tensor(LR_INPUT, lr)?.into()),
            (
                DENOMINATOR_SUM.to_string(),
                scalar_tensor(DENOMINATOR_SUM, denominator)?.into(),
            ),
            (FUSED_GRADIENTS.to_string(), summed.into()),
        ];
        for (name, value) in self.state_values(&self.apply_reads)? {
            inputs.push((name, value.into()));
        }
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
            self.world
                .require_identical(self.checksum(true), "at the start")?;
            self.compared_start = true;
        }
        let n = batch.labels.len();
        let range = slice_of(n, self.world.rank(), self.world.size());
        let mut extras = vec![0.0f32; 2 + n * self.classes()];
        let fused = if range.is_empty() {
            None
        } else {
            let first = range.start;
            let slice = batch.slice(range);
            let denominator = loss::denominator(&self.record.config, &slice.labels, epoch);
            Some(self.local_gradients(&slice, first, epoch, denominator as f32, &mut extras)?)
        };
        let summed = self.sum_over_ranks(fused, &mut extras)?;
        let denominator = extras[0];
        let loss = extras[1] / denominator;
        self.apply(&summed, denominator, lr)?;
        let logits = extras.split_off(2);
        // Set on every rank alike, even one whose slice was empty: averaging
        // is collective, so the ranks must agree on when it is due.
        self.statistics_apart.set(self.world.size() > 1);
        self.predictor.invalidate();
        self.steps += 1;
        self.world.check_step(self.steps, || self.checksum(false))?;
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
            "onnxruntime {} on {}, data-parallel over {} rank{} (one {} allreduce of {} gradient values per step)",
            crate::runtime::ORT_VERSION,
            self.device,
            self.world.size(),
            if self.world.size() == 1 { "" } else { "s" },
            self.summation.describe(),
            self.split.gradient_len()
        )
    }
}
