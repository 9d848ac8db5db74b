//! Where the batch lives in every value of a graph exported at a fixed batch
//! size, followed node by node from the inputs.
//!
//! Shape arithmetic alone cannot say which element of a constant `Reshape`
//! target is the batch: attention reshapes `[L, B, E]` into `[L, B * heads, d]`
//! and back into `[L * B, E]`, and at B = 2 with 2 heads several elements are
//! multiples of 2. The flat layout settles it. A value carries the batch in
//! one dimension, as `outer * B * inner` of that dimension's extent; a Reshape
//! keeps the flat layout, so the batch's flat stride (`inner` times the
//! extents after its dimension) names the output element it lands in, and
//! that element is the one to multiply by the batch at run time. An op the
//! tracker cannot follow, or one that mixes examples (a reduction over the
//! batch, a matrix product contracting it, a gather along it), stops it: then
//! the graph depends on the batch, and the node is named.

use crate::onnx::types::Dim;
use crate::onnx::{node_label, GraphProto, NodeAttributes, NodeProto};
use crate::ops::shapes::dims::is_int_type;
use crate::ops::shapes::ValueShapes;
use std::collections::HashMap;

/// Where a value holds the batch: dimension `dim`, whose extent is
/// `outer * B * inner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carrier {
    pub dim: usize,
    pub inner: i64,
}

/// A Reshape target element that must follow the batch at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRewrite {
    /// Index of the Reshape (or Expand, ConstantOfShape) node in the graph.
    pub node: usize,
    /// The shape operand's values at the export's batch size.
    pub values: Vec<i64>,
    /// The element holding the batch, and its extent divided by the batch size.
    pub at: usize,
    pub factor: i64,
}

/// A constant written at the export's batch size, one identical row per
/// example (a class token the exporter expanded and folded), combined with a
/// batch-carrying value: it must become its row expanded to the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatedConstant {
    pub node: usize,
    pub slot: usize,
    pub name: String,
}

/// What the tracker found.
#[derive(Debug, Default)]
pub struct BatchFlow {
    pub carriers: HashMap<String, Carrier>,
    pub rewrites: Vec<TargetRewrite>,
    pub replicated: Vec<ReplicatedConstant>,
}

/// Why the batch cannot be followed: the node and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub node: String,
    pub reason: String,
}

fn static_dims(shapes: &ValueShapes, name: &str) -> Option<Vec<i64>> {
    shapes
        .shape(name)?
        .iter()
        .map(|d| match d {
            crate::onnx::types::Dim::Fixed(v) => Some(*v),
            _ => None,
        })
        .collect()
}

fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// The ops whose output aligns with every input, broadcasting from the right.
fn is_elementwise(op: &str) -> bool {
    matches!(
        op,
        "Add"
            | "Sub"
            | "Mul"
            | "Div"
            | "Pow"
            | "Max"
            | "Min"
            | "Where"
            | "Equal"
            | "Less"
            | "Greater"
            | "LessOrEqual"
            | "GreaterOrEqual"
            | "And"
            | "Or"
            | "Not"
            | "Relu"
            | "LeakyRelu"
            | "Sigmoid"
            | "Tanh"
            | "Gelu"
            | "Erf"
            | "Sqrt"
            | "Exp"
            | "Log"
            | "Neg"
            | "Abs"
            | "Clip"
            | "Cast"
            | "Identity"
            | "Dropout"
            | "Softplus"
            | "HardSigmoid"
            | "HardSwish"
            | "Elu"
            | "Selu"
            | "Reciprocal"
            | "Floor"
            | "Ceil"
            | "Round"
            | "Sign"
            | "PRelu"
            | "Mish"
            | "IsNaN"
            | "CastLike"
    )
}

