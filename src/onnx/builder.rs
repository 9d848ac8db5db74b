//! A small graph builder: emitted code reads like the formula it computes
//! (`let z = b.sub(&logits, &b.mul(&onehot, &margins))`), and every name it creates is
//! fresh in the graph it will be spliced into.

use super::proto::attribute_proto::AttributeType;
use super::{AttributeProto, GraphProto, NodeProto, TensorProto};
use std::collections::HashSet;

/// Every value and node name used in a graph (subgraphs included), so that new names
/// never collide.
#[derive(Debug, Clone, Default)]
pub struct NameSet {
    used: HashSet<String>,
}

impl NameSet {
    pub fn of_graph(graph: &GraphProto) -> Self {
        let mut names = NameSet::default();
        names.add_graph(graph);
        names
    }

    fn add_graph(&mut self, graph: &GraphProto) {
        let values = graph
            .input
            .iter()
            .chain(&graph.output)
            .chain(&graph.value_info);
        self.used.extend(values.map(|v| v.name().to_string()));
        self.used
            .extend(graph.initializer.iter().map(|t| t.name().to_string()));
        for node in &graph.node {
            self.used.extend(node.output.iter().cloned());
            if node.name.is_some() {
                self.used.insert(node.name().to_string());
            }
            for attr in &node.attribute {
                for sub in attr.g.iter().chain(&attr.graphs) {
                    self.add_graph(sub);
                }
            }
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.used.contains(name)
    }

    /// Reserves `name` exactly; false if it is already taken.
    pub fn claim(&mut self, name: &str) -> bool {
        self.used.insert(name.to_string())
    }

    /// `base`, or `base_1`, `base_2`, ... whichever is free first; reserved on return.
    pub fn fresh(&mut self, base: &str) -> String {
        if self.claim(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|candidate| self.claim(candidate))
            .expect("an unbounded counter always finds a free name")
    }
}

/// Emits nodes and initializers under a name prefix (`ldam/`), for the caller to
/// splice into the graph.
pub struct Emitter {
    pub names: NameSet,
    prefix: String,
    /// Default-domain opset of the target model: some ops changed form (e.g. Reduce*
    /// axes moved from an attribute to an input in opset 18).
    pub opset: i64,
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
}

impl Emitter {
    pub fn new(names: NameSet, prefix: &str, opset: i64) -> Self {
        Emitter {
            names,
            prefix: prefix.to_string(),
            opset,
            nodes: Vec::new(),
            initializers: Vec::new(),
        }
    }

    /// Emits one node with a single output named `<prefix><hint>` (made unique).
    pub fn op(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        hint: &str,
    ) -> String {
        let output = self.names.fresh(&format!("{}{hint}", self.prefix));
        self.op_into(op_type, inputs, attrs, &output);
        output
    }

    /// Emits one node whose single output has an exact, already claimed name.
    pub fn op_into(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        output: &str,
    ) {
        let node_name = self.names.fresh(&format!("{}{}", self.prefix, op_type));
        self.nodes.push(NodeProto {
            name: Some(node_name),
            op_type: Some(op_type.to_string()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute: attrs,
            ..Default::default()
        });
    }

    /// Adds an initializer under an exact name; `None` if the name is taken.
    pub fn initializer(&mut self, mut tensor: TensorProto) -> Option<String> {
        let name = tensor.name().to_string();
        if !self.names.claim(&name) {
            return None;
        }
        tensor.name = Some(name.clone());
        self.initializers.push(tensor);
        Some(name)
    }

    /// Adds an initializer under a fresh name derived from `<prefix><hint>`.
    pub fn constant(&mut self, hint: &str, mut tensor: TensorProto) -> String {
        let name = self.names.fresh(&format!("{}{hint}", self.prefix));
        tensor.name = Some(name.clone());
        self.initializers.push(tensor);
        name
    }

    pub fn add(&mut self, a: &str, b: &str, hint: &str) -> String {
        self.op("Add", &[a, b], vec![], hint)
    }
    pub fn sub(&mut self, a: &str, b: &str, hint: &str) -> String {
        self.op("Sub", &[a, b], vec![], hint)
    }
    pub fn mul(&mut self, a: &str, b: &str, hint: &str) -> String {
        self.op("Mul", &[a, b], vec![], hint)
    }
    pub fn div(&mut self, a: &str, b: &str, hint: &str) -> String {
        self.op("Div", &[a, b], vec![], hint)
    }
    pub fn max(&mut self, a: &str, b: &str, hint: &str) -> String {
        self.op("Max", &[a, b], vec![], hint)
    }

    /// `ReduceL2` over `axes` with kept dimensions, in the form the opset expects.
    pub fn reduce_l2_keepdims(&mut self, x: &str, axes: &[i64], hint: &str) -> String {
        self.reduce("ReduceL2", x, axes, true, hint)
    }

    /// A `Reduce*` op over constant `axes`: an attribute before opset 18, an
    /// input from it.
    pub fn reduce(
        &mut self,
        op: &str,
        x: &str,
        axes: &[i64],
        keepdims: bool,
        hint: &str,
    ) -> String {
        let keepdims = attr_int("keepdims", i64::from(keepdims));
        if self.opset >= 18 {
            let axes = self.constant(
                &format!("{hint}_axes"),
                super::tensor::i64_tensor("", &[axes.len() as i64], axes),
            );
            self.op(op, &[x, &axes], vec![keepdims], hint)
        } else {
            self.op(op, &[x], vec![keepdims, attr_ints("axes", axes)], hint)
        }
    }
}

pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.to_vec(),
        ..Default::default()
    }
}

pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(value),
        ..Default::default()
    }
}

pub fn attr_string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::String as i32),
        s: Some(value.as_bytes().to_vec().into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_names_skip_taken_ones() {
        let mut names = NameSet::default();
        assert!(names.claim("loss"));
        assert_eq!(names.fresh("loss"), "loss_1");
        assert_eq!(names.fresh("loss"), "loss_2");
        assert_eq!(names.fresh("margins"), "margins");
    }
}
