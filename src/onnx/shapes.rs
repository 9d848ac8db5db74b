//! Static element types and shapes of graph values (provisional: declared types,
//! initializers and simple propagation; unknown stays unknown).

use super::tensor::{i64_values, BOOL, INT64};
use super::types::{tensor_type, Dim, TensorType};
use super::GraphProto;
use std::collections::HashMap;

/// Element type and shape of every value that can be inferred.
#[derive(Debug, Clone, Default)]
pub struct ValueShapes {
    types: HashMap<String, TensorType>,
    ints: HashMap<String, Vec<i64>>,
}

impl ValueShapes {
    pub fn infer(graph: &GraphProto, _opset: i64) -> ValueShapes {
        let mut s = ValueShapes::default();
        for v in graph
            .input
            .iter()
            .chain(&graph.value_info)
            .chain(&graph.output)
        {
            if let Some(t) = tensor_type(v) {
                s.types.insert(v.name().to_string(), t);
            }
        }
        for t in &graph.initializer {
            s.types.insert(
                t.name().to_string(),
                TensorType {
                    elem_type: t.data_type(),
                    shape: Some(t.dims.iter().map(|&d| Dim::Fixed(d)).collect()),
                },
            );
            if let Some(v) = i64_values(t) {
                s.ints.insert(t.name().to_string(), v);
            }
        }
        for node in &graph.node {
            let Some(out) = node.output.first() else {
                continue;
            };
            if s.types.contains_key(out) {
                continue;
            }
            let first = node.input.first().and_then(|i| s.types.get(i)).cloned();
            let ty = match node.op_type() {
                "Relu" | "Identity" | "Neg" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Sqrt"
                | "Abs" | "LeakyRelu" | "HardSigmoid" | "HardSwish" | "Erf" | "Gelu"
                | "Softmax" | "LogSoftmax" | "Dropout" | "Clip" | "LpNormalization"
                | "BatchNormalization" | "LayerNormalization" => first,
                "Shape" => Some(TensorType {
                    elem_type: INT64,
                    shape: None,
                }),
                "Where" => node
                    .input
                    .get(1)
                    .and_then(|i| s.types.get(i))
                    .map(|t| TensorType {
                        elem_type: t.elem_type,
                        shape: None,
                    }),
                "Equal" | "Less" | "Greater" | "GreaterOrEqual" | "LessOrEqual" | "Not" | "And"
                | "Or" => Some(TensorType {
                    elem_type: BOOL,
                    shape: None,
                }),
                "Constant" => super::attribute(node, "value")
                    .and_then(|a| a.t.as_ref())
                    .map(|t| {
                        if let Some(v) = i64_values(t) {
                            s.ints.insert(out.clone(), v);
                        }
                        TensorType {
                            elem_type: t.data_type(),
                            shape: Some(t.dims.iter().map(|&d| Dim::Fixed(d)).collect()),
                        }
                    }),
                "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" | "Pow" => {
                    let a = first.clone();
                    let b = node.input.get(1).and_then(|i| s.types.get(i)).cloned();
                    match (a, b) {
                        (Some(a), Some(b)) => Some(TensorType {
                            elem_type: a.elem_type,
                            shape: a
                                .shape
                                .as_ref()
                                .zip(b.shape.as_ref())
                                .map(|(x, y)| broadcast(x, y)),
                        }),
                        (a, _) => a.map(|t| TensorType {
                            elem_type: t.elem_type,
                            shape: None,
                        }),
                    }
                }
                "Gemm" => {
                    let b = node
                        .input
                        .get(1)
                        .and_then(|i| s.types.get(i))
                        .and_then(|t| t.shape.clone());
                    first.map(|a| {
                        let ta = super::attr_int(node, "transA", 0) != 0;
                        let tb = super::attr_int(node, "transB", 0) != 0;
                        let shape = a.shape.as_ref().zip(b.as_ref()).and_then(|(a, b)| {
                            let m = a.get(usize::from(ta))?.clone();
                            let n = b.get(usize::from(!tb))?.clone();
                            Some(vec![m, n])
                        });
                        TensorType {
                            elem_type: a.elem_type,
                            shape,
                        }
                    })
                }
                "ReduceL2" | "ReduceSum" | "ReduceMean"
                    if super::attr_int(node, "keepdims", 1) == 1 =>
                {
                    let axes = super::attribute(node, "axes")
                        .map(|a| a.ints.clone())
                        .or_else(|| node.input.get(1).and_then(|i| s.ints.get(i)).cloned());
                    first.map(|t| {
                        let shape = t.shape.as_ref().zip(axes.as_ref()).map(|(dims, axes)| {
                            let rank = dims.len() as i64;
                            dims.iter()
                                .enumerate()
                                .map(|(i, d)| {
                                    if axes.iter().any(|&a| (a + rank) % rank == i as i64) {
                                        Dim::Fixed(1)
                                    } else {
                                        d.clone()
                                    }
                                })
                                .collect()
                        });
                        TensorType {
                            elem_type: t.elem_type,
                            shape,
                        }
                    })
                }
                _ => first.map(|t| TensorType {
                    elem_type: t.elem_type,
                    shape: None,
                }),
            };
            if let Some(ty) = ty {
                s.types.insert(out.clone(), ty);
            }
        }
        s
    }
    pub fn get(&self, name: &str) -> Option<&TensorType> {
        self.types.get(name)
    }
    pub fn shape(&self, name: &str) -> Option<&[Dim]> {
        self.types.get(name)?.shape.as_deref()
    }
    pub fn rank(&self, name: &str) -> Option<usize> {
        self.shape(name).map(<[Dim]>::len)
    }
    pub fn elem_type(&self, name: &str) -> Option<i32> {
        self.types
            .get(name)
            .map(|t| t.elem_type)
            .filter(|&e| e != 0)
    }
    pub fn const_ints(&self, name: &str) -> Option<&[i64]> {
        self.ints.get(name).map(Vec::as_slice)
    }
    pub fn insert(&mut self, name: &str, ty: TensorType) {
        self.types.insert(name.to_string(), ty);
    }
}

/// Numpy broadcasting of two shapes.
fn broadcast(a: &[Dim], b: &[Dim]) -> Vec<Dim> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let pick = |s: &[Dim]| {
                (i + s.len())
                    .checked_sub(rank)
                    .and_then(|k| s.get(k))
                    .cloned()
                    .unwrap_or(Dim::Fixed(1))
            };
            match (pick(a), pick(b)) {
                (Dim::Fixed(1), d) | (d, Dim::Fixed(1)) => d,
                (x, y) if x == y => x,
                (Dim::Fixed(k), Dim::Symbolic(_)) | (Dim::Symbolic(_), Dim::Fixed(k)) => {
                    Dim::Fixed(k)
                }
                _ => Dim::Unknown,
            }
        })
        .collect()
}
