//! Structural validation of a model before it is written: single assignment,
//! topological order, every input defined, opsets imported, and element types
//! consistent for the ops whose typing rules are known.

use super::tensor::{BOOL, INT64};
use super::types::tensor_type;
use super::{GraphProto, ModelProto, NodeProto};
use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};

/// Checks the model and reports every problem found (up to a handful) in one error.
pub fn check_model(model: &ModelProto) -> Result<()> {
    let mut problems = Vec::new();
    let domains: HashSet<&str> = model
        .opset_import
        .iter()
        .map(|o| {
            if o.domain() == "ai.onnx" {
                ""
            } else {
                o.domain()
            }
        })
        .collect();
    if !domains.contains("") {
        problems.push("no opset import for the default ONNX domain".to_string());
    }
    match &model.graph {
        Some(graph) => {
            let mut scope = Scope::default();
            check_graph(graph, &mut scope, &domains, "graph", &mut problems);
        }
        None => problems.push("model has no graph".to_string()),
    }
    if problems.is_empty() {
        return Ok(());
    }
    let shown = problems.len().min(8);
    let mut reason = problems[..shown].join("; ");
    if problems.len() > shown {
        reason.push_str(&format!("; and {} more", problems.len() - shown));
    }
    Err(Error::invalid(reason))
}

/// Names visible at a point of the graph, with their element type when known.
#[derive(Default, Clone)]
struct Scope {
    types: HashMap<String, Option<i32>>,
}

impl Scope {
    fn define(&mut self, name: &str, elem: Option<i32>) -> bool {
        self.types.insert(name.to_string(), elem).is_none()
    }
    fn elem(&self, name: &str) -> Option<i32> {
        self.types.get(name).copied().flatten()
    }
}

fn check_graph(
    graph: &GraphProto,
    scope: &mut Scope,
    domains: &HashSet<&str>,
    what: &str,
    problems: &mut Vec<String>,
) {
    let declared: HashMap<&str, i32> = graph
        .value_info
        .iter()
        .chain(&graph.output)
        .filter_map(|v| Some((v.name(), tensor_type(v)?.elem_type)))
        .filter(|(_, e)| *e != 0)
        .collect();

    // Graph inputs and initializers may name the same value (an input with a default).
    let mut top = HashSet::new();
    for input in &graph.input {
        if !top.insert(input.name()) {
            problems.push(format!(
                "{what}: input '{}' is declared twice",
                input.name()
            ));
        }
        scope.define(input.name(), tensor_type(input).map(|t| t.elem_type));
    }
    let mut initializer_names = HashSet::new();
    for init in &graph.initializer {
        if !initializer_names.insert(init.name()) {
            problems.push(format!(
                "{what}: initializer '{}' is defined twice",
                init.name()
            ));
        }
        scope.define(init.name(), init.data_type);
    }

    for node in &graph.node {
        let label = super::node_label(node);
        let domain = if node.domain() == "ai.onnx" {
            ""
        } else {
            node.domain()
        };
        if !domains.contains(domain) {
            problems.push(format!("{label}: domain '{domain}' has no opset import"));
        }
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            if !scope.types.contains_key(input.as_str()) {
                problems.push(format!(
                    "{label}: input '{input}' is not defined before this node (missing or out of topological order)"
                ));
            }
        }
        for attr in &node.attribute {
            for (i, sub) in attr.g.iter().chain(&attr.graphs).enumerate() {
                let mut inner = scope.clone();
                check_graph(
                    sub,
                    &mut inner,
                    domains,
                    &format!("{label} subgraph {}#{i}", attr.name()),
                    problems,
                );
            }
        }
        check_input_types(node, scope, &label, problems);
        let inferred = infer_output_elem(node, scope);
        for (i, output) in node
            .output
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.is_empty())
        {
            let elem = if i == 0 { inferred } else { None };
            let elem = match (elem, declared.get(output.as_str())) {
                (Some(e), Some(&d)) if e != d => {
                    problems.push(format!(
                        "{label}: output '{output}' is declared {} but computes {}",
                        super::tensor::elem_type_name(d),
                        super::tensor::elem_type_name(e)
                    ));
                    Some(e)
                }
                (e, d) => e.or(d.copied()),
            };
            if !scope.define(output, elem) {
                problems.push(format!(
                    "{label}: output '{output}' is assigned more than once"
                ));
            }
        }
    }
    for output in &graph.output {
        if !scope.types.contains_key(output.name()) {
            problems.push(format!(
                "{what}: output '{}' is not computed by the graph",
                output.name()
            ));
        }
    }
}

