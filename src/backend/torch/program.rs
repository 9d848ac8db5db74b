//! The interpreter: a patched ONNX graph resolved once into a list of prepared op
//! calls over numbered value slots, then executed with libtorch tensors (autograd
//! records the forward, so the backward pass comes from libtorch).
//!
//! Everything that depends on the graph alone is done when the program is built:
//! each node's kernel parses its attributes and reads the inputs the graph fixes
//! (initializers that are not trained state, Constant outputs), constants are
//! made on the device, and a step only moves tensors between slots.

use crate::error::{Error, OpStage, Result};
use crate::onnx::{node_label, GraphProto, NodeProto};
use crate::ops::kernel::{Kernel, NodeCtx, OpCtx, Prepared, Step};
use crate::ops::registry;
use crate::ops::torch_tensor as convert;
use std::collections::{HashMap, HashSet};
use tch::Tensor;

/// One node, prepared.
struct Call {
    node: NodeProto,
    label: String,
    step: Step,
    inputs: Vec<Option<usize>>,
    outputs: Vec<Option<usize>>,
}

pub struct Program {
    calls: Vec<Call>,
    slots: HashMap<String, usize>,
    /// Per slot: the value the graph fixes (an initializer that is not bound per
    /// run, a Constant's output), made once on the device.
    fixed: Vec<Option<Tensor>>,
}

/// The calls needed for a set of outputs, in graph order, with the values each
/// call reads for the last time: they are released right after it, so that a
/// tensor autograd does not keep lives only as long as the graph reads it.
pub struct Plan {
    calls: Vec<usize>,
    /// Per entry of `calls`: slots read there for the last time (targets excluded).
    last_reads: Vec<Vec<usize>>,
    /// Fixed values the calls or targets read.
    fixed: Vec<usize>,
    targets: Vec<usize>,
}

impl Program {
    /// Resolves `graph` on `device`: every node's op must be one the interpreter
    /// executes (checked before anything is made), every value must be defined
    /// (graph input, initializer, earlier node) before it is read, and every
    /// node's attributes must be ones its kernel accepts. The initializers named
    /// in `bound` are bound on every run (trained state); the others are constants.
    pub fn new(
        graph: &GraphProto,
        opset: i64,
        device: tch::Device,
        bound: &HashSet<&str>,
    ) -> Result<Self> {
        let kernels = kernels(graph, opset)?;

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
        // Slots from here on are node outputs.
        let first_computed = slots.len();
        let mut fixed: Vec<Option<Tensor>> = Vec::new();
        fixed.resize_with(slots.len(), || None);
        for initializer in &graph.initializer {
            if !bound.contains(initializer.name()) {
                fixed[slots[initializer.name()]] = Some(convert::from_proto(initializer, device)?);
            }
        }
        // A graph input's initializer is only its default: kernels must not
        // take it for a constant.
        let inputs: HashSet<usize> = graph.input.iter().map(|i| slots[i.name()]).collect();

        let mut calls = Vec::with_capacity(graph.node.len());
        for (node, kernel) in graph.node.iter().zip(kernels) {
            let label = node_label(node);
            let input_slots = node
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
            let known = input_slots
                .iter()
                .map(|slot| {
                    slot.filter(|s| !inputs.contains(s))
                        .and_then(|s| fixed[s].as_ref())
                })
                .collect();
            let computed = input_slots
                .iter()
                .map(|slot| slot.is_some_and(|s| s >= first_computed))
                .collect();
            let prepared =
                kernel(&NodeCtx::new(node, opset, device, known).with_computed(computed))
                    .map_err(|e| Error::torch(format!("{label}: {}", e.0)))?;
            let outputs: Vec<Option<usize>> = node
                .output
                .iter()
                .map(|name| (!name.is_empty()).then(|| define(&mut slots, name)))
                .collect();
            fixed.resize_with(slots.len(), || None);
            // A name defined again (not SSA) holds this node's value from here on.
            for &slot in outputs.iter().flatten() {
                fixed[slot] = None;
            }
            match prepared {
                Prepared::Step(step) => calls.push(Call {
                    node: node.clone(),
                    label,
                    step,
                    inputs: input_slots,
                    outputs,
                }),
                Prepared::Fixed(values) => {
                    let mut values = values.into_iter();
                    for (i, slot) in outputs.iter().enumerate() {
                        let value = values.next();
                        if let Some(slot) = slot {
                            fixed[*slot] =
                                Some(value.ok_or_else(|| missing_output(node, &label, i))?);
                        }
                    }
                }
            }
        }
        Ok(Program {
            calls,
            slots,
            fixed,
        })
    }

