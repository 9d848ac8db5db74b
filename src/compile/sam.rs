//! Sharpness-aware minimisation in the training step (Foret et al., ICLR 2021),
//! as Rangwani et al. (NeurIPS 2022) apply it on top of LDAM-DRW:
//!
//! 1. `g = dL/dw` at the current weights (the first pass; no weight decay);
//! 2. `e = rho * g / (||g||_2 + 1e-12)`, the norm taken over every trainable
//!    tensor together (the `1e-12` as in the reference SAM optimizer);
//! 3. the gradient at `w + e` from a second forward and backward pass: a renamed
//!    copy of the forward graph reading the perturbed weights. Its BatchNorm nodes
//!    normalise with their own batch statistics, and only the first pass's
//!    statistics update the running ones; its Dropout nodes draw their own masks;
//! 4. the SGD update (momentum, weight decay) of `w` uses that second gradient.

use crate::autodiff::{self, scalar};
use crate::error::{Error, Result};
use crate::onnx::builder::{attr_int, Emitter};
use crate::onnx::tensor::FLOAT;
use crate::onnx::types::value_info;
use crate::onnx::{GraphProto, NodeProto, TensorProto};
use crate::ops::shapes::ValueShapes;
use std::collections::{BTreeMap, HashMap};

/// The added epsilon of the gradient norm.
pub const NORM_EPS: f64 = 1e-12;

/// The perturbation and the second pass, to append after the first backward pass.
pub struct SecondPass {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    /// Each parameter's gradient at `w + e`.
    pub gradients: BTreeMap<String, String>,
}

/// Ops whose outputs differ from run to run: copied even when their inputs are
/// shared, so that each pass draws its own values.
fn is_random(node: &NodeProto) -> bool {
    matches!(
        node.op_type(),
        "Dropout"
            | "RandomNormal"
            | "RandomNormalLike"
            | "RandomUniform"
            | "RandomUniformLike"
            | "Bernoulli"
            | "Multinomial"
    )
}

/// Builds steps 2 and 3 for `forward` (the step's forward graph, BatchNorm
/// statistics already explicit), whose first-pass gradients are `gradients`.
/// `shapes` are the forward graph's.
pub fn second_pass(
    forward: &GraphProto,
    shapes: &ValueShapes,
    b: &mut Emitter,
    loss: &str,
    trainable: &[String],
    gradients: &BTreeMap<String, String>,
    rho: f64,
) -> Result<SecondPass> {
    let float_type = |name: &str| {
        forward
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .map(|t| (t.data_type(), t.dims.clone()))
    };
    // Step 2: e = rho * g / (||g|| + eps), w' = w + e.
    let perturbed_params: Vec<(&String, &String)> = trainable
        .iter()
        .filter_map(|p| gradients.get(p).map(|g| (p, g)))
        .collect();
    if perturbed_params.is_empty() {
        return Err(Error::compile(
            "sam needs a trainable parameter with a gradient",
        ));
    }
    let squares: Vec<String> = perturbed_params
        .iter()
        .map(|(p, g)| {
            b.op(
                "ReduceSumSquare",
                &[g.as_str()],
                vec![attr_int("keepdims", 0)],
                &format!("sam/{p}/grad_square_sum"),
            )
        })
        .collect();
    let refs: Vec<&str> = squares.iter().map(String::as_str).collect();
    let total = if refs.len() == 1 {
        refs[0].to_string()
    } else {
        b.op("Sum", &refs, vec![], "sam/grad_square_sum")
    };
    let norm = b.op("Sqrt", &[&total], vec![], "sam/grad_norm");
    let eps = b.constant("sam/eps", scalar(FLOAT, NORM_EPS));
    let rho = b.constant("sam/rho", scalar(FLOAT, rho));
    let denominator = b.add(&norm, &eps, "sam/grad_norm_eps");
    let scale = b.div(&rho, &denominator, "sam/scale");
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut perturbed_inputs = Vec::new();
    let mut perturbed_names = Vec::new();
    for (p, g) in &perturbed_params {
        let e = b.mul(g, &scale, &format!("sam/{p}/e"));
        let perturbed = b.add(p, &e, &format!("sam/{p}/perturbed"));
        let (elem, dims) = float_type(p).ok_or_else(|| {
            Error::compile(format!("trainable parameter '{p}' is not an initializer"))
        })?;
        let dims: Vec<_> = dims
            .iter()
            .map(|&d| crate::onnx::types::Dim::Fixed(d))
            .collect();
        perturbed_inputs.push(value_info(&perturbed, elem, &dims));
        renamed.insert((*p).clone(), perturbed.clone());
        perturbed_names.push(perturbed);
    }
    let perturbation_nodes = std::mem::take(&mut b.nodes);
    let perturbation_initializers = std::mem::take(&mut b.initializers);

    // Step 3: the forward nodes that depend on the weights (or draw random
    // values), copied under fresh names and reading the perturbed weights.
    let mut copies = Vec::new();
    for node in &forward.node {
        let depends = node.input.iter().any(|i| renamed.contains_key(i));
        if !depends && !is_random(node) {
            continue;
        }
        let mut copy = node.clone();
        for input in copy.input.iter_mut() {
            if let Some(new) = renamed.get(input.as_str()) {
                *input = new.clone();
            }
        }
        for output in copy.output.iter_mut().filter(|o| !o.is_empty()) {
            let new = b.names.fresh(&format!("train/sam/{output}"));
            renamed.insert(output.clone(), new.clone());
            *output = new;
        }
        copy.name = Some(b.names.fresh(&format!("train/sam/{}", node.name())));
        copies.push(copy);
    }
    let loss_copy = renamed
        .get(loss)
        .cloned()
        .ok_or_else(|| Error::compile("sam: the loss does not depend on the trained weights"))?;

    // Differentiate the copy: the forward graph, then the copies, with the
    // perturbed weights as inputs. Only the copies lie on the path from the
    // perturbed weights to the copied loss.
    let mut graph = forward.clone();
    let original_nodes = graph.node.len();
    graph.node.extend(copies);
    graph.input.extend(perturbed_inputs);
    let opset = b.opset;
    let mut copy_shapes = ValueShapes::infer(&graph, opset);
    // Types the forward graph's shapes hold beyond inference (the explicit
    // BatchNorm statistics), for the originals and their copies.
    for (old, new) in &renamed {
        if let Some(ty) = shapes.get(old) {
            if copy_shapes.get(new).is_none() {
                copy_shapes.insert(new, ty.clone());
            }
            if copy_shapes.get(old).is_none() {
                copy_shapes.insert(old, ty.clone());
            }
        }
    }
    let backward =
        autodiff::differentiate(&graph, &mut copy_shapes, b, &loss_copy, &perturbed_names)?;
    let mut second = BTreeMap::new();
    for (p, _) in &perturbed_params {
        if let Some(g) = backward.gradients.get(&renamed[p.as_str()]) {
            second.insert((*p).clone(), g.clone());
        }
    }
    let mut nodes = perturbation_nodes;
    nodes.extend(backward.nodes.into_iter().skip(original_nodes));
    let mut initializers = perturbation_initializers;
    initializers.extend(backward.initializers);
    Ok(SecondPass {
        nodes,
        initializers,
        gradients: second,
    })
}