/// Ops whose listed inputs must share one element type.
fn same_type_inputs(op: &str) -> &'static [usize] {
    match op {
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "MatMul" | "Equal" | "Less" | "Greater"
        | "LessOrEqual" | "GreaterOrEqual" => &[0, 1],
        "Max" | "Min" | "Sum" | "Mean" | "Concat" => &[0, 1, 2, 3],
        "Gemm" => &[0, 1, 2],
        "Where" => &[1, 2],
        "SoftmaxCrossEntropyLoss" => &[0, 2],
        _ => &[],
    }
}

fn check_input_types(node: &NodeProto, scope: &Scope, label: &str, problems: &mut Vec<String>) {
    let op = node.op_type();
    let elems: Vec<(usize, i32)> = same_type_inputs(op)
        .iter()
        .filter_map(|&i| node.input.get(i).filter(|n| !n.is_empty()).map(|n| (i, n)))
        .filter_map(|(i, n)| Some((i, scope.elem(n)?)))
        .collect();
    if let Some(&(_, first)) = elems.first() {
        if let Some(&(i, other)) = elems.iter().find(|(_, e)| *e != first) {
            problems.push(format!(
                "{label}: input {i} ('{}') is {} but input {} is {}",
                node.input[i],
                super::tensor::elem_type_name(other),
                elems[0].0,
                super::tensor::elem_type_name(first)
            ));
        }
    }
    let index_input = match op {
        "SoftmaxCrossEntropyLoss" | "NegativeLogLikelihoodLoss" => Some(1),
        "OneHot" => Some(0),
        _ => None,
    };
    if let Some(i) = index_input {
        if let Some(elem) = node.input.get(i).and_then(|n| scope.elem(n)) {
            if !matches!(elem, e if e == INT64 || e == super::proto::tensor_proto::DataType::Int32 as i32)
            {
                problems.push(format!(
                    "{label}: input {i} ('{}') must be int32 or int64, is {}",
                    node.input[i],
                    super::tensor::elem_type_name(elem)
                ));
            }
        }
    }
}

/// The element type of a node's first output, for ops with a known typing rule.
fn infer_output_elem(node: &NodeProto, scope: &Scope) -> Option<i32> {
    let input = |i: usize| node.input.get(i).and_then(|n| scope.elem(n));
    match node.op_type() {
        "Cast" => super::attribute(node, "to")
            .and_then(|a| a.i)
            .map(|v| v as i32),
        "CastLike" => input(1),
        "Shape" | "Size" | "ArgMax" | "ArgMin" | "NonZero" => Some(INT64),
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "Not" | "And" | "Or"
        | "Xor" | "IsNaN" | "IsInf" => Some(BOOL),
        "Where" => input(1).or(input(2)),
        "OneHot" => input(2),
        "Constant" => super::attribute(node, "value")
            .and_then(|a| a.t.as_ref())
            .and_then(|t| t.data_type),
        "Add"
        | "Sub"
        | "Mul"
        | "Div"
        | "Neg"
        | "Abs"
        | "Relu"
        | "Sigmoid"
        | "Tanh"
        | "Exp"
        | "Log"
        | "Sqrt"
        | "Pow"
        | "Max"
        | "Min"
        | "Sum"
        | "Mean"
        | "MatMul"
        | "Gemm"
        | "Softmax"
        | "LogSoftmax"
        | "Identity"
        | "Reshape"
        | "Flatten"
        | "Transpose"
        | "Squeeze"
        | "Unsqueeze"
        | "Concat"
        | "Gather"
        | "Slice"
        | "Expand"
        | "ReduceSum"
        | "ReduceMean"
        | "ReduceL2"
        | "ReduceMax"
        | "ReduceMin"
        | "ReduceSumSquare"
        | "LpNormalization"
        | "Conv"
        | "BatchNormalization"
        | "MaxPool"
        | "AveragePool"
        | "GlobalAveragePool"
        | "Dropout"
        | "Clip"
        | "SoftmaxCrossEntropyLoss"
        | "HardSigmoid"
        | "HardSwish"
        | "LeakyRelu"
        | "Erf"
        | "Gelu"
        | "LayerNormalization"
        | "Pad"
        | "Split"
        | "Tile"
        | "Reciprocal" => input(0),
        _ => None,
    }
}
