//! Training with ONNX Runtime: the compiled training-step graph runs in one
//! session through an IoBinding; every state tensor's `S.next` output stays in the
//! execution provider's memory and becomes the `S` input of the next step as the
//! same runtime value, without a copy through host arrays.

use crate::backend::trainer::{Batch, Device, StepOutput, Trainer};
use crate::compile::{inference_model, TrainStep};
use crate::error::{Error, Result};
use crate::ldam::contract::{self, PatchRecord, LR_INPUT};
use crate::onnx::io::LoadedModel;
use crate::onnx::tensor::{f32_values, FLOAT};
use crate::onnx::types::Dim;
use crate::onnx::{ModelProto, TensorProto};
use crate::runtime::{ModelSource, Provider, SessionOptions};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session, SessionInputValue};
use ort::value::{Tensor, TensorValueType};
use prost::bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) fn runtime_error(context: &str) -> impl Fn(ort::Error) -> Error + '_ {
    move |e| Error::Runtime {
        reason: format!("{context}: {e}"),
    }
}

/// Builds a session for `model` on `device`, one thread per core.
pub fn session(model: &ModelProto, device: Device) -> Result<Session> {
    crate::runtime::session(ModelSource::Model(model), &session_options(device))
}

/// The options of every trainer and classifier session on `device`: one
/// thread per core.
fn session_options(device: Device) -> SessionOptions {
    let provider = match device {
        Device::Cpu => Provider::Cpu,
        Device::Cuda(index) => Provider::Cuda(index),
    };
    SessionOptions {
        provider,
        intra_threads: Some(std::thread::available_parallelism().map_or(1, |n| n.get())),
        inline_limit: None,
    }
}

pub struct OrtTrainer {
    step_model: ModelProto,
    session: Session,
    /// Inputs and outputs of the step, bound once per step: the state tensors stay
    /// where the execution provider computed them (device memory on CUDA) from
    /// one step to the next; only the batch goes in and the loss and logits come
    /// out through host memory.
    binding: IoBinding,
    /// Where state outputs are allocated: the execution provider's own memory.
    device_memory: MemoryInfo<'static>,
    /// Where the loss and logits are allocated: host memory, read every step.
    host_memory: MemoryInfo<'static>,
    device: Device,
    data_input: String,
    /// Its element type: float32, or int64 for token ids.
    data_elem: i32,
    /// The patched model's contract: labels, epoch, loss and logits names.
    record: PatchRecord,
    /// (S, S.next, current value), in the step's state order. Shared: the
    /// host tensors [`Trainer::state`] returns read the same memory.
    state: Vec<(String, String, Arc<Tensor<f32>>)>,
    /// Dims of each state tensor, for reading values back.
    dims: HashMap<String, Vec<i64>>,
    predictor: Predictor,
}

/// Memory of `device`'s execution provider.
pub(crate) fn memory_of(device: Device) -> Result<MemoryInfo<'static>> {
    let (allocation_device, id) = match device {
        Device::Cpu => (AllocationDevice::CPU, 0),
        Device::Cuda(index) => (AllocationDevice::CUDA, index as i32),
    };
    MemoryInfo::new(
        allocation_device,
        id,
        AllocatorType::Device,
        MemoryType::Default,
    )
    .map_err(runtime_error("memory info"))
}

impl OrtTrainer {
    pub fn new(step: &TrainStep, device: Device) -> Result<Self> {
        let record = &step.record;
        let data_input = step.data_input()?;
        // The session first: it loads ONNX Runtime, which creating values needs.
        let session = session(&step.model, device)?;
        let mut state = Vec::new();
        let mut dims = HashMap::new();
        let initial = step.initial_values();
        for s in &step.state {
            let tensor = initial.get(&s.name).ok_or_else(|| {
                Error::invalid(format!("state tensor '{}' has no initial value", s.name))
            })?;
            dims.insert(s.name.clone(), tensor.dims.clone());
            state.push((s.name.clone(), s.next.clone(), Arc::new(to_value(tensor)?)));
        }
        let binding = session.create_binding().map_err(runtime_error(
            "binding the training step's inputs and outputs",
        ))?;
        Ok(OrtTrainer {
            session,
            binding,
            device_memory: memory_of(device)?,
            host_memory: memory_of(Device::Cpu)?,
            step_model: step.model.clone(),
            device,
            data_elem: contract::input_elem_type(&step.model, &data_input),
            data_input,
            record: record.clone(),
            state,
            dims,
            predictor: Predictor::new(&record.logits_output, device),
        })
    }
}

