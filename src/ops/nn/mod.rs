//! Neural-network ops: convolution, pooling, normalisation, dropout.
//! Each facet of these ops lives in its own file; the registry
//! ([`crate::ops::registry`]) ties them together per op.

pub mod batchnorm;
pub mod gradient;
pub mod interpolation;
pub mod shape;
#[cfg(feature = "torch")]
pub mod torch;
pub mod window;
