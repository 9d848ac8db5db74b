//! Data-movement and shape ops: reshaping, transposing, slicing, padding, gathering, and the shape arithmetic around them.
//! Each facet of these ops lives in its own file; the registry
//! ([`crate::ops::registry`]) ties them together per op.

pub mod gradient;
pub mod shape;
#[cfg(feature = "torch")]
pub mod torch;
