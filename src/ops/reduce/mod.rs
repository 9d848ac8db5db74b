//! Reductions and Lp normalisation.
//! Each facet of these ops lives in its own file; the registry
//! ([`crate::ops::registry`]) ties them together per op.

pub mod gradient;
pub mod shape;
#[cfg(feature = "torch")]
pub mod torch;