/// A state tensor as a host value; binding it copies it to the device once.
fn to_value(tensor: &TensorProto) -> Result<Tensor<f32>> {
    if tensor.data_type() != FLOAT {
        return Err(Error::invalid(format!(
            "state tensor '{}' is not float32",
            tensor.name()
        )));
    }
    let values = f32_values(tensor).ok_or_else(|| {
        Error::invalid(format!(
            "state tensor '{}' has no inline data",
            tensor.name()
        ))
    })?;
    Tensor::from_array((tensor.dims.clone(), values)).map_err(runtime_error(tensor.name()))
}

/// The batch as the data input's element type: float32, or int64 for token
/// ids (which batches hold as exact floats).
fn batch_tensor(batch: &Batch, elem: i32) -> Result<ort::value::DynValue> {
    let context = runtime_error("input batch");
    if elem == crate::onnx::tensor::INT64 {
        let ids: Vec<i64> = batch.data.iter().map(|&v| v as i64).collect();
        return Ok(Tensor::from_array((batch.shape.clone(), ids))
            .map_err(context)?
            .into_dyn());
    }
    Ok(
        Tensor::from_array((batch.shape.clone(), batch.data.clone()))
            .map_err(context)?
            .into_dyn(),
    )
}

fn labels_tensor(batch: &Batch) -> Result<Tensor<i64>> {
    Tensor::from_array((vec![batch.labels.len() as i64], batch.labels.clone()))
        .map_err(runtime_error("labels"))
}

pub(crate) fn scalar_tensor<
    T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static,
>(
    name: &str,
    value: T,
) -> Result<Tensor<T>> {
    Tensor::from_array((Vec::<i64>::new(), vec![value])).map_err(runtime_error(name))
}

/// Any ONNX classifier in an ONNX Runtime session: data in, logits out. A model
/// written by `patch` is fed the true labels and epoch 0 for its extra inputs.
/// The trainer's evaluation uses one too, on its recovered inference model.
pub struct Classifier {
    session: Session,
    pub input: String,
    pub input_dims: Vec<Dim>,
    /// The data input's element type: float32, or int64 for token ids.
    input_elem: i32,
    pub output: String,
    pub classes: usize,
    /// (labels, epoch) inputs of a patched model.
    labels_input: Option<(String, String)>,
}

impl Classifier {
    pub fn new(model: &ModelProto, logits: Option<&str>, device: Device) -> Result<Classifier> {
        Classifier::with_session(model, logits, || session(model, device))
    }

    /// The classifier of a model file, which ONNX Runtime reads itself, external
    /// data included: `loaded` needs no values read ([`crate::onnx::io::load`]),
    /// so the weights are held once, by the session.
    pub fn from_file(
        loaded: &LoadedModel,
        logits: Option<&str>,
        device: Device,
    ) -> Result<Classifier> {
        Classifier::with_session(&loaded.model, logits, || {
            crate::runtime::session(ModelSource::File(&loaded.path), &session_options(device))
        })
    }