    /// Fails, naming op and node, when a node's op is not one the interpreter runs.
    pub fn check_ops(graph: &GraphProto, opset: i64) -> Result<()> {
        kernels(graph, opset).map(drop)
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
        let mut fixed: Vec<usize> = needed
            .into_iter()
            .filter(|&slot| self.fixed[slot].is_some())
            .collect();
        fixed.sort_unstable();
        Ok(Plan {
            calls,
            last_reads,
            fixed,
            targets,
        })
    }

    /// Runs `plan` with the `bound` values (inputs, trained state) and returns
    /// its targets in order.
    pub fn run(
        &self,
        plan: &Plan,
        bound: &[(usize, &Tensor)],
        training: bool,
    ) -> Result<Vec<Tensor>> {
        let mut values: Vec<Option<Tensor>> = Vec::new();
        values.resize_with(self.slots.len(), || None);
        for &slot in &plan.fixed {
            values[slot] = self.fixed[slot].as_ref().map(Tensor::shallow_clone);
        }
        for (slot, value) in bound {
            values[*slot] = Some(value.shallow_clone());
        }
        for (&index, last_reads) in plan.calls.iter().zip(&plan.last_reads) {
            let call = &self.calls[index];
            if let Some(unfed) = call
                .inputs
                .iter()
                .position(|slot| slot.is_some_and(|s| values[s].is_none()))
            {
                return Err(Error::config(format!(
                    "{}: input '{}' has no value (a graph input that was not fed?)",
                    call.label,
                    call.node.input.get(unfed).map_or("", String::as_str)
                )));
            }
            let results = (call.step)(&OpCtx::new(training, &call.inputs, &values))
                .map_err(|e| Error::torch(format!("{}: {}", call.label, e.0)))?;
            for &slot in last_reads {
                values[slot] = None;
            }
            let mut results = results.into_iter();
            for (i, slot) in call.outputs.iter().enumerate() {
                let result = results.next();
                if let Some(slot) = slot {
                    values[*slot] =
                        Some(result.ok_or_else(|| missing_output(&call.node, &call.label, i))?);
                }
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

/// Each node's libtorch kernel.
fn kernels(graph: &GraphProto, opset: i64) -> Result<Vec<Kernel>> {
    graph
        .node
        .iter()
        .map(|node| {
            registry::for_node(node, opset)
                .and_then(|op| op.kernel)
                .ok_or_else(|| unsupported(node, &node_label(node)))
        })
        .collect()
}

fn missing_output(node: &NodeProto, label: &str, index: usize) -> Error {
    Error::torch(format!(
        "{label}: output {index} ('{}') is not produced by the torch backend",
        node.output.get(index).map_or("", String::as_str)
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::builder::{attr_int, attr_ints, attr_string};
    use crate::onnx::proto::tensor_proto::DataType;
    use crate::onnx::tensor::{f32_tensor, i64_tensor};
    use crate::onnx::types::value_info_any_shape;
    use crate::onnx::{AttributeProto, TensorProto};
    use tch::Device;

    fn node(
        op: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> NodeProto {
        NodeProto {
            name: Some(name.into()),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        }
    }

    fn tensor(proto: &TensorProto) -> Tensor {
        convert::from_proto(proto, Device::Cpu).unwrap()
    }

    /// The integer and scalar inputs of the graph below (shapes, bounds, pads...).
    fn host_inputs() -> Vec<TensorProto> {
        vec![
            i64_tensor("shape", &[2], &[0, -1]),
            i64_tensor("starts", &[2], &[3, -1]),
            i64_tensor("ends", &[2], &[0, -10]),
            i64_tensor("slice_axes", &[2], &[2, 1]),
            i64_tensor("steps", &[2], &[-2, -1]),
            i64_tensor("pads", &[6], &[0, 1, 0, 0, 0, 2]),
            f32_tensor("pad_value", &[], &[1.5]),
            i64_tensor("reflect_pads", &[6], &[0, 0, 1, 0, 0, 1]),
            i64_tensor("outer_axes", &[2], &[0, -1]),
            i64_tensor("squeezed", &[2], &[0, 4]),
            i64_tensor("expanded", &[4], &[2, 1, 1, 4]),
            i64_tensor("sizes", &[2], &[1, 2]),
            i64_tensor("last_axis", &[1], &[-1]),
            i64_tensor("indices", &[4], &[0, -1, 7, 2]),
            i64_tensor("depth", &[], &[5]),
            f32_tensor("off_on", &[2], &[-1.0, 3.0]),
            i64_tensor("fill_shape", &[2], &[2, 2]),
            f32_tensor("ratio", &[], &[0.3]),
        ]
    }

    const OUTPUTS: [&str; 12] = [
        "reshaped",
        "sliced",
        "padded",
        "reflected",
        "squeezed_back",
        "expanded_x",
        "part0",
        "part1",
        "summed",
        "one_hot",
        "filled",
        "dropped",
    ];

    /// Opset 18 nodes that read integers or scalars on the host from inputs.
    fn graph(host_inputs_are_fed: bool) -> GraphProto {
        let fill = crate::onnx::AttributeProto {
            name: Some("value".into()),
            r#type: Some(crate::onnx::proto::attribute_proto::AttributeType::Tensor as i32),
            t: Some(f32_tensor("", &[1], &[7.0])),
            ..Default::default()
        };
        let nodes = vec![
            node("Reshape", "reshape", &["x", "shape"], &["reshaped"], vec![]),
            node(
                "Slice",
                "slice",
                &["x", "starts", "ends", "slice_axes", "steps"],
                &["sliced"],
                vec![],
            ),
            node(
                "Pad",
                "pad",
                &["x", "pads", "pad_value"],
                &["padded"],
                vec![],
            ),
            node(
                "Pad",
                "reflect",
                &["x", "reflect_pads"],
                &["reflected"],
                vec![attr_string("mode", "reflect")],
            ),
            node(
                "Unsqueeze",
                "unsqueeze",
                &["x", "outer_axes"],
                &["unsqueezed"],
                vec![],
            ),
            node(
                "Squeeze",
                "squeeze",
                &["unsqueezed", "squeezed"],
                &["squeezed_back"],
                vec![],
            ),
            node(
                "Expand",
                "expand",
                &["x", "expanded"],
                &["expanded_x"],
                vec![],
            ),
            node(
                "Split",
                "split",
                &["x", "sizes"],
                &["part0", "part1"],
                vec![attr_int("axis", 1)],
            ),
            node(
                "ReduceSum",
                "sum",
                &["x", "last_axis"],
                &["summed"],
                vec![attr_int("keepdims", 0)],
            ),
            node(
                "OneHot",
                "one_hot",
                &["indices", "depth", "off_on"],
                &["one_hot"],
                vec![attr_int("axis", 0)],
            ),
            node(
                "ConstantOfShape",
                "fill",
                &["fill_shape"],
                &["filled"],
                vec![fill],
            ),
            node("Dropout", "dropout", &["x", "ratio"], &["dropped"], vec![]),
        ];
        let float = DataType::Float as i32;
        let mut graph = GraphProto {
            node: nodes,
            input: vec![value_info_any_shape("x", float)],
            ..Default::default()
        };
        for t in host_inputs() {
            if host_inputs_are_fed {
                graph
                    .input
                    .push(value_info_any_shape(t.name(), t.data_type()));
            } else {
                graph.initializer.push(t);
            }
        }
        graph
    }

    fn run_graph(host_inputs_are_fed: bool) -> Vec<Tensor> {
        let program = Program::new(
            &graph(host_inputs_are_fed),
            18,
            Device::Cpu,
            &HashSet::new(),
        )
        .unwrap();
        let plan = program.plan(&OUTPUTS).unwrap();
        let x = Tensor::arange(24, (tch::Kind::Float, Device::Cpu)).reshape([2, 3, 4]);
        let fed: Vec<(usize, Tensor)> = if host_inputs_are_fed {
            host_inputs()
                .iter()
                .map(|t| (program.slot(t.name()).unwrap(), tensor(t)))
                .collect()
        } else {
            Vec::new()
        };
        let mut bound: Vec<(usize, &Tensor)> = fed.iter().map(|(s, t)| (*s, t)).collect();
        bound.push((program.slot("x").unwrap(), &x));
        program.run(&plan, &bound, false).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        convert::f32_vec(t).unwrap()
    }

    #[test]
    fn host_inputs_the_graph_fixes_give_the_results_of_the_same_inputs_fed_per_run() {
        let fixed = run_graph(false);
        let fed = run_graph(true);
        for ((name, a), b) in OUTPUTS.iter().zip(&fixed).zip(&fed) {
            assert_eq!(a.size(), b.size(), "{name}");
            assert_eq!(values(a), values(b), "{name}");
        }
        let by_name = |name: &str| &fixed[OUTPUTS.iter().position(|o| *o == name).unwrap()];
        assert_eq!(by_name("reshaped").size(), [2, 12]);
        // Rows 2, 1, 0 (step -1 from the last) and columns 3, 1 (step -2 from 3).
        assert_eq!(by_name("sliced").size(), [2, 3, 2]);
        assert_eq!(
            values(by_name("sliced"))[..6],
            [11.0, 9.0, 7.0, 5.0, 3.0, 1.0]
        );
        assert_eq!(by_name("padded").size(), [2, 4, 6]);
        // The first row is padding, the second starts with x[0, 0, 0].
        assert_eq!(
            values(by_name("padded"))[..7],
            [1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 0.0]
        );
        // One column either side, reflected: 1, 0, 1, 2, 3, 2.
        assert_eq!(by_name("reflected").size(), [2, 3, 6]);
        assert_eq!(
            values(by_name("reflected"))[..6],
            [1.0, 0.0, 1.0, 2.0, 3.0, 2.0]
        );
        assert_eq!(by_name("squeezed_back").size(), [2, 3, 4]);
        assert_eq!(by_name("expanded_x").size(), [2, 2, 3, 4]);
        assert_eq!(
            (by_name("part0").size(), by_name("part1").size()),
            (vec![2, 1, 4], vec![2, 2, 4])
        );
        assert_eq!(values(by_name("summed"))[..2], [6.0, 22.0]);
        // Depth 5 along axis 0; index -1 wraps to 4, index 7 is all off.
        assert_eq!(by_name("one_hot").size(), [5, 4]);
        assert_eq!(
            values(by_name("one_hot")),
            [
                3.0, -1.0, -1.0, -1.0, //
                -1.0, -1.0, -1.0, -1.0, //
                -1.0, -1.0, -1.0, 3.0, //
                -1.0, -1.0, -1.0, -1.0, //
                -1.0, 3.0, -1.0, -1.0,
            ]
        );
        assert_eq!(values(by_name("filled")), [7.0; 4]);
        assert_eq!(
            values(by_name("dropped")),
            (0..24).map(|v| v as f32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_constant_is_made_once_and_read_without_a_call() {
        let graph = GraphProto {
            node: vec![
                node(
                    "Constant",
                    "c",
                    &[],
                    &["target"],
                    vec![attr_ints("value_ints", &[3, -1])],
                ),
                node("Reshape", "reshape", &["x", "target"], &["y"], vec![]),
            ],
            input: vec![value_info_any_shape("x", DataType::Float as i32)],
            ..Default::default()
        };
        let program = Program::new(&graph, 18, Device::Cpu, &HashSet::new()).unwrap();
        let constant = program.plan(&["target"]).unwrap();
        assert!(constant.calls.is_empty());
        let target = program.run(&constant, &[], true).unwrap();
        assert_eq!(convert::i64_vec(&target[0]).unwrap(), [3, -1]);
        let reshape = program.plan(&["y"]).unwrap();
        assert_eq!(reshape.calls.len(), 1);
        let x = Tensor::zeros([2, 6], (tch::Kind::Float, Device::Cpu));
        let y = program
            .run(&reshape, &[(program.slot("x").unwrap(), &x)], true)
            .unwrap();
        assert_eq!(y[0].size(), [3, 4]);
    }

    #[test]
    fn a_bad_attribute_fails_when_the_program_is_built_naming_the_node() {
        let graph = GraphProto {
            node: vec![node(
                "Pad",
                "odd_pad",
                &["x", "pads"],
                &["y"],
                vec![attr_string("mode", "mirror")],
            )],
            input: vec![value_info_any_shape("x", DataType::Float as i32)],
            initializer: vec![i64_tensor("pads", &[2], &[1, 1])],
            ..Default::default()
        };
        let err = Program::new(&graph, 18, Device::Cpu, &HashSet::new())
            .err()
            .expect("mode 'mirror' is not an ONNX Pad mode")
            .to_string();
        assert!(
            err.contains("odd_pad") && err.contains("unknown mode 'mirror'"),
            "{err}"
        );
    }
}
