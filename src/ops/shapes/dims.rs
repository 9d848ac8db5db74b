//! Dimension arithmetic and small integer-tensor helpers shared by the shape rules.

use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::tensor::{f32_values, i64_values, is_external, INT64};
use crate::onnx::types::Dim;
use crate::onnx::{attribute, NodeProto, TensorProto};
use std::collections::HashSet;

/// Broadcasts one dimension pair: 1 yields to the other, equal dims stay, a fixed
/// size above 1 decides (the other must be 1 or equal), anything else is unknown.
pub(crate) fn broadcast_dim(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Fixed(1), other) | (other, Dim::Fixed(1)) => other.clone(),
        (x, y) if x == y => x.clone(),
        (Dim::Fixed(_), Dim::Fixed(_)) => Dim::Unknown,
        (Dim::Fixed(k), _) | (_, Dim::Fixed(k)) => Dim::Fixed(*k),
        _ => Dim::Unknown,
    }
}

pub(crate) fn broadcast_shapes(shapes: &[&[Dim]]) -> Vec<Dim> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    (0..rank)
        .map(|i| {
            shapes.iter().fold(Dim::Fixed(1), |acc, s| {
                let dim = (i + s.len())
                    .checked_sub(rank)
                    .map_or(Dim::Fixed(1), |k| s[k].clone());
                broadcast_dim(&acc, &dim)
            })
        })
        .collect()
}

/// Product of dimensions: exact when fixed, a lone symbol times ones keeps it.
pub(crate) fn dim_product(dims: &[Dim]) -> Dim {
    dims.iter()
        .fold(Dim::Fixed(1), |acc, d| dim_arith("Mul", &acc, d))
}

/// Sum along a concatenation axis: exact when fixed, a lone symbol plus zeros keeps it.
pub(crate) fn dim_sum(dims: &[Dim]) -> Dim {
    dims.iter()
        .fold(Dim::Fixed(0), |acc, d| dim_arith("Add", &acc, d))
}

/// A dimension grown (or shrunk) by a fixed amount.
pub(crate) fn dim_offset(dim: &Dim, amount: i64) -> Dim {
    match dim_arith("Add", dim, &Dim::Fixed(amount)) {
        Dim::Fixed(v) if v < 0 => Dim::Unknown,
        other => other,
    }
}

/// Integer arithmetic on known values; a symbol survives only the identities
/// (`N + 0`, `N - 0`, `N * 1`, `N / 1`, `max/min(N, N)`).
pub(crate) fn dim_arith(op: &str, a: &Dim, b: &Dim) -> Dim {
    use Dim::{Fixed, Symbolic};
    match (a, b) {
        (Fixed(x), Fixed(y)) => {
            let value = match op {
                "Add" => x.checked_add(*y),
                "Sub" => x.checked_sub(*y),
                "Mul" => x.checked_mul(*y),
                // ONNX integer Div truncates toward zero, as Rust's.
                "Div" => x.checked_div(*y),
                "Max" => Some(*x.max(y)),
                "Min" => Some(*x.min(y)),
                "Equal" => Some(i64::from(x == y)),
                // ONNX integer Mod (fmod=0) takes the divisor's sign, as
                // Python's %: the legacy exporter normalises axes with it.
                "Mod" => x.checked_rem(*y).map(|r| {
                    if r != 0 && (r < 0) != (*y < 0) {
                        r + y
                    } else {
                        r
                    }
                }),
                _ => None,
            };
            value.map_or(Dim::Unknown, Fixed)
        }
        (Symbolic(_), Fixed(0)) if matches!(op, "Add" | "Sub") => a.clone(),
        (Fixed(0), Symbolic(_)) if op == "Add" => b.clone(),
        (Symbolic(_), Fixed(1)) if matches!(op, "Mul" | "Div") => a.clone(),
        (Fixed(1), Symbolic(_)) if op == "Mul" => b.clone(),
        (Symbolic(x), Symbolic(y)) if x == y && matches!(op, "Max" | "Min") => a.clone(),
        _ => Dim::Unknown,
    }
}

/// The size that makes `factors` (with it) hold as many elements as `total`:
/// fixed parts divide, symbols must cancel (one left over is the answer).
pub(crate) fn missing_factor(total: &[Dim], factors: &[Dim]) -> Dim {
    let (Some((total_fixed, mut symbols)), Some((part_fixed, part_symbols))) =
        (element_count(total), element_count(factors))
    else {
        return Dim::Unknown;
    };
    for s in part_symbols {
        match symbols.iter().position(|t| *t == s) {
            Some(i) => {
                symbols.remove(i);
            }
            None => return Dim::Unknown,
        }
    }
    if total_fixed.checked_rem(part_fixed) != Some(0) {
        return Dim::Unknown;
    }
    match (total_fixed.checked_div(part_fixed), symbols.as_slice()) {
        (Some(q), []) => Dim::Fixed(q),
        (Some(1), [s]) => Dim::Symbolic(s.clone()),
        _ => Dim::Unknown,
    }
}

/// Element count as (product of fixed sizes, symbols); `None` with an unknown dim.
pub(crate) fn element_count(dims: &[Dim]) -> Option<(i64, Vec<String>)> {
    let mut fixed: i64 = 1;
    let mut symbols = Vec::new();
    for d in dims {
        match d {
            Dim::Fixed(v) => fixed = fixed.checked_mul(*v)?,
            Dim::Symbolic(s) => symbols.push(s.clone()),
            Dim::Unknown => return None,
        }
    }
    Some((fixed, symbols))
}

/// A shape-tensor element read as a dimension size (negative sizes are invalid).
pub(crate) fn as_size(d: &Dim) -> Dim {
    match d {
        Dim::Fixed(v) if *v < 0 => Dim::Unknown,
        other => other.clone(),
    }
}

