//! Structural validation of a model before it is written: single assignment,
//! topological order, every input defined, opsets imported, and element types
//! consistent: each op's inputs as its registry entry constrains them, its outputs
//! as its shape rule infers them (the same inference every pass uses).

use super::registry;
use super::shapes::ValueShapes;
use crate::error::{Error, Result};
use crate::onnx::tensor::{elem_type_name, INT64};
use crate::onnx::types::tensor_type;
use crate::onnx::{default_opset, node_label, GraphProto, ModelProto, NodeProto};
use std::collections::{HashMap, HashSet};

/// Checks a model given to the tool before any pass transforms it, so that a
/// graph that was broken on arrival is reported as the input's fault (`what`
/// names it: "model", "patched model"), not as a failure of what the tool wrote.
pub fn check_input(model: &ModelProto, what: &str) -> Result<()> {
    check_model(model).map_err(|e| {
        let reason = match e {
            Error::Invalid { reason } => reason,
            other => other.to_string(),
        };
        Error::invalid(format!("the {what} is not a valid ONNX graph: {reason}"))
    })
}

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
            let opset = default_opset(model).unwrap_or(1);
            let shapes = ValueShapes::infer(graph, opset);
            let types = Types {
                shapes: &shapes,
                opset,
            };
            check_graph(
                graph,
                &mut scope,
                &domains,
                Some(types),
                "graph",
                &mut problems,
            );
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

/// The inferred types of a graph's values (the top-level graph's: subgraphs read
/// values of the enclosing scope, which its inference does not see).
#[derive(Clone, Copy)]
struct Types<'a> {
    shapes: &'a ValueShapes,
    opset: i64,
}

fn check_graph(
    graph: &GraphProto,
    scope: &mut Scope,
    domains: &HashSet<&str>,
    types: Option<Types>,
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
        let label = node_label(node);
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
                    None,
                    &format!("{label} subgraph {}#{i}", attr.name()),
                    problems,
                );
            }
        }
        if let Some(op) = types.and_then(|t| registry::for_node(node, t.opset)) {
            check_input_types(node, op, scope, &label, problems);
        }
        for output in node.output.iter().filter(|o| !o.is_empty()) {
            // Inferred from the op's rule where it knows (else the declaration).
            let elem = types.and_then(|t| t.shapes.elem_type(output));
            let elem = match (elem, declared.get(output.as_str())) {
                (Some(e), Some(&d)) if e != d => {
                    problems.push(format!(
                        "{label}: output '{output}' is declared {} but computes {}",
                        elem_type_name(d),
                        elem_type_name(e)
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

fn check_input_types(
    node: &NodeProto,
    op: &registry::OpDef,
    scope: &Scope,
    label: &str,
    problems: &mut Vec<String>,
) {
    let elems: Vec<(usize, i32)> = op
        .same_type_inputs
        .iter()
        .filter_map(|&i| node.input.get(i).filter(|n| !n.is_empty()).map(|n| (i, n)))
        .filter_map(|(i, n)| Some((i, scope.elem(n)?)))
        .collect();
    if let Some(&(_, first)) = elems.first() {
        if let Some(&(i, other)) = elems.iter().find(|(_, e)| *e != first) {
            problems.push(format!(
                "{label}: input {i} ('{}') is {} but input {} is {}",
                node.input[i],
                elem_type_name(other),
                elems[0].0,
                elem_type_name(first)
            ));
        }
    }
    if let Some(i) = op.index_input {
        if let Some(elem) = node.input.get(i).and_then(|n| scope.elem(n)) {
            let int32 = crate::onnx::proto::tensor_proto::DataType::Int32 as i32;
            if elem != INT64 && elem != int32 {
                problems.push(format!(
                    "{label}: input {i} ('{}') must be int32 or int64, is {}",
                    node.input[i],
                    elem_type_name(elem)
                ));
            }
        }
    }
}