/// Follows the batch of `inputs` (each carrying it in dimension 0) through
/// `graph`, whose shapes `shapes` were inferred at the export's batch `size`.
/// `literal` says which values are constants written at export, whose shape
/// elements may need the batch at run time.
pub fn follow(
    graph: &GraphProto,
    shapes: &ValueShapes,
    size: i64,
    inputs: &[String],
    literal: &dyn Fn(&str) -> bool,
    replicated: &dyn Fn(&str) -> bool,
) -> Result<BatchFlow, Pinned> {
    let mut flow = BatchFlow::default();
    for input in inputs {
        flow.carriers
            .insert(input.clone(), Carrier { dim: 0, inner: 1 });
    }
    for (index, node) in graph.node.iter().enumerate() {
        let carried: Vec<(usize, Carrier)> = node
            .input
            .iter()
            .enumerate()
            .filter_map(|(i, name)| flow.carriers.get(name).map(|c| (i, *c)))
            .collect();
        let step = Step {
            node,
            index,
            shapes,
            size,
            literal,
        };
        if matches!(node.op_type(), "Concat") || is_elementwise(node.op_type()) {
            if let Some(&(_, c)) = carried.first() {
                for (slot, name) in node.input.iter().enumerate() {
                    let aligned_first = shapes
                        .rank(name)
                        .zip(step.out_rank())
                        .is_some_and(|(rank, out)| c.dim == 0 && c.inner == 1 && rank == out);
                    if flow.carriers.contains_key(name) || !aligned_first {
                        continue;
                    }
                    if replicated(name) {
                        flow.replicated.push(ReplicatedConstant {
                            node: index,
                            slot,
                            name: name.clone(),
                        });
                    } else if literal(name)
                        && size > 1
                        && shapes
                            .shape(name)
                            .is_some_and(|dims| dims.len() >= 2 && dims[0] == Dim::Fixed(size))
                    {
                        // One row per example of the export's batch, and the rows
                        // differ (or their values were not read): no other batch
                        // size has such a constant. (A 1-D constant of that length
                        // is a shape vector as often as not: the legacy exporter's
                        // `expand(1, -1)` compares [1, -1] with a ConstantOfShape.)
                        return Err(step.pinned(format!(
                            "its operand '{name}' is a constant with one row per example of the \
                             export's batch of {size}, and the rows are not known to be equal"
                        )));
                    }
                }
            }
        }
        let outputs = step.apply(&carried, &mut flow.rewrites)?;
        for (output, carrier) in node.output.iter().zip(outputs) {
            if let Some(carrier) = carrier {
                flow.carriers.insert(output.clone(), carrier);
            }
        }
    }
    Ok(flow)
}

struct Step<'a> {
    node: &'a NodeProto,
    index: usize,
    shapes: &'a ValueShapes,
    size: i64,
    literal: &'a dyn Fn(&str) -> bool,
}

type Outputs = Vec<Option<Carrier>>;

