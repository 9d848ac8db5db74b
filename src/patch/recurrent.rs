//! Recurrent nodes (ONNX `LSTM`, `GRU`, `RNN`) unrolled into primitive ops, one
//! time step after another.
//!
//! The autodiff engine and the libtorch interpreter know no recurrent op, but
//! they know every op a step is made of (MatMul, Add, Mul, Sigmoid, Tanh, Relu,
//! Split, Squeeze, Unsqueeze, Concat, Slice, Transpose). Once unrolled, a
//! recurrent network trains on either backend through those ops' rules.
//!
//! The weights stay where the exporter put them: the steps read each direction's
//! and gate's rows from the original W, R, B (and P) at run time, so gradients
//! reach the tensors under their own names (PyTorch's `state_dict` names, or
//! whatever the exporter chose) and the trainer updates those. No weight is
//! copied into a new initializer.

use crate::error::{Error, Result};
use crate::onnx::builder::{attr_int, attr_ints, Emitter, NameSet};
use crate::onnx::tensor::i64_tensor;
use crate::onnx::types::Dim;
use crate::onnx::{attribute, node_label, GraphProto, NodeAttributes, NodeProto};
use crate::ops::shapes::ValueShapes;
use std::collections::HashMap;

/// Rewrites every LSTM, GRU and RNN node of `graph` into primitive ops, time step
/// by time step. Returns the names of the nodes rewritten. Errors name the node,
/// the op and the reason.
///
/// On an error `graph` is left as it was, even when nodes before the refused one
/// could be unrolled.
pub fn unroll(graph: &mut GraphProto, opset: i64) -> Result<Vec<String>> {
    let mut work = graph.clone();
    let mut names = NameSet::of_graph(&work);
    let mut rewritten = Vec::new();
    // Shapes are inferred again after each rewrite: a stacked layer reads the
    // layer below's output, whose shape is known only once that one is unrolled.
    while let Some(index) = work.node.iter().position(is_recurrent) {
        let shapes = ValueShapes::infer(&work, opset);
        let node = work.node[index].clone();
        let cell = Cell::read(&node, &shapes)?;
        let mut unroller = Unroller::new(names, &prefix_of(&node), opset);
        unroller.cell(&cell);
        let b = unroller.b;
        names = b.names;
        work.node.splice(index..=index, b.nodes);
        work.initializer.extend(b.initializers);
        rewritten.push(display_name(&node));
    }
    *graph = work;
    Ok(rewritten)
}

fn is_recurrent(node: &NodeProto) -> bool {
    matches!(node.domain(), "" | "ai.onnx") && matches!(node.op_type(), "LSTM" | "GRU" | "RNN")
}

fn display_name(node: &NodeProto) -> String {
    match node.name() {
        "" => node_label(node),
        name => name.to_string(),
    }
}

/// The emitted values are named after the node they replace, so that a profile
/// or an error in the unrolled graph still points at the layer.
fn prefix_of(node: &NodeProto) -> String {
    let base = match node.name() {
        "" => node.output.first().map_or("recurrent", String::as_str),
        name => name,
    };
    format!("{base}/")
}

fn refuse(node: &NodeProto, reason: impl std::fmt::Display) -> Error {
    Error::patch(format!("{}: {reason}", node_label(node)))
}

// ---------------------------------------------------------------------------
// What a recurrent node computes, read and checked once.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Tanh,
    Relu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Lstm,
    Gru { linear_before_reset: bool },
    Rnn,
}

impl Kind {
    /// Gates stacked in W, R and each half of B.
    fn gates(self) -> i64 {
        match self {
            Kind::Lstm => 4,
            Kind::Gru { .. } => 3,
            Kind::Rnn => 1,
        }
    }

    /// The activations ONNX applies when the node names none, per direction.
    fn default_activations(self) -> &'static [&'static str] {
        match self {
            Kind::Lstm => &["Sigmoid", "Tanh", "Tanh"],
            Kind::Gru { .. } => &["Sigmoid", "Tanh"],
            Kind::Rnn => &["Tanh"],
        }
    }
}