pub(crate) fn without_axes(x: &[Dim], axes: &HashSet<usize>) -> Vec<Dim> {
    x.iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, d)| d.clone())
        .collect()
}

/// An axis in `[-rank, rank)` as an index.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let rank = rank as i64;
    let axis = if axis < 0 { axis + rank } else { axis };
    (0..rank).contains(&axis).then_some(axis as usize)
}

/// An axis in `[-rank, rank]` (Flatten may split after the last axis).
pub(crate) fn norm_axis_inclusive(axis: i64, rank: usize) -> Option<usize> {
    let rank = rank as i64;
    let axis = if axis < 0 { axis + rank } else { axis };
    (0..=rank).contains(&axis).then_some(axis as usize)
}

/// A size computed in wide arithmetic, if it is a valid (non-negative) `i64`.
pub(crate) fn narrow(v: i128) -> Option<i64> {
    i64::try_from(v).ok().filter(|&v| v >= 0)
}

pub(crate) fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a.div_euclid(b);
    if a.rem_euclid(b) != 0 {
        q + 1
    } else {
        q
    }
}

pub(crate) fn static_ints(dims: &[Dim]) -> Option<Vec<i64>> {
    dims.iter()
        .map(|d| match d {
            Dim::Fixed(v) => Some(*v),
            _ => None,
        })
        .collect()
}

pub(crate) fn static_dims(dims: &[Dim]) -> Option<Vec<usize>> {
    static_ints(dims)?
        .into_iter()
        .map(|v| usize::try_from(v).ok())
        .collect()
}

/// Element count of a fully static type.
pub(crate) fn static_count(dims: &[Dim]) -> Option<usize> {
    static_dims(dims)?
        .into_iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(d))
}

/// Reads `values[source(out_index)]` for every index of `out_dims`, row-major.
pub(crate) fn gather_flat(
    values: &[Dim],
    out_dims: &[usize],
    source: impl Fn(&[usize]) -> usize,
) -> Option<Vec<Dim>> {
    multi_indices(out_dims)
        .map(|index| values.get(source(&index)).cloned())
        .collect()
}

pub(crate) fn multi_indices(dims: &[usize]) -> impl Iterator<Item = Vec<usize>> + '_ {
    let count: usize = dims.iter().product();
    (0..count).map(move |mut flat| {
        let mut index = vec![0; dims.len()];
        for (k, &d) in dims.iter().enumerate().rev() {
            index[k] = flat % d;
            flat /= d;
        }
        index
    })
}

pub(crate) fn strides(dims: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; dims.len()];
    for k in (0..dims.len().saturating_sub(1)).rev() {
        strides[k] = strides[k + 1] * dims[k + 1];
    }
    strides
}

pub(crate) fn constant_ints(node: &NodeProto) -> Option<Vec<i64>> {
    if let Some(t) = attribute(node, "value").and_then(|a| a.t.as_ref()) {
        return int_values(t);
    }
    if let Some(a) = attribute(node, "value_int") {
        return a.i.map(|v| vec![v]);
    }
    attribute(node, "value_ints").map(|a| a.ints.clone())
}

pub(crate) fn constant_floats(node: &NodeProto) -> Option<Vec<f64>> {
    if let Some(t) = attribute(node, "value").and_then(|a| a.t.as_ref()) {
        return f32_values(t).map(|v| v.into_iter().map(f64::from).collect());
    }
    if let Some(a) = attribute(node, "value_float") {
        return a.f.map(|v| vec![f64::from(v)]);
    }
    attribute(node, "value_floats").map(|a| a.floats.iter().map(|&v| f64::from(v)).collect())
}

/// The contents of an inline integer tensor (int64 or a narrower integer type).
pub(crate) fn int_values(tensor: &TensorProto) -> Option<Vec<i64>> {
    let elem = tensor.data_type();
    if elem == INT64 {
        return i64_values(tensor);
    }
    if is_external(tensor) || !is_int_type(elem) || elem == DataType::Uint64 as i32 {
        return None;
    }
    let width = crate::onnx::tensor::elem_size(elem)?;
    let bytes = crate::onnx::tensor::le_bytes(tensor)?;
    Some(bytes.chunks_exact(width).map(|b| le_int(b, elem)).collect())
}

pub(crate) fn le_int(bytes: &[u8], elem: i32) -> i64 {
    let mut buf = [0u8; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    let unsigned = u64::from_le_bytes(buf);
    let signed = matches!(
        DataType::try_from(elem),
        Ok(DataType::Int8 | DataType::Int16 | DataType::Int32)
    );
    let bits = 8 * bytes.len() as u32;
    if signed && bits < 64 && (unsigned >> (bits - 1)) & 1 == 1 {
        (unsigned | (u64::MAX << bits)) as i64
    } else {
        unsigned as i64
    }
}

pub(crate) fn is_int_type(elem: i32) -> bool {
    matches!(
        DataType::try_from(elem),
        Ok(DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64)
    )
}

pub(crate) fn fits_in(v: i64, elem: i32) -> bool {
    match DataType::try_from(elem) {
        Ok(DataType::Int8) => i8::try_from(v).is_ok(),
        Ok(DataType::Int16) => i16::try_from(v).is_ok(),
        Ok(DataType::Int32) => i32::try_from(v).is_ok(),
        Ok(DataType::Uint8) => u8::try_from(v).is_ok(),
        Ok(DataType::Uint16) => u16::try_from(v).is_ok(),
        Ok(DataType::Uint32) => u32::try_from(v).is_ok(),
        Ok(DataType::Int64 | DataType::Uint64) => v >= 0 || elem == INT64,
        _ => false,
    }
}
