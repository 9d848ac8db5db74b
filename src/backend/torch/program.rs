//! The interpreter: a patched ONNX graph resolved once into a list of op calls
//! over numbered value slots, then executed with libtorch tensors (autograd
//! records the forward, so the backward pass comes from libtorch).

use crate::error::{Error, OpStage, Result};
use crate::onnx::{node_label, GraphProto, NodeProto};
use crate::ops::kernel::{Op, OpCtx};
use crate::ops::registry;
use std::collections::{HashMap, HashSet};
use tch::Tensor;

/// One node, resolved.
struct Call {
    node: NodeProto,
    label: String,
    op: Op,
    inputs: Vec<Option<usize>>,
    outputs: Vec<Option<usize>>,
}

pub struct Program {
    calls: Vec<Call>,
    slots: HashMap<String, usize>,
    opset: i64,
}

/// The calls needed for a set of outputs, in graph order, with the values each
/// call reads for the last time: they are released right after it, so that a
/// tensor autograd does not keep lives only as long as the graph reads it.
pub struct Plan {
    calls: Vec<usize>,
    /// Per entry of `calls`: slots read there for the last time (targets excluded).
    last_reads: Vec<Vec<usize>>,
    targets: Vec<usize>,
}

impl Program {
    /// Resolves `graph`: every node's op must be one the interpreter executes, and
    /// every value must be defined (graph input, initializer, earlier node) before
    /// it is read.
    pub fn new(graph: &GraphProto, opset: i64) -> Result<Self> {
        let mut slots: HashMap<String, usize> = HashMap::new();
        let define = |slots: &mut HashMap<String, usize>, name: &str| -> usize {
            let next = slots.len();
            *slots.entry(name.to_string()).or_insert(next)
        };
        for name in graph
            .input
            .iter()
            .map(|i| i.name())
            .chain(graph.initializer.iter().map(|t| t.name()))
        {
            define(&mut slots, name);
        }
        let mut calls = Vec::with_capacity(graph.node.len());
        for node in &graph.node {
            let label = node_label(node);
            let op = registry::for_node(node, opset)
                .and_then(|op| op.kernel)
                .ok_or_else(|| unsupported(node, &label))?;
            let inputs = node
                .input
                .iter()
                .map(|name| match name.as_str() {
                    "" => Ok(None),
                    name => slots.get(name).copied().map(Some).ok_or_else(|| {
                        Error::invalid(format!(
                            "{label} reads '{name}', which no graph input, initializer or earlier node defines"
                        ))
                    }),
                })
                .collect::<Result<Vec<_>>>()?;
            let outputs = node
                .output
                .iter()
                .map(|name| (!name.is_empty()).then(|| define(&mut slots, name)))
                .collect();
            calls.push(Call {
                node: node.clone(),
                label,
                op,
                inputs,
                outputs,
            });
        }
        Ok(Program {
            calls,
            slots,
            opset,
        })
    }

    pub fn slot(&self, name: &str) -> Result<usize> {
        self.slots
            .get(name)
            .copied()
            .ok_or_else(|| Error::invalid(format!("the graph has no value named '{name}'")))
    }

    /// The calls that `outputs` depend on.
    pub fn plan(&self, outputs: &[&str]) -> Result<Plan> {
        let targets = outputs
            .iter()
            .map(|name| self.slot(name))
            .collect::<Result<Vec<_>>>()?;
        let mut needed: HashSet<usize> = targets.iter().copied().collect();
        let mut calls = Vec::new();
        for (index, call) in self.calls.iter().enumerate().rev() {
            if call.outputs.iter().flatten().any(|s| needed.contains(s)) {
                calls.push(index);
                needed.extend(call.inputs.iter().flatten());
            }
        }
        calls.reverse();
        // Walking backwards, the first time a slot is seen read is its last read.
        let mut seen: HashSet<usize> = targets.iter().copied().collect();
        let mut last_reads = vec![Vec::new(); calls.len()];
        for (position, &index) in calls.iter().enumerate().rev() {
            for &slot in self.calls[index].inputs.iter().flatten() {
                if seen.insert(slot) {
                    last_reads[position].push(slot);
                }
            }
        }
        Ok(Plan {
            calls,
            last_reads,
            targets,
        })
    }

    /// Runs `plan` with the `bound` values (inputs, parameters, constants) and
    /// returns its targets in order.
    pub fn run(
        &self,
        plan: &Plan,
        bound: &[(usize, &Tensor)],
        training: bool,
        device: tch::Device,
    ) -> Result<Vec<Tensor>> {
        let mut values: Vec<Option<Tensor>> = Vec::new();
        values.resize_with(self.slots.len(), || None);
        for (slot, value) in bound {
            values[*slot] = Some(value.shallow_clone());
        }
        for (&index, last_reads) in plan.calls.iter().zip(&plan.last_reads) {
            let call = &self.calls[index];
            let inputs = call
                .inputs
                .iter()
                .enumerate()
                .map(|(i, slot)| match slot {
                    None => Ok(None),
                    Some(s) => values[*s].as_ref().map(Some).ok_or_else(|| {
                        Error::config(format!(
                            "{}: input '{}' has no value (a graph input that was not fed?)",
                            call.label, call.node.input[i]
                        ))
                    }),
                })
                .collect::<Result<Vec<_>>>()?;
            let ctx = OpCtx {
                node: &call.node,
                opset: self.opset,
                training,
                device,
                inputs,
            };
            let results =
                (call.op)(&ctx).map_err(|e| Error::torch(format!("{}: {}", call.label, e.0)))?;
            let mut results = results.into_iter();
            let mut stored = Vec::with_capacity(call.outputs.len());
            for (i, slot) in call.outputs.iter().enumerate() {
                let result = results.next();
                if let Some(slot) = slot {
                    let value = result.ok_or_else(|| {
                        Error::torch(format!(
                            "{}: output {i} ('{}') is not produced by the torch backend",
                            call.label, call.node.output[i]
                        ))
                    })?;
                    stored.push((*slot, value));
                }
            }
            for &slot in last_reads {
                values[slot] = None;
            }
            for (slot, value) in stored {
                values[slot] = Some(value);
            }
        }
        plan.targets
            .iter()
            .map(|&slot| {
                values[slot].take().ok_or_else(|| {
                    Error::invalid("a requested output was not computed (an unfed graph input?)")
                })
            })
            .collect()
    }
}

fn unsupported(node: &NodeProto, label: &str) -> Error {
    let op = match node.domain() {
        "" | "ai.onnx" => node.op_type().to_string(),
        domain => format!("{domain}:{}", node.op_type()),
    };
    Error::UnsupportedOp {
        stage: OpStage::Libtorch,
        op,
        node: label.to_string(),
        supported: registry::kernel_ops().join(", "),
    }
}
