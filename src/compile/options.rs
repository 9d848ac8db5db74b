//! How a training step is compiled: the SGD settings and which parameters
//! train.

use crate::error::{Error, Result};
use crate::ldam::contract;
use crate::onnx::tensor::is_float_type;
use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq)]
pub struct CompileOptions {
    /// SGD momentum (PyTorch form: v = mu v + g).
    pub momentum: f64,
    /// L2 weight decay added to every trainable parameter's gradient.
    pub weight_decay: f64,
    /// Initializers to keep fixed.
    pub freeze: Vec<String>,
    /// Sharpness-aware minimisation's radius `rho` ([`super::sam`]); `None` for plain SGD.
    pub sam: Option<f64>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            momentum: 0.9,
            weight_decay: 2e-4,
            freeze: Vec::new(),
            sam: None,
        }
    }
}

pub(crate) fn check_options(options: &CompileOptions) -> Result<()> {
    if !(options.momentum.is_finite() && (0.0..1.0).contains(&options.momentum)) {
        return Err(Error::setting(
            "momentum",
            format!("must lie in [0, 1), got {}", options.momentum),
        ));
    }
    if !(options.weight_decay.is_finite() && options.weight_decay >= 0.0) {
        return Err(Error::setting(
            "weight_decay",
            format!("must be >= 0, got {}", options.weight_decay),
        ));
    }
    if let Some(rho) = options.sam {
        if !(rho.is_finite() && rho > 0.0) {
            return Err(Error::setting(
                "sam",
                format!("must be a positive radius, got {rho}"),
            ));
        }
    }
    Ok(())
}

/// Float initializers of rank >= 1 that the model computes with: weights, biases,
/// normalisation scales. Excluded: the loss constants, normalisation statistics,
/// scalars (exported constants), the tool's own tensors and frozen names.
pub(crate) fn trainable_parameters(
    graph: &crate::onnx::GraphProto,
    options: &CompileOptions,
) -> Result<Vec<String>> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    for name in &options.freeze {
        if !initializers.contains(name.as_str()) {
            return Err(Error::setting(
                "freeze",
                format!("'{name}': the model has no initializer of that name"),
            ));
        }
    }
    let statistics: HashSet<&str> = graph
        .node
        .iter()
        .filter(|n| n.op_type() == "BatchNormalization")
        .flat_map(|n| n.input.iter().skip(3).map(String::as_str))
        .collect();
    // Initializers read only as an op's configuration (Resize's scales).
    let mut configuration: HashSet<&str> = HashSet::new();
    let mut fed: HashSet<&str> = HashSet::new();
    for node in &graph.node {
        let config = crate::ops::registry::find(node.domain(), node.op_type())
            .map_or(&[][..], |def| def.config_inputs);
        for (slot, input) in node.input.iter().enumerate() {
            if config.contains(&slot) {
                configuration.insert(input);
            } else {
                fed.insert(input);
            }
        }
    }
    Ok(graph
        .initializer
        .iter()
        .filter(|t| is_float_type(t.data_type()) && !t.dims.is_empty())
        .map(|t| t.name())
        .filter(|name| !contract::is_tool_tensor(name))
        .filter(|name| !statistics.contains(name))
        .filter(|name| !configuration.contains(name) || fed.contains(name))
        .filter(|name| !options.freeze.iter().any(|f| f == name))
        .map(str::to_string)
        .collect())
}
