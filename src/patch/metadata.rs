//! The loss configuration recorded in a patched model's `metadata_props`, so later
//! commands (`inspect`, `compile`, `train`) need no flags again. The record and its
//! keys belong to the graph contract ([`crate::ldam::contract`]); these names stay
//! for callers of earlier versions.

use crate::error::Result;
use crate::onnx::{ModelProto, StringStringEntryProto};

pub use crate::ldam::contract::keys::PREFIX;
pub use crate::ldam::contract::{is_patched, parse_counts, PatchRecord};

/// The metadata entries for a patch, in a fixed order.
pub fn entries(record: &PatchRecord) -> Vec<StringStringEntryProto> {
    record.entries()
}

/// Reads the patch record back; `None` for a model that was never patched.
pub fn read(model: &ModelProto) -> Result<Option<PatchRecord>> {
    PatchRecord::read(model)
}
