//! The inferred types and known integer contents of a graph's values
//! ([`ValueShapes`]), and the view of one node that the ops' shape and folding
//! rules read ([`Ctx`]). The engine that fills them walks the graph in
//! [`super`]; the rules live in the op families.

use crate::onnx::types::{Dim, TensorType};
use crate::onnx::{NodeAttributes, NodeProto};
use crate::ops::shapes::dims::{static_count, static_dims};
use std::collections::HashMap;

/// An op's shape facet: the types of its outputs from its inputs'.
#[derive(Clone, Copy)]
pub enum ShapeRule {
    /// A single-output op.
    One(fn(&Ctx) -> Option<TensorType>),
    /// An op with several outputs, in order.
    Many(fn(&Ctx) -> Vec<Option<TensorType>>),
}

impl ShapeRule {
    pub(crate) fn apply(self, ctx: &Ctx) -> Vec<Option<TensorType>> {
        match self {
            ShapeRule::One(rule) => vec![rule(ctx)],
            ShapeRule::Many(rule) => rule(ctx),
        }
    }
}

/// An op's fold facet: its output's integer contents from its inputs' (shape
/// arithmetic), when they are known.
pub type FoldRule = fn(&Ctx) -> Option<Vec<Dim>>;

/// Integer tensors with more elements than this are not tracked: shape arithmetic
/// works on a handful of elements, and copying weight-sized tensors buys nothing.
pub(crate) const MAX_TRACKED_ELEMENTS: usize = 4096;

/// Slice bounds at least this large (in magnitude) mean "to the end": exporters
/// write `INT64_MAX` / `-INT64_MAX`, and no real dimension comes close.
pub(crate) const OPEN_BOUND: i64 = i64::MAX / 2;

/// Element type and shape of every value that can be inferred.
#[derive(Debug, Clone, Default)]
pub struct ValueShapes {
    pub(crate) types: HashMap<String, TensorType>,
    /// Known integer contents, row-major; `Symbolic` elements equal that dimension.
    pub(crate) values: HashMap<String, Vec<Dim>>,
    /// The fully known subset of `values`, kept as plain integers for `const_ints`.
    pub(crate) consts: HashMap<String, Vec<i64>>,
    /// Small float constants: `Range` and `OneHot` may take their bounds as floats.
    pub(crate) floats: HashMap<String, Vec<f64>>,
}

impl ValueShapes {
    pub fn get(&self, name: &str) -> Option<&TensorType> {
        self.types.get(name)
    }

    /// The dimensions, or `None` if the rank is unknown.
    pub fn shape(&self, name: &str) -> Option<&[Dim]> {
        self.types.get(name)?.shape.as_deref()
    }

    pub fn rank(&self, name: &str) -> Option<usize> {
        self.shape(name).map(<[Dim]>::len)
    }

    /// The element type, `None` when unknown (`UNDEFINED`).
    pub fn elem_type(&self, name: &str) -> Option<i32> {
        self.types
            .get(name)
            .map(|t| t.elem_type)
            .filter(|&e| e != 0)
    }

    /// Constant integer values known at compile time (initializers, Constant nodes,
    /// and simple shape arithmetic on them: Shape of a fully static tensor,
    /// Gather/Concat/Unsqueeze/Squeeze/Slice/Cast/Mul/Add/Sub on known ints).
    pub fn const_ints(&self, name: &str) -> Option<&[i64]> {
        self.consts.get(name).map(Vec::as_slice)
    }

    /// Record a value's type (used when new nodes are appended by later passes).
    pub fn insert(&mut self, name: &str, ty: TensorType) {
        // Known contents stay only while they still fit the recorded shape.
        if let Some(count) = ty.shape.as_deref().and_then(static_count) {
            if self.values.get(name).is_some_and(|v| v.len() != count) {
                self.forget_values(name);
            }
        } else {
            self.forget_values(name);
        }
        self.types.insert(name.to_string(), ty);
    }

    /// Stores known contents when they match the value's static element count (a
    /// mismatch means an inconsistent model; then nothing is claimed).
    pub(crate) fn set_values(&mut self, name: &str, values: Vec<Dim>) {
        let count = self.shape(name).and_then(static_count);
        if count != Some(values.len()) || values.len() > MAX_TRACKED_ELEMENTS {
            return;
        }
        let ints: Option<Vec<i64>> = values
            .iter()
            .map(|d| match d {
                Dim::Fixed(v) => Some(*v),
                _ => None,
            })
            .collect();
        match ints {
            Some(ints) => self.consts.insert(name.to_string(), ints),
            None => self.consts.remove(name),
        };
        self.values.insert(name.to_string(), values);
    }

    pub(crate) fn forget_values(&mut self, name: &str) {
        self.values.remove(name);
        self.consts.remove(name);
    }
}

/// One node with read access to everything inferred before it.
pub struct Ctx<'a> {
    pub(crate) node: &'a NodeProto,
    pub(crate) shapes: &'a ValueShapes,
    pub(crate) opset: i64,
}

/// An operand that moved from an attribute to an input between opsets.
pub(crate) enum Operand {
    Absent,
    Known(Vec<i64>),
    /// Given, but not a compile-time constant.
    Unknown,
}

