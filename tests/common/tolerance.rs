//! Cross-runtime tolerances derived from float32 accumulation, not tuned.
//!
//! Two runtimes (ONNX Runtime, libtorch, or one of them on another instruction set)
//! compute the same float32 network with different kernels: different summation
//! orders, blockings and fused multiply-adds. Neither is exact, so each is compared
//! against the other through the error bound both satisfy.
//!
//! **Per reduction.** A float32 sum or dot product of length K has relative error
//! at most `K u` times its condition `sum |x_i y_i| / |sum x_i y_i|` in the worst
//! case (Higham, *Accuracy and Stability of Numerical Algorithms*, eq. 3.5), with
//! `u = 2^-24`. The worst case needs every rounding to push the same way; modelling
//! roundings as independent and mean-zero, the error is at most `LAMBDA sqrt(K) u`
//! except with probability `2K exp(-LAMBDA^2 / 2)` (Higham and Mary, "A new approach
//! to probabilistic rounding error analysis", SIAM J. Sci. Comput. 41(5), 2019,
//! Thm. 2.4). A normwise error is the root mean square of such element errors, so
//! `LAMBDA = 4` standard deviations covers even tensors of a few elements. An
//! elementwise op adds at most `u` (K = 1).
//!
//! **Through a network.** A relative perturbation of one layer's output moves the
//! network's output by an amplification factor. The bundled networks are
//! normalised (BatchNorm, a unit-norm cosine head) or shallow, and at
//! initialisation the amplifications and the reductions' conditions are O(1); their
//! product is taken as at most `CONDITION = 4`, the one assumption here, the same
//! for every model and machine. To first order the errors of successive layers add.
//!
//! **Forward values** (logits, loss, batch statistics) depend on the forward
//! reductions: `forward = sum over nodes of sqrt(K)`, with K the node's reduction
//! length (Conv: `C/group * kh * kw`; Gemm/MatMul: the inner dimension;
//! BatchNormalization in training: mean and variance over `N * H * W`; pooling: the
//! window; Softmax/LogSoftmax/SoftmaxCrossEntropyLoss: the classes and the batch) and
//! 1 for every other node. Summing over all nodes bounds the sum over any path.
//! **Gradients** add the backward pass: the input-gradient reductions, which
//! propagate to every layer below (`backward`: Conv `M/group * kh * kw`, Gemm/MatMul
//! the output width, BatchNorm's two sums over `N * H * W`), and the largest
//! weight-gradient reduction (`leaf`: Conv `N * Ho * Wo`, Gemm/MatMul the batch),
//! which feeds only its own parameter and so counts once, not summed.
//!
//! **Two runtimes**, each within the bound of the exact value, differ by at most
//! twice it: `forward_bound = 2 * CONDITION * LAMBDA * u * forward` and
//! `gradient_bound = 2 * CONDITION * LAMBDA * u * (forward + backward + leaf)`.
//!
//! **Gates.** The bound assumes both runtimes take the same branch. A ReLU or
//! MaxPool gate flips where its input lies within the forward error of zero: a
//! fraction `p <= 2 * rho * forward_bound` of the gates, with `rho <= 1/2` the density
//! at zero of unit-normalised pre-activations (a standard normal's is 0.40). Each
//! flip changes one term of the gradient's sums, so the flipped terms' share of the
//! gradient's norm is about `sqrt(p)`: gated networks get
//! `gradient_bound + sqrt(forward_bound)` on gradients.

use ldam_onnx::onnx::types::Dim;
use ldam_onnx::onnx::{attr_int, ModelProto};
use ldam_onnx::ops::shapes::ValueShapes;

/// Unit roundoff of float32 (round to nearest).
pub const UNIT_ROUNDOFF: f64 = 5.960_464_477_539_063e-8;

/// Unit roundoff of TF32 (10-bit mantissa), which cuDNN may use for float32
/// convolutions on GPUs.
pub const TF32_UNIT_ROUNDOFF: f64 = 4.882_812_5e-4;

/// Standard deviations of the probabilistic rounding bound (see above).
pub const LAMBDA: f64 = 4.0;

/// Bound on the product of layer amplification and reduction condition (see above).
pub const CONDITION: f64 = 4.0;

/// `||actual - expected||_2 / ||expected||_2`, with `floor` as the least norm the
/// denominator takes (for tensors that are zero in exact arithmetic). A NaN or an
/// infinity in either tensor makes the error infinite, so that no bound passes it
/// however it is compared.
pub fn normwise_error(actual: &[f32], expected: &[f32], floor: f64) -> f64 {
    assert_eq!(actual.len(), expected.len(), "tensor lengths differ");
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&a, &e) in actual.iter().zip(expected) {
        if !(a.is_finite() && e.is_finite()) {
            return f64::INFINITY;
        }
        diff += (f64::from(a) - f64::from(e)).powi(2);
        norm += f64::from(e).powi(2);
    }
    diff.sqrt() / norm.sqrt().max(floor)
}

/// Whether `error` is within `bound`: NaN and infinity never are (`error > bound`
/// is false for a NaN, which is why checks are written this way round).
pub fn within(error: f64, bound: f64) -> bool {
    error.is_finite() && error <= bound
}