    /// The classifier of `model`, whose session `session` builds.
    fn with_session(
        model: &ModelProto,
        logits: Option<&str>,
        session: impl FnOnce() -> Result<Session>,
    ) -> Result<Classifier> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| Error::invalid("the model has no graph"))?;
        let record = PatchRecord::read(model)?;
        let labels_input = record
            .as_ref()
            .map(|r| (r.labels_input.clone(), r.epoch_input.clone()));
        let (output, classes) = match &record {
            Some(r) if logits.is_none() => (r.logits_output.clone(), r.config.class_counts.len()),
            _ => {
                let head = crate::patch::head::detect(graph, logits)?;
                // A Softmax of the logits has the same arg max.
                let output = if head.logits_is_output {
                    head.logits
                } else {
                    head.output
                };
                (output, head.classes)
            }
        };
        let skip: Vec<&str> = labels_input
            .iter()
            .flat_map(|(l, e)| [l.as_str(), e.as_str()])
            .collect();
        let (input, input_dims) = contract::data_input(model, &skip)?;
        Ok(Classifier {
            session: session()?,
            input_elem: contract::input_elem_type(model, &input),
            input,
            input_dims,
            output,
            classes,
            labels_input,
        })
    }

    /// Logits (or probabilities) of `batch`, row-major `[N, C]`.
    pub fn predict(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = vec![(
            self.input.clone(),
            batch_tensor(batch, self.input_elem)?.into(),
        )];
        if let Some((labels, epoch)) = &self.labels_input {
            inputs.push((labels.clone(), labels_tensor(batch)?.into()));
            inputs.push((epoch.clone(), scalar_tensor("epoch", 0i64)?.into()));
        }
        let outputs = self
            .session
            .run(inputs)
            .map_err(runtime_error("evaluation"))?;
        Ok(outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(runtime_error("logits"))?
            .1
            .to_vec())
    }
}

/// The state values as host tensors, by name: in host memory they share the
/// runtime's values (a model's state is several times its weights, and
/// checkpoints, evaluation and deployment read it), from device memory they
/// are copied.
fn host_state(
    state: &[(String, String, Arc<Tensor<f32>>)],
    dims: &HashMap<String, Vec<i64>>,
) -> Result<HashMap<String, TensorProto>> {
    state
        .iter()
        .map(|(name, _, value)| {
            let host = if value.memory_info().is_cpu_accessible() {
                value.clone()
            } else {
                Arc::new(
                    value
                        .to(AllocationDevice::CPU, 0)
                        .map_err(runtime_error(name))?,
                )
            };
            let tensor = TensorProto {
                name: Some(name.clone()),
                dims: dims[name].clone(),
                data_type: Some(FLOAT),
                raw_data: Some(le_bytes(host, name)?),
                ..Default::default()
            };
            Ok((name.clone(), tensor))
        })
        .collect()
}

/// A host tensor's values as little-endian bytes (`raw_data`): its own memory
/// on a little-endian machine, kept alive by the bytes; a copy elsewhere.
fn le_bytes(tensor: Arc<Tensor<f32>>, name: &str) -> Result<Bytes> {
    let (_, values) = tensor
        .try_extract_tensor::<f32>()
        .map_err(runtime_error(name))?;
    if cfg!(target_endian = "big") {
        return Ok(Bytes::from(
            values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        ));
    }
    Ok(Bytes::from_owner(HostValues(tensor)))
}

/// A host tensor whose f32 values [`le_bytes`] has extracted once already.
struct HostValues(Arc<Tensor<f32>>);

impl AsRef<[u8]> for HostValues {
    fn as_ref(&self) -> &[u8] {
        let (_, values) = self
            .0
            .try_extract_tensor::<f32>()
            .expect("le_bytes extracted this host tensor's f32 values before wrapping it");
        // SAFETY: the f32 values are initialised memory without padding, viewed
        // as their `size_of_val` bytes for as long as `self` borrows the tensor.
        unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        }
    }
}

/// A trainer's evaluation classifier: built from its current inference model on
/// the first prediction after the state changed, then reused until it changes
/// again.
pub struct Predictor {
    classifier: Option<Classifier>,
    logits: String,
    device: Device,
}

impl Predictor {
    pub fn new(logits: &str, device: Device) -> Predictor {
        Predictor {
            classifier: None,
            logits: logits.to_string(),
            device,
        }
    }

    /// The state changed: the next prediction builds a new classifier.
    pub fn invalidate(&mut self) {
        self.classifier = None;
    }