impl Step<'_> {
    fn pinned(&self, reason: impl Into<String>) -> Pinned {
        Pinned {
            node: node_label(self.node),
            reason: reason.into(),
        }
    }

    fn rank(&self, name: &str) -> Option<usize> {
        self.shapes.rank(name)
    }

    fn out_rank(&self) -> Option<usize> {
        self.rank(self.node.output.first()?)
    }

    fn same_for_all(&self, c: Carrier) -> Outputs {
        vec![Some(c); self.node.output.len()]
    }

    /// Axes from the `axes` attribute, or from input `input` from `since` on.
    fn axes(&self, input: usize, since_input: bool) -> Option<Vec<i64>> {
        if since_input {
            let name = self.node.input.get(input).filter(|n| !n.is_empty())?;
            self.shapes.const_ints(name).map(<[i64]>::to_vec)
        } else {
            self.node.ints_attr("axes").map(<[i64]>::to_vec)
        }
    }

    fn apply(
        &self,
        carried: &[(usize, Carrier)],
        rewrites: &mut Vec<TargetRewrite>,
    ) -> Result<Outputs, Pinned> {
        let op = self.node.op_type();
        // Ops with no input carrying the batch may still write it down.
        if carried.is_empty() {
            return self.constant_shape(rewrites);
        }
        match op {
            "Shape" | "Size" => Ok(vec![None; self.node.output.len()]),
            _ if is_elementwise(op) => self.elementwise(carried),
            "Softmax" | "LogSoftmax" | "Hardmax" => {
                let (_, c) = carried[0];
                let rank = self
                    .out_rank()
                    .ok_or_else(|| self.pinned("its rank is unknown"))?;
                let axis = norm_axis(self.node.int_attr("axis", -1), rank);
                if axis == Some(c.dim) {
                    return Err(self.pinned("it normalises across the batch"));
                }
                Ok(self.same_for_all(c))
            }
            "LayerNormalization" => {
                let (slot, c) = carried[0];
                let rank = self
                    .rank(&self.node.input[0])
                    .ok_or_else(|| self.pinned("its rank is unknown"))?;
                let axis = norm_axis(self.node.int_attr("axis", -1), rank).unwrap_or(0);
                if slot != 0 || c.dim >= axis {
                    return Err(self.pinned("it normalises across the batch"));
                }
                Ok(self.same_for_all(c))
            }
            "Conv"
            | "ConvTranspose"
            | "MaxPool"
            | "AveragePool"
            | "GlobalAveragePool"
            | "GlobalMaxPool"
            | "BatchNormalization"
            | "InstanceNormalization"
            | "GroupNormalization"
            | "LpNormalization"
            | "Resize"
            | "Upsample"
            | "DepthToSpace"
            | "SpaceToDepth"
            | "Pad" => {
                let (slot, c) = carried[0];
                if slot != 0 || c.dim != 0 {
                    return Err(self.pinned("the batch is not its first dimension"));
                }
                if op == "BatchNormalization" {
                    // The running statistics outputs have no batch.
                    let mut outs = vec![None; self.node.output.len()];
                    outs[0] = Some(c);
                    return Ok(outs);
                }
                if op == "Pad" {
                    self.pad_keeps_batch(c)?;
                }
                Ok(vec![Some(c); 1]
                    .into_iter()
                    .chain(std::iter::repeat(None))
                    .take(self.node.output.len())
                    .collect())
            }
            "Transpose" => {
                let (_, c) = carried[0];
                let rank = self
                    .rank(&self.node.input[0])
                    .ok_or_else(|| self.pinned("its rank is unknown"))?;
                let perm: Vec<usize> = match self.node.ints_attr("perm") {
                    Some(p) => p.iter().map(|&a| a as usize).collect(),
                    None => (0..rank).rev().collect(),
                };
                let dim = perm
                    .iter()
                    .position(|&p| p == c.dim)
                    .ok_or_else(|| self.pinned("bad perm"))?;
                Ok(vec![Some(Carrier { dim, ..c })])
            }
            "Reshape" => self.reshape(carried, rewrites),
            "Flatten" => self.flatten(carried),
            "Squeeze" => self.squeeze(carried),
            "Unsqueeze" => self.unsqueeze(carried),
            "Gather" => self.gather(carried),
            "Slice" => self.slice(carried),
            "Concat" => {
                let rank = self
                    .out_rank()
                    .ok_or_else(|| self.pinned("its rank is unknown"))?;
                let axis = norm_axis(self.node.int_attr("axis", 0), rank);
                let c = self.agree(carried)?;
                if axis == Some(c.dim) {
                    return Err(self.pinned("it concatenates along the batch"));
                }
                Ok(vec![Some(c)])
            }
            "Split" => {
                let (slot, c) = carried[0];
                let rank = self
                    .rank(&self.node.input[0])
                    .ok_or_else(|| self.pinned("its rank is unknown"))?;
                if slot != 0 || norm_axis(self.node.int_attr("axis", 0), rank) == Some(c.dim) {
                    return Err(self.pinned("it splits the batch"));
                }
                Ok(self.same_for_all(c))
            }
            "MatMul" => self.matmul(carried),
            "Gemm" => {
                let (slot, c) = carried[0];
                if carried.len() > 1
                    || slot != 0
                    || c.dim != 0
                    || self.node.int_attr("transA", 0) != 0
                {
                    return Err(self.pinned("its product contracts or transposes the batch"));
                }
                Ok(vec![Some(c)])
            }
            "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL2"
            | "ReduceL1" | "ReduceSumSquare" | "ReduceLogSumExp" | "ArgMax" | "ArgMin" => {
                self.reduce(carried)
            }
            "Expand" => self.expand(carried, rewrites),
            "Tile" => {
                let (slot, c) = carried[0];
                if slot != 0 {
                    return Err(self.pinned("its repeats depend on the batch"));
                }
                let repeats = self
                    .node
                    .input
                    .get(1)
                    .and_then(|r| self.shapes.const_ints(r));
                if repeats.and_then(|r| r.get(c.dim)) != Some(&1) {
                    return Err(self.pinned("it repeats along the batch"));
                }
                Ok(vec![Some(c)])
            }
            _ => Err(self.pinned(format!("the batch cannot be followed through op {op}"))),
        }
    }

    /// Records where one input puts the batch in the output; every carrying
    /// input must put it in the same place.
    fn merge(&self, result: &mut Option<Carrier>, here: Carrier) -> Result<(), Pinned> {
        if result.is_some_and(|r| r != here) {
            return Err(self.pinned("its inputs hold the batch in different places"));
        }
        *result = Some(here);
        Ok(())
    }

    /// All carrying inputs must hold the batch in the same output dimension.
    fn agree(&self, carried: &[(usize, Carrier)]) -> Result<Carrier, Pinned> {
        let first = carried[0].1;
        if carried.iter().any(|(_, c)| *c != first) {
            return Err(self.pinned("its inputs hold the batch in different places"));
        }
        Ok(first)
    }

    fn elementwise(&self, carried: &[(usize, Carrier)]) -> Result<Outputs, Pinned> {
        let out_rank = self
            .out_rank()
            .ok_or_else(|| self.pinned("its rank is unknown"))?;
        let mut result: Option<Carrier> = None;
        for &(slot, c) in carried {
            let rank = self
                .rank(&self.node.input[slot])
                .ok_or_else(|| self.pinned("its rank is unknown"))?;
            let aligned = Carrier {
                dim: c.dim + out_rank - rank,
                ..c
            };
            self.merge(&mut result, aligned)?;
        }
        let carrier = result.ok_or_else(|| self.pinned("no input holds the batch"))?;
        Ok(self.same_for_all(carrier))
    }

    fn pad_keeps_batch(&self, c: Carrier) -> Result<(), Pinned> {
        let pads = self
            .node
            .input
            .get(1)
            .and_then(|p| self.shapes.const_ints(p))
            .map(<[i64]>::to_vec)
            .or_else(|| self.node.ints_attr("pads").map(<[i64]>::to_vec));
        let rank = self.rank(&self.node.input[0]).unwrap_or(0);
        match pads {
            Some(p) if p.len() == 2 * rank && p[c.dim] == 0 && p[c.dim + rank] == 0 => Ok(()),
            _ => Err(self.pinned("it may pad the batch")),
        }
    }

    /// The batch's flat stride in `dims` for carrier `c`.
    fn flat_stride(dims: &[i64], c: Carrier) -> i64 {
        c.inner * dims[c.dim + 1..].iter().product::<i64>()
    }

    /// Where a batch of flat stride `stride` lands in `dims`, if it lies
    /// whole inside one element.
    fn locate(&self, dims: &[i64], stride: i64) -> Option<(usize, Carrier)> {
        for q in 0..dims.len() {
            let after: i64 = dims[q + 1..].iter().product();
            if stride % after == 0 {
                let inner = stride / after;
                if dims[q] % (inner * self.size) == 0 {
                    return Some((q, Carrier { dim: q, inner }));
                }
                return None;
            }
        }
        None
    }

    fn reshape(
        &self,
        carried: &[(usize, Carrier)],
        rewrites: &mut Vec<TargetRewrite>,
    ) -> Result<Outputs, Pinned> {
        let (slot, c) = carried[0];
        if slot != 0 {
            return Err(self.pinned("its target shape is computed from the batch"));
        }
        let input = static_dims(self.shapes, &self.node.input[0])
            .ok_or_else(|| self.pinned("its input's shape is not known"))?;
        let output = static_dims(self.shapes, &self.node.output[0])
            .ok_or_else(|| self.pinned("its output's shape is not known"))?;
        let stride = Self::flat_stride(&input, c);
        let (q, carrier) = self
            .locate(&output, stride)
            .ok_or_else(|| self.pinned("it splits the batch across dimensions"))?;
        let target = &self.node.input[1];
        if (self.literal)(target) {
            let values = self
                .shapes
                .const_ints(target)
                .ok_or_else(|| self.pinned("its target is not readable"))?
                .to_vec();
            let element = values.get(q).copied().unwrap_or(-1);
            let copies = element == 0
                && self.node.int_attr("allowzero", 0) == 0
                && input.get(q) == output.get(q)
                && carried_dim_matches(&input, c, q);
            if element != -1 && !copies {
                rewrites.push(TargetRewrite {
                    node: self.index,
                    values,
                    at: q,
                    factor: output[q] / self.size,
                });
            }
        }
        Ok(vec![Some(carrier)])
    }

    fn flatten(&self, carried: &[(usize, Carrier)]) -> Result<Outputs, Pinned> {
        let (_, c) = carried[0];
        let input = static_dims(self.shapes, &self.node.input[0])
            .ok_or_else(|| self.pinned("its input's shape is not known"))?;
        let output = static_dims(self.shapes, &self.node.output[0])
            .ok_or_else(|| self.pinned("its output's shape is not known"))?;
        let (_, carrier) = self
            .locate(&output, Self::flat_stride(&input, c))
            .ok_or_else(|| self.pinned("it splits the batch across dimensions"))?;
        Ok(vec![Some(carrier)])
    }

    fn squeeze(&self, carried: &[(usize, Carrier)]) -> Result<Outputs, Pinned> {
        let (_, c) = carried[0];
        let rank = self
            .rank(&self.node.input[0])
            .ok_or_else(|| self.pinned("its rank is unknown"))?;
        let axes = self
            .axes(1, self.node.input.len() > 1)
            .ok_or_else(|| self.pinned("its axes are not known"))?;
        let axes: Vec<usize> = axes.iter().filter_map(|&a| norm_axis(a, rank)).collect();
        if axes.contains(&c.dim) {
            return Err(self.pinned("it removes the batch dimension"));
        }
        let dim = c.dim - axes.iter().filter(|&&a| a < c.dim).count();
        Ok(vec![Some(Carrier { dim, ..c })])
    }

    fn unsqueeze(&self, carried: &[(usize, Carrier)]) -> Result<Outputs, Pinned> {
        let (_, c) = carried[0];
        let out_rank = self
            .out_rank()
            .ok_or_else(|| self.pinned("its rank is unknown"))?;
        let axes = self
            .axes(1, self.node.input.len() > 1)
            .ok_or_else(|| self.pinned("its axes are not known"))?;
        let mut axes: Vec<usize> = axes
            .iter()
            .filter_map(|&a| norm_axis(a, out_rank))
            .collect();
        axes.sort_unstable();
        let mut dim = c.dim;
        for a in axes {
            if a <= dim {
                dim += 1;
            }
        }
        Ok(vec![Some(Carrier { dim, ..c })])
    }

    fn gather(&self, carried: &[(usize, Carrier)]) -> Result<Outputs, Pinned> {
        let rank = self
            .rank(&self.node.input[0])
            .ok_or_else(|| self.pinned("its rank is unknown"))?;
        let axis = norm_axis(self.node.int_attr("axis", 0), rank)
            .ok_or_else(|| self.pinned("bad axis"))?;
        let index_rank = self
            .rank(&self.node.input[1])
            .ok_or_else(|| self.pinned("its rank is unknown"))?;
        let mut result = None;
        for &(slot, c) in carried {
            let here = if slot == 0 {
                if c.dim == axis {
                    return Err(self.pinned("it gathers along the batch"));
                }
                Carrier {
                    dim: if c.dim < axis {
                        c.dim
                    } else {
                        c.dim + index_rank - 1
                    },
                    ..c
                }
            } else {
                Carrier {
                    dim: axis + c.dim,
                    ..c
                }
            };
            self.merge(&mut result, here)?;
        }
        Ok(vec![result])
    }

    fn slice(&self, carried: &[(usize, Carrier)]) -> Result<Outputs, Pinned> {
        let (slot, c) = carried[0];
        if slot != 0 {
            return Err(self.pinned("its bounds depend on the batch"));
        }
        let input = self.shapes.shape(&self.node.input[0]);
        let output = self.shapes.shape(&self.node.output[0]);
        match (input, output) {
            (Some(i), Some(o)) if i.get(c.dim).is_some() && i.get(c.dim) == o.get(c.dim) => {
                Ok(vec![Some(c)])
            }
            _ => Err(self.pinned("it slices the batch")),
        }
    }

    fn matmul(&self, carried: &[(usize, Carrier)]) -> Result<Outputs, Pinned> {
        let out_rank = self
            .out_rank()
            .ok_or_else(|| self.pinned("its rank is unknown"))?;
        let mut result = None;
        for &(slot, c) in carried {
            let rank = self
                .rank(&self.node.input[slot])
                .ok_or_else(|| self.pinned("its rank is unknown"))?;
            let contracted = if slot == 0 {
                rank - 1
            } else {
                rank.saturating_sub(2)
            };
            if c.dim == contracted || rank == 1 {
                return Err(self.pinned("its product contracts the batch"));
            }
            let here = Carrier {
                dim: c.dim + out_rank - rank,
                ..c
            };
            self.merge(&mut result, here)?;
        }
        Ok(vec![result])
    }

    fn reduce(&self, carried: &[(usize, Carrier)]) -> Result<Outputs, Pinned> {
        let (slot, c) = carried[0];
        if slot != 0 {
            return Err(self.pinned("its axes depend on the batch"));
        }
        let rank = self
            .rank(&self.node.input[0])
            .ok_or_else(|| self.pinned("its rank is unknown"))?;
        let op = self.node.op_type();
        let axes: Vec<usize> = if op == "ArgMax" || op == "ArgMin" {
            vec![norm_axis(self.node.int_attr("axis", 0), rank)
                .ok_or_else(|| self.pinned("bad axis"))?]
        } else {
            let axes = self
                .axes(1, self.node.input.len() > 1)
                .or_else(|| self.node.ints_attr("axes").map(<[i64]>::to_vec));
            match axes {
                Some(a) => a.iter().filter_map(|&x| norm_axis(x, rank)).collect(),
                None => (0..rank).collect(),
            }
        };
        if axes.contains(&c.dim) {
            return Err(self.pinned("it reduces over the batch"));
        }
        let keep = self.node.int_attr("keepdims", 1) != 0;
        let dim = if keep {
            c.dim
        } else {
            c.dim - axes.iter().filter(|&&a| a < c.dim).count()
        };
        Ok(vec![Some(Carrier { dim, ..c })])
    }

    fn expand(
        &self,
        carried: &[(usize, Carrier)],
        rewrites: &mut Vec<TargetRewrite>,
    ) -> Result<Outputs, Pinned> {
        let (slot, c) = carried[0];
        if slot != 0 {
            return Err(self.pinned("its shape is computed from the batch"));
        }
        let out_rank = self
            .out_rank()
            .ok_or_else(|| self.pinned("its rank is unknown"))?;
        let rank = self
            .rank(&self.node.input[0])
            .ok_or_else(|| self.pinned("its rank is unknown"))?;
        let dim = c.dim + out_rank - rank;
        let shape = &self.node.input[1];
        if (self.literal)(shape) {
            if let Some(values) = self.shapes.const_ints(shape) {
                let offset = out_rank - values.len();
                if dim >= offset && values[dim - offset] != 1 {
                    // Expanding a batch-carrying dimension to the export's
                    // size: 1 keeps whatever batch arrives.
                    let mut values = values.to_vec();
                    let at = dim - offset;
                    values[at] = 1;
                    rewrites.push(TargetRewrite {
                        node: self.index,
                        values,
                        at,
                        factor: 0,
                    });
                }
            }
        }
        Ok(vec![Some(Carrier { dim, ..c })])
    }

    /// A node with no batch-carrying input that writes the batch size into a
    /// shape (a class token expanded to `[B, 1, D]`, zeros of `[B, H]`).
    fn constant_shape(&self, rewrites: &mut Vec<TargetRewrite>) -> Result<Outputs, Pinned> {
        let slot = match self.node.op_type() {
            "Expand" => 1,
            "ConstantOfShape" => 0,
            _ => return Ok(vec![None; self.node.output.len()]),
        };
        let Some(shape) = self.node.input.get(slot) else {
            return Ok(vec![None]);
        };
        // Written down or folded from constants (the legacy exporter computes
        // `expand(B, -1, -1)` with Where): either way a known value that
        // must follow the batch from now on.
        // An Expand whose target is computed (`Where` over constants) is
        // given its output's extents, which the target broadcasts to.
        let values = self
            .shapes
            .const_ints(shape)
            .map(<[i64]>::to_vec)
            .or_else(|| {
                (slot == 1)
                    .then(|| static_dims(self.shapes, self.node.output.first()?))
                    .flatten()
            });
        let Some(values) = values else {
            return Ok(vec![None]);
        };
        if values.first() != Some(&self.size) {
            return Ok(vec![None]);
        }
        // A 1-D integer ConstantOfShape is shape arithmetic, not examples: the
        // legacy exporter writes `expand(1, -1)` with `ConstantOfShape([rank])`,
        // whose length is the rank of a shape.
        if slot == 0
            && values.len() == 1
            && self
                .node
                .output
                .first()
                .and_then(|o| self.shapes.elem_type(o))
                .is_some_and(is_int_type)
        {
            return Ok(vec![None]);
        }
        rewrites.push(TargetRewrite {
            node: self.index,
            values,
            at: 0,
            factor: 1,
        });
        Ok(vec![Some(Carrier { dim: 0, inner: 1 })])
    }
}

/// Whether input dimension `q` is exactly the carrier's (so a 0 in the
/// target, "copy the input's extent", follows the batch).
fn carried_dim_matches(input: &[i64], c: Carrier, q: usize) -> bool {
    c.dim == q && input.len() > q
}
