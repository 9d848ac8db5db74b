//! Training with libtorch (tch): the patched graph (forward and loss subgraph)
//! runs in an ONNX interpreter over libtorch tensors, libtorch's autograd supplies
//! the gradients, and the update is torch.optim.SGD's.
//!
//! The state (parameters, `NAME.momentum`, BatchNorm running statistics) is named
//! by [`crate::compile::state::plan`], as the compiled ONNX step names it, so
//! checkpoints move between the two runtimes; the ONNX autodiff is never run, so
//! a graph trains here whenever libtorch runs its ops. The deployable model comes
//! from [`crate::compile::inference::inference_model_of_patched`].

mod parallel;
mod program;
mod sam;
mod sgd;

use crate::ops::torch_tensor as convert;

use crate::backend::trainer::{Batch, Device, StepOutput, Trainer};
use crate::compile::inference::inference_model_of_patched;
use crate::compile::state;
use crate::compile::{CompileOptions, StateKind};
use crate::error::{Error, Result};
use crate::ldam::contract::{self, PatchRecord};
use crate::ldam::LossConfig;
use crate::onnx::{default_opset, ModelProto, TensorProto};
use program::{Plan, Program};
use std::collections::{HashMap, HashSet};
use tch::{Kind, Tensor};

/// The libtorch release `tch` 0.26.0 binds (its build checks it).
pub const LIBTORCH_VERSION: &str = "2.13.0";

/// A trainable parameter, its slot in the graph and its momentum buffer.
struct Parameter {
    name: String,
    slot: usize,
    value: Tensor,
    momentum_name: String,
    momentum: Tensor,
}

pub struct TorchTrainer {
    program: Program,
    train_plan: Plan,
    eval_plan: Plan,
    /// The patched model and its planned state, for the deployable model.
    patched: ModelProto,
    plan: Vec<state::PlannedState>,
    device: Device,
    torch_device: tch::Device,
    data_slot: usize,
    /// The data input's element type: batches (floats) are cast to it, so an
    /// int64 token input takes the ids exactly.
    data_kind: Kind,
    labels_slot: usize,
    epoch_slot: usize,
    parameters: Vec<Parameter>,
    /// BatchNorm running statistics (updated in place by libtorch): name, slot, value.
    statistics: Vec<(String, usize, Tensor)>,
    sgd: sgd::Sgd,
    /// Sharpness-aware minimisation's radius, when the step uses it.
    sam: Option<f64>,
    /// The patched loss (its denominator scales a data-parallel rank's gradients).
    loss: LossConfig,
    /// The ranks training together, in a data-parallel run.
    parallel: Option<parallel::Parallel>,
}

/// The libtorch device for `device`, or an error saying why it is not usable.
pub fn torch_device(device: Device) -> Result<tch::Device> {
    match device {
        Device::Cpu => Ok(tch::Device::Cpu),
        Device::Cuda(index) => {
            let count = if tch::Cuda::is_available() {
                tch::Cuda::device_count()
            } else {
                0
            };
            if (index as i64) < count {
                return Ok(tch::Device::Cuda(index));
            }
            let why = if cfg!(feature = "cuda") {
                "no CUDA GPU is visible, or the CUDA driver or libtorch's CUDA libraries could not be loaded"
            } else {
                "this build links libtorch without its CUDA library; rebuild with `--features torch,cuda` \
                 against the CUDA torch wheel with its dependencies (see .ci/deps-torch.sh)"
            };
            Err(Error::setting(
                "device",
                format!("cuda:{index}: libtorch sees {count} CUDA device(s): {why}"),
            ))
        }
    }
}

fn libtorch(context: &str) -> impl Fn(tch::TchError) -> Error + '_ {
    move |e| Error::torch(format!("{context}: {e}"))
}