impl<'a> Ctx<'a> {
    pub(crate) fn op(&self) -> &'a str {
        self.node.op_type()
    }
    pub(crate) fn input(&self, i: usize) -> Option<&'a str> {
        self.node
            .input
            .get(i)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }
    pub(crate) fn inputs(&self) -> impl Iterator<Item = &'a str> {
        self.node
            .input
            .iter()
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }
    pub(crate) fn ty(&self, i: usize) -> Option<&'a TensorType> {
        self.shapes.types.get(self.input(i)?)
    }
    pub(crate) fn shape(&self, i: usize) -> Option<&'a [Dim]> {
        self.ty(i)?.shape.as_deref()
    }
    /// Element type of input `i`, 0 (`UNDEFINED`) when unknown.
    pub(crate) fn elem(&self, i: usize) -> i32 {
        self.ty(i).map_or(0, |t| t.elem_type)
    }
    pub(crate) fn values(&self, i: usize) -> Option<&'a [Dim]> {
        self.shapes.values.get(self.input(i)?).map(Vec::as_slice)
    }
    pub(crate) fn ints(&self, i: usize) -> Option<&'a [i64]> {
        self.shapes.consts.get(self.input(i)?).map(Vec::as_slice)
    }
    /// A small float constant's values (e.g. Resize's scales).
    pub(crate) fn floats(&self, i: usize) -> Option<&'a [f64]> {
        self.shapes.floats.get(self.input(i)?).map(Vec::as_slice)
    }
    pub(crate) fn static_dims(&self, i: usize) -> Option<Vec<usize>> {
        static_dims(self.shape(i)?)
    }
    /// A scalar (or one-element) numeric constant, integer or float.
    pub(crate) fn scalar(&self, i: usize) -> Option<f64> {
        let name = self.input(i)?;
        if let Some(ints) = self.shapes.consts.get(name) {
            return single(ints).map(|&v| v as f64);
        }
        self.shapes
            .floats
            .get(name)
            .and_then(|f| single(f))
            .copied()
    }
    pub(crate) fn int(&self, name: &str, default: i64) -> i64 {
        self.node.int_attr(name, default)
    }
    pub(crate) fn ints_attr(&self, name: &str) -> Option<&'a [i64]> {
        self.node.ints_attr(name)
    }
    pub(crate) fn string(&self, name: &str, default: &'a str) -> &'a str {
        self.node.string_attr(name).unwrap_or(default)
    }
    /// Reads an operand that is an attribute before opset `since` and input `input`
    /// from then on; the other form is accepted as a fallback for mixed exporters.
    pub(crate) fn operand(&self, attr: &str, input: usize, since: i64) -> Operand {
        let from_input = match self.input(input) {
            None => Operand::Absent,
            Some(_) => self
                .ints(input)
                .map_or(Operand::Unknown, |v| Operand::Known(v.to_vec())),
        };
        let from_attr = self
            .ints_attr(attr)
            .map_or(Operand::Absent, |v| Operand::Known(v.to_vec()));
        let (preferred, fallback) = if self.opset >= since {
            (from_input, from_attr)
        } else {
            (from_attr, from_input)
        };
        match preferred {
            Operand::Absent => fallback,
            found => found,
        }
    }
    /// A 1-D shape tensor's elements (Reshape, Expand, ConstantOfShape): known ones,
    /// or, when computed at run time, as many unknowns as its length (the rank).
    pub(crate) fn shape_operand(&self, i: usize) -> Option<Vec<Dim>> {
        if let Some(values) = self.values(i) {
            return Some(values.to_vec());
        }
        match self.static_dims(i)?.as_slice() {
            [len] if *len <= MAX_TRACKED_ELEMENTS => Some(vec![Dim::Unknown; *len]),
            _ => None,
        }
    }
    /// Input `i`'s shape with the given element type.
    pub(crate) fn like(&self, i: usize, elem: i32) -> Option<TensorType> {
        typed(elem, self.shape(i).map(<[Dim]>::to_vec))
    }
}

pub(crate) fn typed(elem: i32, shape: Option<Vec<Dim>>) -> Option<TensorType> {
    (elem != 0 || shape.is_some()).then_some(TensorType {
        elem_type: elem,
        shape,
    })
}

pub(crate) fn single<T>(values: &[T]) -> Option<&T> {
    match values {
        [v] => Some(v),
        _ => None,
    }
}

/// Combines an inferred type with a declared one: inferred facts win, a declared
/// dimension fills in where inference found nothing more specific.
pub(crate) fn refine(
    inferred: Option<TensorType>,
    declared: Option<&TensorType>,
) -> Option<TensorType> {
    let Some(declared) = declared else {
        return inferred;
    };
    let Some(inferred) = inferred else {
        return Some(declared.clone());
    };
    let elem_type = match inferred.elem_type {
        0 => declared.elem_type,
        e => e,
    };
    let shape = match (inferred.shape, &declared.shape) {
        (Some(a), Some(b)) if a.len() == b.len() => {
            Some(a.iter().zip(b).map(|(x, y)| refine_dim(x, y)).collect())
        }
        (Some(a), _) => Some(a),
        (None, b) => b.clone(),
    };
    Some(TensorType { elem_type, shape })
}

/// The more specific of two descriptions of the same dimension.
pub(crate) fn refine_dim(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Fixed(_), _) => a.clone(),
        (_, Dim::Fixed(_)) => b.clone(),
        (Dim::Symbolic(_), _) => a.clone(),
        _ => b.clone(),
    }
}