/// The largest of `errors`, a NaN counting as larger than everything (`f64::max`
/// and `f32::max` drop NaNs: a fold with them reports the other values).
pub fn worst(errors: impl IntoIterator<Item = f64>) -> f64 {
    errors.into_iter().fold(0.0, |w, e| {
        if e.is_nan() || w.is_nan() {
            f64::NAN
        } else {
            w.max(e)
        }
    })
}

/// The largest elementwise difference `|a - b|`, NaN when either holds a NaN.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "tensor lengths differ");
    worst(
        a.iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs()),
    )
}

/// The 2-norm of a tensor, in float64.
pub fn norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| f64::from(v).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The accumulation of one training step of a network, as the module
/// documentation defines it (sums of `sqrt(K)`).
#[derive(Debug, Clone, Copy)]
pub struct Accumulation {
    pub forward: f64,
    pub backward: f64,
    pub leaf: f64,
    /// Whether the network has gates (Relu, MaxPool) whose branch rounding can flip.
    pub gated: bool,
    /// The arithmetic's unit roundoff: float32's, unless a runtime computes in less.
    pub unit_roundoff: f64,
}

impl Accumulation {
    /// Measures `model` (a patched or plain classifier) at batch size `batch`.
    pub fn of(model: &ModelProto, batch: i64) -> Accumulation {
        let graph = model.graph.as_ref().expect("the model has a graph");
        let opset = ldam_onnx::onnx::default_opset(model).expect("an opset is imported");
        let shapes = ValueShapes::infer(graph, opset);
        let dims = |name: &str| -> Vec<f64> {
            shapes
                .shape(name)
                .unwrap_or_else(|| panic!("shape of '{name}' is inferred"))
                .iter()
                .map(|d| match d {
                    Dim::Fixed(v) => *v as f64,
                    _ => batch as f64,
                })
                .collect()
        };
        let mut total = Accumulation {
            forward: 0.0,
            backward: 0.0,
            leaf: 0.0,
            gated: false,
            unit_roundoff: UNIT_ROUNDOFF,
        };
        for node in &graph.node {
            // Reduction lengths: forward, input gradient, weight gradient.
            let (forward, backward, leaf) = match node.op_type() {
                "Conv" => {
                    let w = dims(&node.input[1]);
                    let y = dims(&node.output[0]);
                    let group = attr_int(node, "group", 1) as f64;
                    let window: f64 = w[2..].iter().product();
                    let per_image: f64 = y[2..].iter().product();
                    (w[1] * window, w[0] / group * window, y[0] * per_image)
                }
                "Gemm" | "MatMul" => {
                    let a = dims(&node.input[0]);
                    let y = dims(&node.output[0]);
                    let trans_a = node.op_type() == "Gemm" && attr_int(node, "transA", 0) == 1;
                    let inner = if trans_a {
                        a[a.len() - 2]
                    } else {
                        a[a.len() - 1]
                    };
                    let rows: f64 = y[..y.len() - 1].iter().product();
                    (inner, y[y.len() - 1], rows)
                }
                "BatchNormalization" => {
                    let x = dims(&node.input[0]);
                    let per_channel = x[0] * x[2..].iter().product::<f64>();
                    (per_channel, per_channel, per_channel)
                }
                "GlobalAveragePool" | "GlobalMaxPool" => {
                    let x = dims(&node.input[0]);
                    (x[2..].iter().product(), 1.0, 0.0)
                }
                "AveragePool" | "MaxPool" => {
                    let window = ldam_onnx::onnx::attribute(node, "kernel_shape")
                        .map(|a| a.ints.iter().product::<i64>() as f64)
                        .unwrap_or(1.0);
                    (window, window, 0.0)
                }
                "Softmax" | "LogSoftmax" | "SoftmaxCrossEntropyLoss" => {
                    let x = dims(&node.input[0]);
                    (x[x.len() - 1] + x[0], x[x.len() - 1] + x[0], 0.0)
                }
                "ReduceSum" | "ReduceMean" | "ReduceL2" => {
                    let x = dims(&node.input[0]);
                    let y = dims(&node.output[0]);
                    let reduced = x.iter().product::<f64>() / y.iter().product::<f64>().max(1.0);
                    (reduced, 1.0, 0.0)
                }
                _ => (1.0, 1.0, 0.0),
            };
            // BatchNorm reduces twice each way (mean and variance; two sums back).
            let twice = if node.op_type() == "BatchNormalization" {
                2.0
            } else {
                1.0
            };
            total.forward += twice * f64::sqrt(forward);
            total.backward += twice * f64::sqrt(backward);
            total.leaf = total.leaf.max(f64::sqrt(leaf));
            total.gated |= matches!(node.op_type(), "Relu" | "MaxPool");
        }
        total
    }

    fn bound(&self, accumulation: f64) -> f64 {
        2.0 * CONDITION * LAMBDA * self.unit_roundoff * accumulation
    }

    /// Two runtimes' forward values (logits, loss, batch statistics) differ by at
    /// most this, normwise relative.
    pub fn forward_bound(&self) -> f64 {
        self.bound(self.forward)
    }

    /// Two runtimes' gradients differ by at most this, normwise relative; gated
    /// networks add the flipped gates' share (module documentation).
    pub fn gradient_bound(&self) -> f64 {
        let rounding = self.bound(self.forward + self.backward + self.leaf);
        if self.gated {
            rounding + self.forward_bound().sqrt()
        } else {
            rounding
        }
    }
}