    /// Whether a classifier of the current state is built.
    pub fn is_current(&self) -> bool {
        self.classifier.is_some()
    }

    /// Builds the classifier of the current inference model `model`.
    pub fn build(&mut self, model: &ModelProto) -> Result<()> {
        self.classifier = Some(Classifier::new(model, Some(&self.logits), self.device)?);
        Ok(())
    }

    /// Logits of `batch` from the classifier [`Predictor::build`] made.
    pub fn predict(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        self.classifier
            .as_mut()
            .ok_or_else(|| Error::invalid("predicting before the classifier was built"))?
            .predict(batch)
    }
}

impl Trainer for OrtTrainer {
    fn step(&mut self, batch: &Batch, epoch: i64, lr: f32) -> Result<StepOutput> {
        let labels = labels_tensor(batch)?;
        let epoch = scalar_tensor("epoch", epoch)?;
        let lr = scalar_tensor("lr", lr)?;
        let bind = runtime_error("binding the step's inputs and outputs");
        let binding = &mut self.binding;
        binding
            .bind_input(&self.data_input, &batch_tensor(batch, self.data_elem)?)
            .map_err(&bind)?;
        binding
            .bind_input(&self.record.labels_input, &labels)
            .map_err(&bind)?;
        binding
            .bind_input(&self.record.epoch_input, &epoch)
            .map_err(&bind)?;
        binding.bind_input(LR_INPUT, &lr).map_err(&bind)?;
        for name in [&self.record.loss_output, &self.record.logits_output] {
            binding
                .bind_output_to_device(name, &self.host_memory)
                .map_err(&bind)?;
        }
        for (name, next, value) in &self.state {
            binding.bind_input(name, value.as_ref()).map_err(&bind)?;
            // Bound afresh every step so that ONNX Runtime allocates a new tensor
            // instead of writing into last step's output, which is this step's input.
            binding
                .bind_output_to_device(next, &self.device_memory)
                .map_err(&bind)?;
        }
        let mut outputs = self
            .session
            .run_binding(&self.binding)
            .map_err(runtime_error("training step"))?;
        let loss = outputs[self.record.loss_output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(runtime_error("loss"))?
            .1[0];
        let logits = outputs[self.record.logits_output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(runtime_error("logits"))?
            .1
            .to_vec();
        let mut next_values = Vec::with_capacity(self.state.len());
        for (_, next, _) in &self.state {
            let value = outputs
                .remove(next.as_str())
                .ok_or_else(|| Error::invalid(format!("the step did not return '{next}'")))?;
            next_values.push(
                value
                    .downcast::<TensorValueType<f32>>()
                    .map_err(runtime_error(next))?,
            );
        }
        drop(outputs);
        // The binding holds its inputs until they are bound again: released
        // now, this step's state is freed as the next replaces it.
        self.binding.clear_inputs();
        for ((_, _, value), next) in self.state.iter_mut().zip(next_values) {
            *value = Arc::new(next);
        }
        self.predictor.invalidate();
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
        host_state(&self.state, &self.dims)
    }

    fn set_state(&mut self, state: &HashMap<String, TensorProto>) -> Result<()> {
        for (name, _, value) in &mut self.state {
            let tensor = state.get(name).ok_or_else(|| {
                Error::config(format!("the checkpoint lacks state tensor '{name}'"))
            })?;
            if tensor.dims != self.dims[name.as_str()] {
                return Err(Error::config(format!(
                    "checkpoint tensor '{name}' has shape {:?}, the model expects {:?}",
                    tensor.dims,
                    self.dims[name.as_str()]
                )));
            }
            *value = Arc::new(to_value(tensor)?);
        }
        self.predictor.invalidate();
        Ok(())
    }

    fn inference_model(&self) -> Result<ModelProto> {
        inference_model(&self.step_model, &self.state()?)
    }

    fn describe(&self) -> String {
        format!(
            "onnxruntime {} on {}",
            crate::runtime::ORT_VERSION,
            self.device
        )
    }
}