impl TorchTrainer {
    /// Prepares training of a patched model. Fails before any tensor is computed
    /// when the graph holds an op the interpreter does not run (naming op and
    /// node), when the device is not available, or when the model is not patched.
    pub fn new(patched: &ModelProto, options: &CompileOptions, device: Device) -> Result<Self> {
        let graph = patched
            .graph
            .as_ref()
            .ok_or_else(|| Error::invalid("the model has no graph"))?;
        let opset = default_opset(patched)
            .ok_or_else(|| Error::compile("the model imports no default-domain opset"))?;
        Program::check_ops(graph, opset)?;
        let torch_device = torch_device(device)?;
        let plan = state::plan(patched, options)?;
        let record = &PatchRecord::read(patched)?
            .ok_or_else(|| Error::compile("the model is not patched (no ldam_onnx metadata)"))?;
        // Trained state is bound on every run; every other initializer is a
        // constant the program makes once.
        let state_names: HashSet<&str> = plan.iter().map(|s| s.name.as_str()).collect();
        let program = Program::new(graph, opset, torch_device, &state_names)?;

        let initializers: HashMap<&str, &TensorProto> =
            graph.initializer.iter().map(|t| (t.name(), t)).collect();
        let (data_input, _) =
            contract::data_input(patched, &[&record.labels_input, &record.epoch_input])?;
        let data_input = data_input.as_str();

        // Initial state: the model's initializers; momentum buffers start at zero.
        let load = |name: &str| -> Result<Tensor> {
            let proto = initializers.get(name).ok_or_else(|| {
                Error::compile(format!(
                    "the state tensor '{name}' is not an initializer: a trainer keeps it as state, so it must be one"
                ))
            })?;
            convert::from_proto(proto, torch_device)
        };
        let mut parameters = Vec::new();
        let mut statistics = Vec::new();
        for state in &plan {
            match state.kind {
                StateKind::Parameter => {
                    let value = load(&state.name)?;
                    let momentum = value
                        .f_zeros_like()
                        .map_err(libtorch("a momentum buffer"))?;
                    parameters.push(Parameter {
                        slot: program.slot(&state.name)?,
                        value: value.set_requires_grad(true),
                        momentum,
                        momentum_name: contract::momentum_name(&state.name),
                        name: state.name.clone(),
                    });
                }
                StateKind::RunningMean | StateKind::RunningVar => statistics.push((
                    state.name.clone(),
                    program.slot(&state.name)?,
                    load(&state.name)?,
                )),
                StateKind::Momentum => {}
            }
        }
        Ok(TorchTrainer {
            train_plan: program.plan(&[&record.loss_output, &record.logits_output])?,
            eval_plan: program.plan(&[&record.logits_output])?,
            data_slot: program.slot(data_input)?,
            data_kind: convert::kind_of(contract::input_elem_type(patched, data_input))
                .unwrap_or(Kind::Float),
            labels_slot: program.slot(&record.labels_input)?,
            epoch_slot: program.slot(&record.epoch_input)?,
            program,
            sgd: sgd::Sgd::new(options.momentum, options.weight_decay),
            sam: options.sam,
            loss: record.config.clone(),
            parallel: None,
            patched: patched.clone(),
            plan,
            device,
            torch_device,
            parameters,
            statistics,
        })
    }

    /// The values every run binds: parameters, running statistics.
    fn bound(&self) -> Vec<(usize, &Tensor)> {
        self.parameters
            .iter()
            .map(|p| (p.slot, &p.value))
            .chain(self.statistics.iter().map(|(_, slot, t)| (*slot, t)))
            .collect()
    }

    fn batch_tensor(&self, batch: &Batch) -> Result<Tensor> {
        let expected: i64 = batch.shape.iter().product();
        if batch.shape.iter().any(|&d| d < 0) || expected as usize != batch.data.len() {
            return Err(Error::config(format!(
                "batch of shape {:?} holds {} values",
                batch.shape,
                batch.data.len()
            )));
        }
        Tensor::from_slice(&batch.data)
            .f_reshape(batch.shape.as_slice())
            .and_then(|x| x.f_to_kind(self.data_kind))
            .and_then(|x| x.f_to_device(self.torch_device))
            .map_err(libtorch("input batch"))
    }

