//! Data-parallel training with libtorch, with the semantics of the ONNX
//! Runtime one ([`crate::backend::distributed`]): every rank runs the forward
//! pass and autograd on its contiguous slice of the global batch, scales its
//! gradients by the slice's loss denominator, and the ranks sum one fused f32
//! buffer `[gradients x D | D | loss x D | logits]` through the world (MPI,
//! through host memory). Every rank divides by the summed denominator and
//! applies the same SGD update, so the step is one process's on the whole
//! batch and the ranks keep identical parameters and momentum buffers.
//! BatchNorm running statistics are each rank's own until something reads
//! them (evaluation, the state), when the ranks average them.

use crate::backend::trainer::StepOutput;
use crate::distributed::{checksum, World};
use crate::error::{Error, Result};
use crate::ops::torch_tensor as convert;
use std::cell::Cell;
use std::sync::Arc;
use tch::Tensor;

fn libtorch(context: &str) -> impl Fn(tch::TchError) -> Error + '_ {
    move |e| Error::torch(format!("{context}: {e}"))
}

/// One rank's share of a step, before the sum.
pub(super) struct Local {
    /// The slice's loss, logits and the gradient of each parameter (undefined
    /// for one the loss does not reach).
    pub output: StepOutput,
    pub gradients: Vec<Tensor>,
    /// The slice's loss denominator.
    pub denominator: f32,
    /// Index of the slice's first example in the batch.
    pub first: usize,
}

pub(super) struct Parallel {
    world: Arc<World>,
    /// Whether the ranks' running statistics have moved apart since the last average.
    statistics_apart: Cell<bool>,
    /// Whether the ranks have compared their starting state.
    compared_start: bool,
    steps: u64,
}

impl Parallel {
    pub(super) fn new(world: Arc<World>) -> Self {
        Parallel {
            world,
            statistics_apart: Cell::new(false),
            compared_start: false,
            steps: 0,
        }
    }

    pub(super) fn world(&self) -> &Arc<World> {
        &self.world
    }

    /// After the state was replaced (a resumed checkpoint): every rank holds
    /// the file's statistics, and the ranks compare the state again.
    pub(super) fn restored(&mut self) {
        self.statistics_apart.set(false);
        self.compared_start = false;
    }

    pub(super) fn describe(&self, gradient_len: usize) -> String {
        let size = self.world.size();
        format!(
            ", data-parallel over {size} rank{} (one MPI allreduce of {gradient_len} gradient values per step)",
            if size == 1 { "" } else { "s" }
        )
    }

    /// Averages the ranks' running `statistics` in place if they have moved
    /// apart (collective: every rank reads its state at the same point).
    pub(super) fn average(&self, statistics: &[&Tensor]) -> Result<()> {
        if !self.statistics_apart.get() {
            return Ok(());
        }
        let mut buffer = Vec::new();
        for t in statistics {
            buffer.extend(convert::f32_vec(t).map_err(libtorch("running statistics"))?);
        }
        self.world.average_in_place(&mut buffer)?;
        let mut at = 0;
        tch::no_grad(|| {
            for t in statistics {
                let len = t.numel();
                let mean = Tensor::from_slice(&buffer[at..at + len])
                    .f_reshape(t.size())
                    .and_then(|m| m.f_to_device(t.device()))
                    .and_then(|m| m.f_to_kind(t.kind()))
                    .map_err(libtorch("running statistics"))?;
                // A second handle to the statistic's storage: the update is
                // in place, where the program reads it.
                t.shallow_clone()
                    .f_copy_(&mean)
                    .map_err(libtorch("running statistics"))?;
                at += len;
            }
            Ok::<(), Error>(())
        })?;
        self.statistics_apart.set(false);
        Ok(())
    }

    /// Whether the ranks have compared their state since the start (or the
    /// last restore).
    pub(super) fn compared_start(&self) -> bool {
        self.compared_start
    }

    /// The ranks must start from the same state, of checksum `state`.
    pub(super) fn compare_start(&mut self, state: u64) -> Result<()> {
        self.world.require_identical(state, "at the start")?;
        self.compared_start = true;
        Ok(())
    }

    /// Sums this rank's share (none for an empty slice) with the others' over
    /// a batch of `n` examples and `classes` classes: the global loss and
    /// logits, and the global gradient of each of `parameters`, on their
    /// devices.
    pub(super) fn sum(
        &self,
        local: Option<Local>,
        parameters: &[&Tensor],
        n: usize,
        classes: usize,
    ) -> Result<(StepOutput, Vec<Tensor>)> {
        let len: usize = parameters.iter().map(|p| p.numel()).sum();
        let mut buffer = vec![0.0f32; len + 2 + n * classes];
        if let Some(local) = local {
            let d = local.denominator;
            let mut at = 0;
            for (parameter, gradient) in parameters.iter().zip(&local.gradients) {
                let count = parameter.numel();
                // A parameter the loss does not reach adds nothing.
                if gradient.defined() {
                    let values = convert::f32_vec(gradient).map_err(libtorch("a gradient"))?;
                    for (out, value) in buffer[at..at + count].iter_mut().zip(values) {
                        *out = value * d;
                    }
                }
                at += count;
            }
            buffer[len] = d;
            buffer[len + 1] = local.output.loss * d;
            let logits = &local.output.logits;
            let start = len + 2 + local.first * classes;
            buffer[start..start + logits.len()].copy_from_slice(logits);
        }
        self.world.sum_in_place(&mut buffer)?;
        let denominator = buffer[len];
        let mut gradients = Vec::with_capacity(parameters.len());
        let mut at = 0;
        for parameter in parameters {
            let count = parameter.numel();
            let mean: Vec<f32> = buffer[at..at + count]
                .iter()
                .map(|v| v / denominator)
                .collect();
            gradients.push(
                Tensor::from_slice(&mean)
                    .f_reshape(parameter.size())
                    .and_then(|g| g.f_to_device(parameter.device()))
                    .and_then(|g| g.f_to_kind(parameter.kind()))
                    .map_err(libtorch("a summed gradient"))?,
            );
            at += count;
        }
        let output = StepOutput {
            loss: buffer[len + 1] / denominator,
            logits: buffer.split_off(len + 2),
        };
        // Every rank alike, even one whose slice was empty: averaging is
        // collective, so the ranks must agree on when it is due.
        self.statistics_apart.set(self.world.size() > 1);
        Ok((output, gradients))
    }

    /// After the update: the rank check of this step in the test mode
    /// (`state`: the checksum of parameters and momentum buffers, computed
    /// only in that mode).
    pub(super) fn finish_step(&mut self, state: u64) -> Result<()> {
        self.steps += 1;
        self.world.check_step(self.steps, || state)
    }
}

/// FNV checksum of `tensors`' float32 values (see [`checksum`]).
pub(super) fn tensors_checksum(tensors: &[&Tensor]) -> Result<u64> {
    let values = tensors
        .iter()
        .map(|t| convert::f32_vec(&t.detach()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(libtorch("the state's checksum"))?;
    Ok(checksum(values.iter().map(Vec::as_slice)))
}
