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

use super::{libtorch, TorchTrainer};
use crate::backend::trainer::{Batch, StepOutput};
use crate::distributed::{checksum, loss, slice_of, World};
use crate::error::Result;
use crate::ops::torch_tensor as convert;
use std::cell::Cell;
use std::sync::Arc;
use tch::Tensor;

pub(super) struct Parallel {
    world: Arc<World>,
    /// Whether the ranks' running statistics have moved apart since the last average.
    statistics_apart: Cell<bool>,
    /// Whether the ranks have compared their starting state.
    compared_start: bool,
    steps: u64,
}

impl Parallel {
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
}

impl TorchTrainer {
    /// This trainer as one rank of `world`'s data-parallel run.
    pub fn in_world(mut self, world: Arc<World>) -> Self {
        self.parallel = Some(Parallel {
            world,
            statistics_apart: Cell::new(false),
            compared_start: false,
            steps: 0,
        });
        self
    }

    /// Elements of all gradients together.
    pub(super) fn gradient_len(&self) -> usize {
        self.parameters.iter().map(|p| p.value.numel()).sum()
    }

    /// FNV checksum of the parameters and momentum buffers, and of the
    /// running statistics when `statistics`.
    fn checksum(&self, statistics: bool) -> Result<u64> {
        let mut tensors: Vec<&Tensor> = self
            .parameters
            .iter()
            .flat_map(|p| [&p.value, &p.momentum])
            .collect();
        if statistics {
            tensors.extend(self.statistics.iter().map(|(_, _, t)| t));
        }
        let values = tensors
            .into_iter()
            .map(|t| convert::f32_vec(&t.detach()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(libtorch("the state's checksum"))?;
        Ok(checksum(values.iter().map(Vec::as_slice)))
    }

    /// Averages the ranks' running statistics if they have moved apart
    /// (collective: every rank reads its state at the same point).
    pub(super) fn average_statistics(&self) -> Result<()> {
        let Some(parallel) = &self.parallel else {
            return Ok(());
        };
        if !parallel.statistics_apart.get() {
            return Ok(());
        }
        let mut buffer = Vec::new();
        for (_, _, t) in &self.statistics {
            buffer.extend(convert::f32_vec(t).map_err(libtorch("running statistics"))?);
        }
        parallel.world.average_in_place(&mut buffer)?;
        let mut at = 0;
        tch::no_grad(|| {
            for (name, _, t) in &self.statistics {
                let len = t.numel();
                let mean = Tensor::from_slice(&buffer[at..at + len])
                    .f_reshape(t.size())
                    .and_then(|m| m.f_to_device(t.device()))
                    .and_then(|m| m.f_to_kind(t.kind()))
                    .map_err(libtorch(name))?;
                // A second handle to the statistic's storage: the update
                // is in place, where the program reads it.
                t.shallow_clone().f_copy_(&mean).map_err(libtorch(name))?;
                at += len;
            }
            Ok::<(), crate::error::Error>(())
        })?;
        parallel.statistics_apart.set(false);
        Ok(())
    }

    /// One data-parallel step: this rank's slice through forward and
    /// backward, one sum over the ranks, the same update everywhere.
    pub(super) fn parallel_step(
        &mut self,
        batch: &Batch,
        epoch: i64,
        lr: f32,
    ) -> Result<StepOutput> {
        let Some(parallel) = &self.parallel else {
            return Err(crate::error::Error::invalid(
                "a data-parallel step outside a world",
            ));
        };
        let world = parallel.world.clone();
        if !parallel.compared_start {
            self.average_statistics()?;
            world.require_identical(self.checksum(true)?, "at the start")?;
        }
        let n = batch.labels.len();
        let classes = self.loss.class_counts.len();
        let len = self.gradient_len();
        let range = slice_of(n, world.rank(), world.size());
        let mut buffer = vec![0.0f32; len + 2 + n * classes];
        if !range.is_empty() {
            let first = range.start;
            let slice = batch.slice(range);
            let denominator = loss::denominator(&self.loss, &slice.labels, epoch) as f32;
            let (output, gradients) = self.gradients(&slice, epoch)?;
            let mut at = 0;
            for (parameter, gradient) in self.parameters.iter().zip(&gradients) {
                let count = parameter.value.numel();
                // A parameter the loss does not reach adds nothing.
                if gradient.defined() {
                    let values = convert::f32_vec(gradient).map_err(libtorch(&parameter.name))?;
                    for (out, value) in buffer[at..at + count].iter_mut().zip(values) {
                        *out = value * denominator;
                    }
                }
                at += count;
            }
            buffer[len] = denominator;
            buffer[len + 1] = output.loss * denominator;
            let start = len + 2 + first * classes;
            buffer[start..start + output.logits.len()].copy_from_slice(&output.logits);
        }
        world.sum_in_place(&mut buffer)?;
        let denominator = buffer[len];
        let mut gradients = Vec::with_capacity(self.parameters.len());
        let mut at = 0;
        for parameter in &self.parameters {
            let count = parameter.value.numel();
            let mean: Vec<f32> = buffer[at..at + count]
                .iter()
                .map(|v| v / denominator)
                .collect();
            gradients.push(
                Tensor::from_slice(&mean)
                    .f_reshape(parameter.value.size())
                    .and_then(|g| g.f_to_device(self.torch_device))
                    .and_then(|g| g.f_to_kind(parameter.value.kind()))
                    .map_err(libtorch(&parameter.name))?,
            );
            at += count;
        }
        self.apply(&gradients, lr)?;
        let loss = buffer[len + 1] / denominator;
        let logits = buffer.split_off(len + 2);
        let checksum = if world.check_ranks() {
            Some(self.checksum(false)?)
        } else {
            None
        };
        if let Some(parallel) = &mut self.parallel {
            parallel.compared_start = true;
            parallel.statistics_apart.set(world.size() > 1);
            parallel.steps += 1;
            world.check_step(parallel.steps, || checksum.unwrap_or(0))?;
        }
        Ok(StepOutput { loss, logits })
    }
}
