//! Everything the tool knows about ONNX operators, one op at a time.
//!
//! [`registry`] holds the one table of ops: each is defined once there with all
//! its facets — the opset it needs, its gradient rule (or an explicit
//! non-differentiable mark), its libtorch kernel — implemented in its family's
//! folder (`elementwise/`, `linalg/`, `loss/`, `nn/`, `reduce/`, `movement/`), one
//! file per facet. The contexts the facets are written against live beside the
//! registry: [`grad::GradCtx`] for gradient rules; for libtorch kernels,
//! `kernel::NodeCtx` (the node, its attributes and fixed inputs, read once when
//! the interpreter's program is built) and `kernel::OpCtx` (the tensors of one
//! execution).

pub mod grad;
#[cfg(feature = "torch")]
pub mod kernel;
pub mod registry;
pub mod shapes;
#[cfg(feature = "torch")]
pub mod torch_tensor;
pub mod validate;

pub mod elementwise;
pub mod linalg;
pub mod loss;
pub mod movement;
pub mod nn;
pub mod reduce;

pub use registry::{find, Gradient, OpDef};