    /// SAM's second pass: the gradient at `w + e`, BatchNorm on its batch
    /// statistics with the running statistics left as the first pass set them
    /// (the second pass updates copies), Dropout drawing new masks; the weights
    /// are restored before returning.
    fn sam_gradients(
        &mut self,
        x: &Tensor,
        labels: &Tensor,
        epoch: &Tensor,
        gradients: &[Tensor],
        rho: f64,
    ) -> Result<Vec<Tensor>> {
        let mut values: Vec<&mut Tensor> =
            self.parameters.iter_mut().map(|p| &mut p.value).collect();
        let saved =
            sam::perturb(&mut values, gradients, rho).map_err(libtorch("SAM perturbation"))?;
        drop(values);
        let statistics = tch::no_grad(|| {
            self.statistics
                .iter()
                .map(|(_, slot, t)| t.f_detach_copy().map(|copy| (*slot, copy)))
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .map_err(libtorch("SAM running statistics"))?;
        let mut bound: Vec<(usize, &Tensor)> = self
            .parameters
            .iter()
            .map(|p| (p.slot, &p.value))
            .chain(statistics.iter().map(|(slot, t)| (*slot, t)))
            .collect();
        bound.extend([
            (self.data_slot, x),
            (self.labels_slot, labels),
            (self.epoch_slot, epoch),
        ]);
        let outputs = self.program.run(&self.train_plan, &bound, true)?;
        drop(bound);
        let loss = outputs
            .first()
            .ok_or_else(|| Error::invalid("the training plan returns the loss"))?;
        let values: Vec<&Tensor> = self.parameters.iter().map(|p| &p.value).collect();
        let second = Tensor::f_run_backward(&[loss], &values, false, false)
            .map_err(libtorch("SAM backward pass"))?;
        let mut values: Vec<&mut Tensor> =
            self.parameters.iter_mut().map(|p| &mut p.value).collect();
        sam::restore(&mut values, &saved).map_err(libtorch("SAM restore"))?;
        Ok(second)
    }

    /// Forward and backward pass on `batch`: the loss, the logits and every
    /// parameter's gradient (SAM's, when the step uses it; undefined for a
    /// parameter the loss does not reach).
    fn gradients(&mut self, batch: &Batch, epoch: i64) -> Result<(StepOutput, Vec<Tensor>)> {
        let x = self.batch_tensor(batch)?;
        let labels = Tensor::from_slice(&batch.labels)
            .f_to_device(self.torch_device)
            .map_err(libtorch("labels"))?;
        let epoch = Tensor::from_slice(&[epoch])
            .f_reshape([0i64; 0])
            .and_then(|e| e.f_to_device(self.torch_device))
            .map_err(libtorch("epoch"))?;
        let mut bound = self.bound();
        bound.extend([
            (self.data_slot, &x),
            (self.labels_slot, &labels),
            (self.epoch_slot, &epoch),
        ]);
        let outputs = self.program.run(&self.train_plan, &bound, true)?;
        let [loss, logits] = <[Tensor; 2]>::try_from(outputs)
            .map_err(|_| Error::invalid("the training plan returns loss and logits"))?;
        let loss_value = loss
            .f_to_kind(Kind::Float)
            .and_then(|l| l.f_double_value(&[]))
            .map_err(libtorch("loss"))? as f32;
        let logits = convert::f32_vec(&logits.detach()).map_err(libtorch("logits"))?;
        drop(bound);

        let values: Vec<&Tensor> = self.parameters.iter().map(|p| &p.value).collect();
        let mut gradients = Tensor::f_run_backward(&[&loss], &values, false, false)
            .map_err(libtorch("backward pass"))?;
        if let Some(rho) = self.sam {
            gradients = self.sam_gradients(&x, &labels, &epoch, &gradients, rho)?;
        }
        let output = StepOutput {
            loss: loss_value,
            logits,
        };
        Ok((output, gradients))
    }

    /// The SGD update of every parameter with its gradient.
    fn apply(&mut self, gradients: &[Tensor], lr: f32) -> Result<()> {
        for (parameter, gradient) in self.parameters.iter_mut().zip(gradients) {
            self.sgd
                .update(&mut parameter.value, &mut parameter.momentum, gradient, lr)
                .map_err(libtorch(&parameter.name))?;
        }
        Ok(())
    }

    /// This trainer as one rank of `world`'s data-parallel run
    /// ([`parallel`]).
    pub fn in_world(mut self, world: std::sync::Arc<crate::distributed::World>) -> Self {
        self.parallel = Some(parallel::Parallel::new(world));
        self
    }

    /// Elements of all gradients together.
    fn gradient_len(&self) -> usize {
        self.parameters.iter().map(|p| p.value.numel()).sum()
    }

    /// Checksum of the parameters and momentum buffers, and of the running
    /// statistics when `statistics`.
    fn checksum(&self, statistics: bool) -> Result<u64> {
        let mut tensors: Vec<&Tensor> = self
            .parameters
            .iter()
            .flat_map(|p| [&p.value, &p.momentum])
            .collect();
        if statistics {
            tensors.extend(self.statistics.iter().map(|(_, _, t)| t));
        }
        parallel::tensors_checksum(&tensors)
    }

    /// Averages the ranks' running statistics where they may differ.
    fn average_statistics(&self) -> Result<()> {
        match &self.parallel {
            Some(parallel) => {
                let statistics: Vec<&Tensor> = self.statistics.iter().map(|(_, _, t)| t).collect();
                parallel.average(&statistics)
            }
            None => Ok(()),
        }
    }

    /// One data-parallel step: this rank's slice through forward and
    /// backward, one sum over the ranks, the same update on every rank.
    fn parallel_step(&mut self, batch: &Batch, epoch: i64, lr: f32) -> Result<StepOutput> {
        let outside = || Error::invalid("a data-parallel step outside a world");
        let parallel = self.parallel.as_ref().ok_or_else(outside)?;
        let (world, compared) = (parallel.world().clone(), parallel.compared_start());
        if !compared {
            // Once, as the ONNX Runtime path does: the ranks average their
            // statistics (a resumed or fresh state) and compare everything.
            self.average_statistics()?;
            let start = self.checksum(true)?;
            self.parallel
                .as_mut()
                .ok_or_else(outside)?
                .compare_start(start)?;
        }
        let range = crate::distributed::slice_of(batch.labels.len(), world.rank(), world.size());
        let local = if range.is_empty() {
            None
        } else {
            let first = range.start;
            let slice = batch.slice(range);
            let denominator =
                crate::distributed::loss::denominator(&self.loss, &slice.labels, epoch) as f32;
            let (output, gradients) = self.gradients(&slice, epoch)?;
            Some(parallel::Local {
                output,
                gradients,
                denominator,
                first,
            })
        };
        let parameters: Vec<&Tensor> = self.parameters.iter().map(|p| &p.value).collect();
        let (output, gradients) = self.parallel.as_ref().ok_or_else(outside)?.sum(
            local,
            &parameters,
            batch.labels.len(),
            self.loss.class_counts.len(),
        )?;
        drop(parameters);
        self.apply(&gradients, lr)?;
        let state = if world.check_ranks() {
            self.checksum(false)?
        } else {
            0
        };
        self.parallel
            .as_mut()
            .ok_or_else(outside)?
            .finish_step(state)?;
        Ok(output)
    }

    /// Every state tensor, by name, as libtorch tensors.
    fn state_tensors(&self) -> Vec<(&str, &Tensor)> {
        self.parameters
            .iter()
            .flat_map(|p| {
                [
                    (p.name.as_str(), &p.value),
                    (p.momentum_name.as_str(), &p.momentum),
                ]
            })
            .chain(self.statistics.iter().map(|(n, _, t)| (n.as_str(), t)))
            .collect()
    }
}

impl Trainer for TorchTrainer {
    fn step(&mut self, batch: &Batch, epoch: i64, lr: f32) -> Result<StepOutput> {
        if self.parallel.is_some() {
            return self.parallel_step(batch, epoch, lr);
        }
        let (output, gradients) = self.gradients(batch, epoch)?;
        self.apply(&gradients, lr)?;
        Ok(output)
    }

    fn predict(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        self.average_statistics()?;
        let x = self.batch_tensor(batch)?;
        let mut bound = self.bound();
        bound.push((self.data_slot, &x));
        let outputs = tch::no_grad(|| self.program.run(&self.eval_plan, &bound, false))?;
        let logits = outputs
            .first()
            .ok_or_else(|| Error::invalid("the evaluation plan returns the logits"))?;
        convert::f32_vec(logits).map_err(libtorch("logits"))
    }

    fn state(&self) -> Result<HashMap<String, TensorProto>> {
        self.average_statistics()?;
        self.state_tensors()
            .into_iter()
            .map(|(name, value)| Ok((name.to_string(), convert::to_proto(name, &value.detach())?)))
            .collect()
    }

    fn set_state(&mut self, state: &HashMap<String, TensorProto>) -> Result<()> {
        // Everything is checked and converted before anything is replaced.
        let mut updates = Vec::new();
        for (name, current) in self.state_tensors() {
            let tensor = state.get(name).ok_or_else(|| {
                Error::config(format!("the checkpoint lacks state tensor '{name}'"))
            })?;
            if tensor.dims != current.size() {
                return Err(Error::config(format!(
                    "checkpoint tensor '{name}' has shape {:?}, the model expects {:?}",
                    tensor.dims,
                    current.size()
                )));
            }
            updates.push((
                current.shallow_clone(),
                convert::from_proto(tensor, self.torch_device)?,
            ));
        }
        tch::no_grad(|| {
            for (mut current, new) in updates {
                current
                    .f_copy_(&new)
                    .map_err(libtorch("restoring the state"))?;
            }
            Ok::<(), Error>(())
        })?;
        if let Some(parallel) = &mut self.parallel {
            parallel.restored();
        }
        Ok(())
    }

    fn inference_model(&self) -> Result<ModelProto> {
        inference_model_of_patched(&self.patched, &self.plan, &self.state()?)
    }

    fn describe(&self) -> String {
        let parallel = self
            .parallel
            .as_ref()
            .map(|p| p.describe(self.gradient_len()))
            .unwrap_or_default();
        format!(
            "libtorch {LIBTORCH_VERSION} (tch, ONNX interpreter) on {}{parallel}",
            self.device
        )
    }
}