/// One direction of the node: whether it runs back in time, and (RNN only) its
/// activation.
#[derive(Debug, Clone, Copy)]
struct Direction {
    reverse: bool,
    activation: Activation,
}

struct Cell<'n> {
    kind: Kind,
    directions: Vec<Direction>,
    hidden: i64,
    steps: i64,
    /// `layout = 1`: X, initial states and outputs put the batch first.
    batch_first: bool,
    x: &'n str,
    w: &'n str,
    r: &'n str,
    bias: Option<&'n str>,
    initial_h: Option<&'n str>,
    initial_c: Option<&'n str>,
    peepholes: Option<&'n str>,
    y: Option<&'n str>,
    y_h: Option<&'n str>,
    y_c: Option<&'n str>,
}

fn input(node: &NodeProto, index: usize) -> Option<&str> {
    node.input
        .get(index)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

fn output(node: &NodeProto, index: usize) -> Option<&str> {
    node.output
        .get(index)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

fn required<'n>(node: &'n NodeProto, index: usize, what: &str) -> Result<&'n str> {
    input(node, index).ok_or_else(|| refuse(node, format!("input {index} ({what}) is missing")))
}

impl<'n> Cell<'n> {
    fn read(node: &'n NodeProto, shapes: &ValueShapes) -> Result<Cell<'n>> {
        let kind = read_kind(node)?;
        refuse_unsupported_attributes(node)?;
        let batch_first = read_layout(node)?;
        let reverse = read_direction(node)?;
        let activations = read_activations(node, kind, reverse.len())?;
        let directions = reverse
            .iter()
            .zip(activations)
            .map(|(&reverse, activation)| Direction {
                reverse,
                activation,
            })
            .collect::<Vec<_>>();
        let x = required(node, 0, "X")?;
        let w = required(node, 1, "W")?;
        let r = required(node, 2, "R")?;
        let hidden = read_hidden(node, kind, r, directions.len(), shapes)?;
        check_weights(node, kind, w, hidden, directions.len(), shapes)?;
        let steps = read_steps(node, x, batch_first, shapes)?;
        check_sequence_lens(node, steps, shapes)?;
        let is_lstm = kind == Kind::Lstm;
        Ok(Cell {
            kind,
            directions,
            hidden,
            steps,
            batch_first,
            x,
            w,
            r,
            bias: input(node, 3),
            initial_h: input(node, 5),
            initial_c: input(node, 6).filter(|_| is_lstm),
            peepholes: input(node, 7).filter(|_| is_lstm),
            y: output(node, 0),
            y_h: output(node, 1),
            y_c: output(node, 2).filter(|_| is_lstm),
        })
    }
}

fn read_kind(node: &NodeProto) -> Result<Kind> {
    match node.op_type() {
        "LSTM" => Ok(Kind::Lstm),
        "RNN" => Ok(Kind::Rnn),
        "GRU" => match node.int_attr("linear_before_reset", 0) {
            0 => Ok(Kind::Gru {
                linear_before_reset: false,
            }),
            1 => Ok(Kind::Gru {
                linear_before_reset: true,
            }),
            other => Err(refuse(
                node,
                format!("linear_before_reset must be 0 or 1, got {other}"),
            )),
        },
        other => Err(refuse(node, format!("'{other}' is not a recurrent op"))),
    }
}

/// Attributes that change the cell's formulas in ways PyTorch never exports.
fn refuse_unsupported_attributes(node: &NodeProto) -> Result<()> {
    if attribute(node, "clip").is_some() {
        return Err(refuse(
            node,
            "the attribute 'clip' (cell clipping) is not supported; export without clipping",
        ));
    }
    if node.int_attr("input_forget", 0) != 0 {
        return Err(refuse(
            node,
            "the attribute 'input_forget' (coupled input and forget gates) is not supported",
        ));
    }
    for name in ["activation_alpha", "activation_beta"] {
        if attribute(node, name).is_some_and(|a| !a.floats.is_empty()) {
            return Err(refuse(
                node,
                format!(
                    "the attribute '{name}' (parameters of custom activations) is not supported; \
                     only the default activations are"
                ),
            ));
        }
    }
    Ok(())
}

fn read_layout(node: &NodeProto) -> Result<bool> {
    match node.int_attr("layout", 0) {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(refuse(node, format!("layout must be 0 or 1, got {other}"))),
    }
}

/// Per direction, whether it runs back in time.
fn read_direction(node: &NodeProto) -> Result<Vec<bool>> {
    match node.string_attr("direction").unwrap_or("forward") {
        "forward" => Ok(vec![false]),
        "reverse" => Ok(vec![true]),
        "bidirectional" => Ok(vec![false, true]),
        other => Err(refuse(
            node,
            format!("direction must be forward, reverse or bidirectional, got '{other}'"),
        )),
    }
}

/// The default activations (or the same names written out, as exporters do), and
/// for RNN also Relu (PyTorch's `nonlinearity='relu'`).
fn read_activations(node: &NodeProto, kind: Kind, directions: usize) -> Result<Vec<Activation>> {
    let defaults = kind.default_activations();
    let given: Vec<String> = attribute(node, "activations")
        .map(|a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    if given.is_empty() {
        return Ok(vec![Activation::Tanh; directions]);
    }
    let custom = || {
        refuse(
            node,
            format!(
                "custom activations [{}] are not supported; only the defaults ({} per direction{}) are",
                given.join(", "),
                defaults.join(", "),
                if kind == Kind::Rnn { ", or Relu" } else { "" }
            ),
        )
    };
    if given.len() != defaults.len() * directions {
        return Err(custom());
    }
    given
        .chunks(defaults.len())
        .map(|chunk| {
            let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
            match (kind, names.as_slice()) {
                (Kind::Rnn, ["Relu"]) => Ok(Activation::Relu),
                (_, names) if names == defaults => Ok(Activation::Tanh),
                _ => Err(custom()),
            }
        })
        .collect()
}

fn fixed(dim: Option<&Dim>) -> Option<i64> {
    match dim {
        Some(Dim::Fixed(v)) => Some(*v),
        _ => None,
    }
}

/// `hidden_size`, or R's last dimension; checked against R's shape when known.
fn read_hidden(
    node: &NodeProto,
    kind: Kind,
    r: &str,
    directions: usize,
    shapes: &ValueShapes,
) -> Result<i64> {
    let r_shape = shapes.shape(r);
    let from_r = r_shape.and_then(|s| fixed(s.get(2)));
    let hidden = match attribute(node, "hidden_size").and_then(|a| a.i) {
        Some(h) => h,
        None => from_r.ok_or_else(|| {
            refuse(
                node,
                format!(
                    "hidden_size is not given and the shape of R '{r}' is not known statically"
                ),
            )
        })?,
    };
    if hidden <= 0 {
        return Err(refuse(
            node,
            format!("hidden_size must be positive, got {hidden}"),
        ));
    }
    let expected = [directions as i64, kind.gates() * hidden, hidden];
    check_dims(node, "R", r, r_shape, &expected)?;
    Ok(hidden)
}

/// W's leading dimensions: a mismatch would only show as a wrong split at run time.
fn check_weights(
    node: &NodeProto,
    kind: Kind,
    w: &str,
    hidden: i64,
    directions: usize,
    shapes: &ValueShapes,
) -> Result<()> {
    let Some(shape) = shapes.shape(w) else {
        return Ok(());
    };
    let expected = [directions as i64, kind.gates() * hidden];
    check_dims(node, "W", w, Some(&shape[..shape.len().min(2)]), &expected)
}

/// Each statically known dimension of `shape` equals `expected`'s.
fn check_dims(
    node: &NodeProto,
    role: &str,
    name: &str,
    shape: Option<&[Dim]>,
    expected: &[i64],
) -> Result<()> {
    let Some(shape) = shape else { return Ok(()) };
    let mismatch = shape.len() != expected.len()
        || shape
            .iter()
            .zip(expected)
            .any(|(d, &e)| fixed(Some(d)).is_some_and(|v| v != e));
    if mismatch {
        let dims: Vec<String> = shape.iter().map(Dim::to_string).collect();
        return Err(refuse(
            node,
            format!(
                "{role} '{name}' has shape [{}], but the direction count, gate count and hidden size \
                 need {expected:?}",
                dims.join(", ")
            ),
        ));
    }
    Ok(())
}

fn read_steps(node: &NodeProto, x: &str, batch_first: bool, shapes: &ValueShapes) -> Result<i64> {
    let axis = usize::from(batch_first);
    let steps = shapes
        .shape(x)
        .filter(|s| s.len() == 3)
        .and_then(|s| fixed(s.get(axis)));
    match steps {
        Some(steps) if steps > 0 => Ok(steps),
        Some(steps) => Err(refuse(
            node,
            format!("the sequence length of input '{x}' is {steps}; an empty sequence has no steps to unroll"),
        )),
        None => Err(refuse(
            node,
            format!(
                "the sequence length of input '{x}' is not known statically; export with a fixed \
                 sequence length"
            ),
        )),
    }
}

/// Per-sequence lengths would need masking; they are accepted only when every
/// one provably equals the full length, which changes nothing.
fn check_sequence_lens(node: &NodeProto, steps: i64, shapes: &ValueShapes) -> Result<()> {
    let Some(lens) = input(node, 4) else {
        return Ok(());
    };
    match shapes.const_ints(lens) {
        Some(values) if values.iter().all(|&v| v == steps) => Ok(()),
        _ => Err(refuse(
            node,
            format!(
                "sequence_lens '{lens}' is not provably equal to the sequence length {steps} for every \
                 sequence; sequences of different lengths are not supported (export with \
                 sequence_lens absent, or padded sequences of one length)"
            ),
        )),
    }
}

// ---------------------------------------------------------------------------
// The emitted steps.

/// One direction's weights as the steps use them: transposed for `x @ W^T`.
struct Weights {
    /// `W^T`, [input, gates * hidden].
    input: String,
    /// `R^T`, [hidden, gates * hidden]; for a GRU with the reset before the
    /// product, only the update and reset gates' columns.
    recurrent: String,
    /// `Wb`, [gates * hidden].
    input_bias: Option<String>,
    /// `Rb`, over the same gates as `recurrent`.
    recurrent_bias: Option<String>,
    /// A GRU's candidate `Rh^T` and `Rbh` when the reset gate scales `h` before
    /// the product (`linear_before_reset = 0`): the product cannot be shared.
    candidate: Option<(String, Option<String>)>,
    /// LSTM's peepholes `[Pi, Po, Pf]`, each [hidden].
    peepholes: Option<Vec<String>>,
}

/// The hidden states of one direction, in time order, and its final states.
struct Trajectory {
    hidden: Vec<String>,
    last_h: String,
    last_c: Option<String>,
}

struct Unroller {
    b: Emitter,
    prefix: String,
    /// Integer constants (axes, split sizes, slice bounds), one initializer each.
    ints: HashMap<Vec<i64>, String>,
}

impl Unroller {
    fn new(names: NameSet, prefix: &str, opset: i64) -> Self {
        Unroller {
            b: Emitter::new(names, prefix, opset),
            prefix: prefix.to_string(),
            ints: HashMap::new(),
        }
    }

    fn cell(&mut self, cell: &Cell) {
        let xs = if cell.batch_first {
            self.transpose(cell.x, &[1, 0, 2], "x_time_major")
        } else {
            cell.x.to_string()
        };
        let trajectories: Vec<Trajectory> = (0..cell.directions.len())
            .map(|d| self.direction(cell, d, &xs))
            .collect();
        self.outputs(cell, &trajectories);
    }

    fn direction(&mut self, cell: &Cell, d: usize, xs: &str) -> Trajectory {
        let weights = self.weights(cell, d);
        let inputs = self.step_inputs(cell, &weights, xs);
        let state_axis = i64::from(cell.batch_first);
        let mut h = cell
            .initial_h
            .map(|h0| self.pick(h0, d, cell.directions.len(), state_axis, "h0"));
        let mut c = cell
            .initial_c
            .map(|c0| self.pick(c0, d, cell.directions.len(), state_axis, "c0"));
        let direction = cell.directions[d];
        let order: Vec<usize> = if direction.reverse {
            (0..inputs.len()).rev().collect()
        } else {
            (0..inputs.len()).collect()
        };
        let mut hidden = vec![String::new(); inputs.len()];
        for &t in &order {
            let (h_next, c_next) = self.step(
                cell,
                &weights,
                direction,
                &inputs[t],
                h.as_deref(),
                c.as_deref(),
            );
            hidden[t] = h_next.clone();
            h = Some(h_next);
            c = c_next;
        }
        // The last step run is the first in time when running backwards.
        let last = order.last().map_or(0, |&t| t);
        Trajectory {
            last_h: hidden[last].clone(),
            last_c: c,
            hidden,
        }
    }

    /// One time step: the next hidden state, and LSTM's next cell state.
    fn step(
        &mut self,
        cell: &Cell,
        weights: &Weights,
        direction: Direction,
        x_t: &str,
        h: Option<&str>,
        c: Option<&str>,
    ) -> (String, Option<String>) {
        match cell.kind {
            Kind::Lstm => {
                let (h, c) = self.lstm_step(cell, weights, x_t, h, c);
                (h, Some(c))
            }
            Kind::Gru {
                linear_before_reset,
            } => (
                self.gru_step(cell, weights, x_t, h, linear_before_reset),
                None,
            ),
            Kind::Rnn => (self.rnn_step(weights, x_t, h, direction.activation), None),
        }
    }

    /// Direction `d`'s slices of W, R, B and P, taken from the originals at run time.
    fn weights(&mut self, cell: &Cell, d: usize) -> Weights {
        let n = cell.directions.len();
        let w = self.pick(cell.w, d, n, 0, "W");
        let r = self.pick(cell.r, d, n, 0, "R");
        let gates = cell.kind.gates() * cell.hidden;
        let (input_bias, recurrent_bias) = match cell.bias {
            Some(bias) => {
                let bias = self.pick(bias, d, n, 0, "B");
                let halves = self.split(&bias, -1, &[gates, gates], "B_half");
                (Some(halves[0].clone()), Some(halves[1].clone()))
            }
            None => (None, None),
        };
        let peepholes = cell.peepholes.map(|p| {
            let p = self.pick(p, d, n, 0, "P");
            let h = cell.hidden;
            self.split(&p, -1, &[h, h, h], "P_gate")
        });
        let mut weights = Weights {
            input: self.transpose(&w, &[1, 0], "W_t"),
            recurrent: self.transpose(&r, &[1, 0], "R_t"),
            input_bias,
            recurrent_bias,
            candidate: None,
            peepholes,
        };
        let reset_before_product = cell.kind
            == Kind::Gru {
                linear_before_reset: false,
            };
        if reset_before_product {
            self.set_apart_candidate(&mut weights, cell.hidden);
        }
        weights
    }

    /// Splits the GRU candidate's columns off `R^T` and `Rb`, once per direction.
    fn set_apart_candidate(&mut self, weights: &mut Weights, hs: i64) {
        let r = self.split(&weights.recurrent, -1, &[2 * hs, hs], "R_t_part");
        let rb = weights
            .recurrent_bias
            .clone()
            .map(|rb| self.split(&rb, -1, &[2 * hs, hs], "Rb_part"));
        weights.recurrent = r[0].clone();
        weights.recurrent_bias = rb.as_ref().map(|parts| parts[0].clone());
        weights.candidate = Some((r[1].clone(), rb.map(|parts| parts[1].clone())));
    }

    /// `x_t @ W^T` (plus the biases that need no reset gate) for every step at
    /// once: one MatMul over the sequence, then one Split into steps.
    fn step_inputs(&mut self, cell: &Cell, weights: &Weights, xs: &str) -> Vec<String> {
        let projected = self.b.op("MatMul", &[xs, &weights.input], vec![], "x_W");
        let bias = match cell.kind {
            // GRU keeps Rb apart: it sits inside the reset gate's product.
            Kind::Gru { .. } => weights.input_bias.clone(),
            Kind::Lstm | Kind::Rnn => match (&weights.input_bias, &weights.recurrent_bias) {
                (Some(wb), Some(rb)) => Some(self.b.add(wb, rb, "bias")),
                _ => None,
            },
        };
        let projected = match bias {
            Some(bias) => self.b.add(&projected, &bias, "x_W_b"),
            None => projected,
        };
        if cell.steps == 1 {
            return vec![self.squeeze(&projected, &[0], "x_t")];
        }
        let ones = vec![1; cell.steps as usize];
        self.split(&projected, 0, &ones, "x_step")
            .into_iter()
            .map(|piece| self.squeeze(&piece, &[0], "x_t"))
            .collect()
    }

    fn lstm_step(
        &mut self,
        cell: &Cell,
        weights: &Weights,
        x_t: &str,
        h: Option<&str>,
        c: Option<&str>,
    ) -> (String, String) {
        let recurrent = self.recurrent(h, &weights.recurrent, None);
        let pre = self.plus(x_t, recurrent.as_deref(), "gates");
        let hs = cell.hidden;
        let gates = self.split(&pre, -1, &[hs, hs, hs, hs], "gate");
        let (mut i, mut o, mut f) = (gates[0].clone(), gates[1].clone(), gates[2].clone());
        let peepholes = weights.peepholes.as_deref();
        if let (Some(p), Some(c)) = (peepholes, c) {
            let pi = self.b.mul(&p[0], c, "peep_i");
            i = self.b.add(&i, &pi, "i_peep");
            let pf = self.b.mul(&p[2], c, "peep_f");
            f = self.b.add(&f, &pf, "f_peep");
        }
        let i = self.b.op("Sigmoid", &[&i], vec![], "i");
        let f = self.b.op("Sigmoid", &[&f], vec![], "f");
        let g = self.b.op("Tanh", &[&gates[3]], vec![], "g");
        let mut c_next = self.b.mul(&i, &g, "i_g");
        if let Some(c) = c {
            let kept = self.b.mul(&f, c, "f_c");
            c_next = self.b.add(&kept, &c_next, "c");
        }
        if let Some(p) = peepholes {
            let po = self.b.mul(&p[1], &c_next, "peep_o");
            o = self.b.add(&o, &po, "o_peep");
        }
        let o = self.b.op("Sigmoid", &[&o], vec![], "o");
        let squashed = self.b.op("Tanh", &[&c_next], vec![], "tanh_c");
        let h_next = self.b.mul(&o, &squashed, "h");
        (h_next, c_next)
    }

    fn gru_step(
        &mut self,
        cell: &Cell,
        weights: &Weights,
        x_t: &str,
        h: Option<&str>,
        linear_before_reset: bool,
    ) -> String {
        let hs = cell.hidden;
        let x = self.split(x_t, -1, &[hs, hs, hs], "x_gate");
        // The update and reset gates' recurrent terms, and (linear before reset)
        // the candidate's: one `h @ R^T + Rb` over the gates that share it.
        let shared: usize = if linear_before_reset { 3 } else { 2 };
        let recurrent = self.recurrent(h, &weights.recurrent, weights.recurrent_bias.as_deref());
        let parts = recurrent.map(|rec| self.split(&rec, -1, &vec![hs; shared], "h_R_gate"));
        let part = |k: usize| parts.as_ref().map(|p| p[k].clone());
        let z_pre = self.plus(&x[0], part(0).as_deref(), "z_pre");
        let z = self.b.op("Sigmoid", &[&z_pre], vec![], "z");
        let candidate_recurrent = if linear_before_reset {
            // `r * (h @ Rh^T + Rbh)`: without a previous state or Rb the product is 0.
            part(2).map(|rh| {
                let r = self.reset_gate(&x[1], part(1).as_deref());
                self.b.mul(&r, &rh, "r_h_R")
            })
        } else {
            // `(r * h) @ Rh^T + Rbh`.
            let reset_h = h.map(|h| {
                let r = self.reset_gate(&x[1], part(1).as_deref());
                self.b.mul(&r, h, "r_h")
            });
            match &weights.candidate {
                Some((r_t, rb)) => self.recurrent(reset_h.as_deref(), r_t, rb.as_deref()),
                None => None,
            }
        };
        let candidate_pre = self.plus(&x[2], candidate_recurrent.as_deref(), "h_tilde_pre");
        let candidate = self.b.op("Tanh", &[&candidate_pre], vec![], "h_tilde");
        // `(1 - z) * h~ + z * h` written as `h~ + z * (h - h~)`: no constant 1 to
        // emit, and with a zero previous state `h~ - z * h~`.
        match h {
            Some(h) => {
                let towards = self.b.sub(h, &candidate, "h_minus_h_tilde");
                let step = self.b.mul(&z, &towards, "z_step");
                self.b.add(&candidate, &step, "h")
            }
            None => {
                let step = self.b.mul(&z, &candidate, "z_h_tilde");
                self.b.sub(&candidate, &step, "h")
            }
        }
    }

    fn reset_gate(&mut self, x_r: &str, recurrent: Option<&str>) -> String {
        let pre = self.plus(x_r, recurrent, "r_pre");
        self.b.op("Sigmoid", &[&pre], vec![], "r")
    }

    fn rnn_step(
        &mut self,
        weights: &Weights,
        x_t: &str,
        h: Option<&str>,
        activation: Activation,
    ) -> String {
        let recurrent = self.recurrent(h, &weights.recurrent, None);
        let pre = self.plus(x_t, recurrent.as_deref(), "h_pre");
        let op = match activation {
            Activation::Tanh => "Tanh",
            Activation::Relu => "Relu",
        };
        self.b.op(op, &[&pre], vec![], "h")
    }

    /// `h @ R^T + Rb`; without a previous state (zeros) only `Rb` remains, and
    /// without either nothing does.
    fn recurrent(&mut self, h: Option<&str>, r_t: &str, bias: Option<&str>) -> Option<String> {
        match (h, bias) {
            (Some(h), bias) => {
                let product = self.b.op("MatMul", &[h, r_t], vec![], "h_R");
                Some(self.plus(&product, bias, "h_R_b"))
            }
            (None, Some(bias)) => Some(bias.to_string()),
            (None, None) => None,
        }
    }

    fn plus(&mut self, a: &str, b: Option<&str>, hint: &str) -> String {
        match b {
            Some(b) => self.b.add(a, b, hint),
            None => a.to_string(),
        }
    }

    // ---- outputs

    fn outputs(&mut self, cell: &Cell, trajectories: &[Trajectory]) {
        // Y is [seq, directions, batch, hidden], or [batch, seq, directions,
        // hidden] batch first; Y_h and Y_c [directions, batch, hidden] or [batch,
        // directions, hidden].
        let (time_axis, direction_axis) = if cell.batch_first { (1, 2) } else { (0, 1) };
        let state_axis = i64::from(cell.batch_first);
        if let Some(y) = cell.y {
            let steps: Vec<Vec<String>> = trajectories
                .iter()
                .map(|t| {
                    t.hidden
                        .iter()
                        .map(|h| self.unsqueeze(h, &[time_axis, direction_axis], "y_t"))
                        .collect()
                })
                .collect();
            match steps.as_slice() {
                [only] => self.concat_into(only, time_axis, y),
                _ => {
                    let per_direction: Vec<String> = steps
                        .iter()
                        .map(|s| self.concat(s, time_axis, "y_direction"))
                        .collect();
                    self.concat_into(&per_direction, direction_axis, y);
                }
            }
        }
        if let Some(y_h) = cell.y_h {
            let last: Vec<&str> = trajectories.iter().map(|t| t.last_h.as_str()).collect();
            self.stack_into(&last, state_axis, y_h);
        }
        if let Some(y_c) = cell.y_c {
            let last: Vec<&str> = trajectories
                .iter()
                .filter_map(|t| t.last_c.as_deref())
                .collect();
            self.stack_into(&last, state_axis, y_c);
        }
    }

    fn stack_into(&mut self, states: &[&str], axis: i64, output: &str) {
        let parts: Vec<String> = states
            .iter()
            .map(|s| self.unsqueeze(s, &[axis], "state"))
            .collect();
        self.concat_into(&parts, axis, output);
    }

    fn concat(&mut self, parts: &[String], axis: i64, hint: &str) -> String {
        if let [only] = parts {
            return only.clone();
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.b
            .op("Concat", &refs, vec![attr_int("axis", axis)], hint)
    }

    fn concat_into(&mut self, parts: &[String], axis: i64, output: &str) {
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        match refs.as_slice() {
            [only] => self.b.op_into("Identity", &[only], vec![], output),
            _ => self
                .b
                .op_into("Concat", &refs, vec![attr_int("axis", axis)], output),
        }
    }

    // ---- primitive ops in the form the opset expects

    fn ints(&mut self, values: &[i64]) -> String {
        if let Some(name) = self.ints.get(values) {
            return name.clone();
        }
        let tensor = i64_tensor("", &[values.len() as i64], values);
        let name = self.b.constant("const", tensor);
        self.ints.insert(values.to_vec(), name.clone());
        name
    }

    /// Direction `d` of a tensor stacking `directions` along `axis`, that axis
    /// dropped.
    fn pick(&mut self, tensor: &str, d: usize, directions: usize, axis: i64, hint: &str) -> String {
        let sliced = if directions == 1 {
            tensor.to_string()
        } else {
            let d = d as i64;
            let (starts, ends, axes) = (self.ints(&[d]), self.ints(&[d + 1]), self.ints(&[axis]));
            self.b
                .op("Slice", &[tensor, &starts, &ends, &axes], vec![], hint)
        };
        self.squeeze(&sliced, &[axis], &format!("{hint}_{d}"))
    }

    fn transpose(&mut self, x: &str, perm: &[i64], hint: &str) -> String {
        self.b
            .op("Transpose", &[x], vec![attr_ints("perm", perm)], hint)
    }

    fn squeeze(&mut self, x: &str, axes: &[i64], hint: &str) -> String {
        self.with_axes("Squeeze", x, axes, hint)
    }

    fn unsqueeze(&mut self, x: &str, axes: &[i64], hint: &str) -> String {
        self.with_axes("Unsqueeze", x, axes, hint)
    }

    /// Squeeze and Unsqueeze take their axes as an input from opset 13.
    fn with_axes(&mut self, op: &str, x: &str, axes: &[i64], hint: &str) -> String {
        if self.b.opset >= 13 {
            let axes = self.ints(axes);
            self.b.op(op, &[x, &axes], vec![], hint)
        } else {
            self.b.op(op, &[x], vec![attr_ints("axes", axes)], hint)
        }
    }

    /// Split along `axis` into parts of `sizes` (an input from opset 13).
    fn split(&mut self, x: &str, axis: i64, sizes: &[i64], hint: &str) -> Vec<String> {
        let outputs: Vec<String> = (0..sizes.len())
            .map(|_| self.b.names.fresh(&format!("{}{hint}", self.prefix)))
            .collect();
        let mut attrs = vec![attr_int("axis", axis)];
        let mut inputs = vec![x.to_string()];
        if self.b.opset >= 13 {
            inputs.push(self.ints(sizes));
        } else {
            attrs.push(attr_ints("split", sizes));
        }
        let name = self.b.names.fresh(&format!("{}Split", self.prefix));
        self.b.nodes.push(NodeProto {
            name: Some(name),
            op_type: Some("Split".to_string()),
            input: inputs,
            output: outputs.clone(),
            attribute: attrs,
            ..Default::default()
        });
        outputs
    }
}
