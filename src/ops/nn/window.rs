//! The sliding-window geometry of Conv, ConvTranspose and the pools, read once
//! from a node's attributes and used by their shape rules, gradient rules and
//! libtorch kernels alike.
//!
//! Empty attribute lists take the ONNX defaults (strides and dilations 1, pads 0),
//! as some exporters write them; lists of the wrong length, sizes below 1 and
//! negative pads are errors. Arithmetic on a window over an input is done in
//! `i128` and narrowed, so no attribute value can overflow it.

use crate::onnx::{NodeAttributes, NodeProto};

/// ONNX's `auto_pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPad {
    /// The explicit `pads`.
    NotSet,
    /// No padding.
    Valid,
    /// Pad so that the output is `ceil(input / stride)`, the odd pad at the end.
    SameUpper,
    /// The same, the odd pad at the beginning.
    SameLower,
}

/// A window over the spatial axes of a node's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub kernel: Vec<i64>,
    pub strides: Vec<i64>,
    pub dilations: Vec<i64>,
    /// `[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`, as ONNX writes them; used
    /// when `auto_pad` is `NotSet`.
    pub pads: Vec<i64>,
    pub auto_pad: AutoPad,
}

impl Window {
    /// The window of `node` over `spatial` axes: the kernel from `kernel_shape`,
    /// else `weight_kernel` (a Conv's weight dims after the channels).
    pub fn read(
        node: &NodeProto,
        spatial: usize,
        weight_kernel: Option<&[i64]>,
    ) -> Result<Window, String> {
        let list = |name: &str, fill: i64, len: usize| -> Result<Vec<i64>, String> {
            match node.ints_attr(name).filter(|v| !v.is_empty()) {
                None => Ok(vec![fill; len]),
                Some(v) if v.len() == len => Ok(v.to_vec()),
                Some(v) => Err(format!(
                    "{name} {v:?} should have {len} values for {spatial} spatial axes"
                )),
            }
        };
        let kernel = node
            .ints_attr("kernel_shape")
            .filter(|k| !k.is_empty())
            .or(weight_kernel)
            .ok_or("the node has no kernel_shape")?
            .to_vec();
        if kernel.len() != spatial {
            return Err(format!(
                "kernel_shape {kernel:?} should have {spatial} values for {spatial} spatial axes"
            ));
        }
        let strides = list("strides", 1, spatial)?;
        let dilations = list("dilations", 1, spatial)?;
        let pads = list("pads", 0, 2 * spatial)?;
        let positive = |v: &[i64]| v.iter().all(|&x| x >= 1);
        if !positive(&kernel) || !positive(&strides) || !positive(&dilations) {
            return Err(format!(
                "kernel_shape {kernel:?}, strides {strides:?} and dilations {dilations:?} must be >= 1"
            ));
        }
        if pads.iter().any(|&p| p < 0) {
            return Err(format!("pads {pads:?} must be >= 0"));
        }
        let auto_pad = match node.string_attr("auto_pad").unwrap_or("NOTSET") {
            "NOTSET" | "" => AutoPad::NotSet,
            "VALID" => AutoPad::Valid,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            other => return Err(format!("auto_pad '{other}' is not an ONNX value")),
        };
        Ok(Window {
            kernel,
            strides,
            dilations,
            pads,
            auto_pad,
        })
    }

    pub fn rank(&self) -> usize {
        self.kernel.len()
    }

    /// Span of the dilated kernel along `axis`: `(k - 1) d + 1`.
    pub fn extent(&self, axis: usize) -> i128 {
        (i128::from(self.kernel[axis]) - 1) * i128::from(self.dilations[axis]) + 1
    }

    /// Begin and end pads of `axis` over an input of `size`, `auto_pad` resolved:
    /// SAME pads just enough for `ceil(size / stride)` windows, splitting the
    /// total evenly with the odd one at the end (UPPER) or the beginning (LOWER).
    pub fn pads_at(&self, axis: usize, size: i64) -> (i128, i128) {
        let stride = i128::from(self.strides[axis]);
        let size = i128::from(size);
        match self.auto_pad {
            AutoPad::NotSet => (
                i128::from(self.pads[axis]),
                i128::from(self.pads[axis + self.rank()]),
            ),
            AutoPad::Valid => (0, 0),
            AutoPad::SameUpper | AutoPad::SameLower => {
                let out = (size + stride - 1) / stride;
                let total = ((out - 1) * stride + self.extent(axis) - size).max(0);
                let small = total / 2;
                if self.auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            }
        }
    }

    /// The window with `auto_pad` resolved into explicit `pads` for a static input.
    pub fn resolved(&self, input: &[i64]) -> Option<Window> {
        let rank = self.rank();
        let mut pads = vec![0; 2 * rank];
        for (axis, &size) in input.iter().enumerate().take(rank) {
            let (begin, end) = self.pads_at(axis, size);
            pads[axis] = i64::try_from(begin).ok()?;
            pads[axis + rank] = i64::try_from(end).ok()?;
        }
        Some(Window {
            pads,
            auto_pad: AutoPad::NotSet,
            ..self.clone()
        })
    }

    /// Output length along `axis` over an input of `size`: `floor((size + pads -
    /// extent) / stride) + 1`, or in ceil mode the ceiling, less a last window
    /// that would start in the end padding (as ONNX Runtime computes it,
    /// onnx/onnx#5741). `None` when no window fits or the length overflows.
    pub fn output_len(&self, axis: usize, size: i64, ceil_mode: bool) -> Option<i64> {
        let stride = i128::from(self.strides[axis]);
        let (begin, end) = self.pads_at(axis, size);
        let size = i128::from(size);
        let numerator = size + begin + end - self.extent(axis);
        // In ceil mode a window may start inside the input and end past it:
        // PyTorch's `MaxPool2d(3, 2, ceil_mode=True)` on a 2x2 map gives 1x1.
        let least = if ceil_mode { 1 - stride } else { 0 };
        if numerator < least {
            return None;
        }
        let out = if !ceil_mode {
            numerator / stride + 1
        } else {
            let out = (numerator + stride - 1) / stride + 1;
            if (out - 1) * stride >= size + begin {
                out - 1
            } else {
                out
            }
        };
        i64::try_from(out).ok().filter(|&o| o >= 1)
    }

    /// Output lengths over a static input (floor mode), `None` if any axis has none.
    pub fn output_size(&self, input: &[i64]) -> Option<Vec<i64>> {
        (0..self.rank())
            .map(|axis| self.output_len(axis, *input.get(axis)?, false))
            .collect()
    }

    /// ConvTranspose's output length along `axis`: `stride (size - 1) +
    /// output_padding + extent - pads`; SAME gives `size * stride`.
    pub fn transposed_len(&self, axis: usize, size: i64, output_padding: i64) -> Option<i64> {
        let stride = i128::from(self.strides[axis]);
        let size = i128::from(size);
        let len = match self.auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => size * stride,
            AutoPad::Valid => stride * (size - 1) + i128::from(output_padding) + self.extent(axis),
            AutoPad::NotSet => {
                let (begin, end) = (
                    i128::from(self.pads[axis]),
                    i128::from(self.pads[axis + self.rank()]),
                );
                stride * (size - 1) + i128::from(output_padding) + self.extent(axis) - begin - end
            }
        };
        i64::try_from(len).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::builder::{attr_ints, attr_string};

    fn node(attrs: Vec<crate::onnx::AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: Some("Conv".into()),
            attribute: attrs,
            ..Default::default()
        }
    }

    #[test]
    fn empty_lists_take_the_defaults_and_wrong_lengths_are_errors() {
        let w = Window::read(
            &node(vec![attr_ints("strides", &[]), attr_ints("pads", &[])]),
            2,
            Some(&[3, 3]),
        )
        .unwrap();
        assert_eq!(
            (w.strides, w.dilations, w.pads),
            (vec![1, 1], vec![1, 1], vec![0; 4])
        );
        let err = Window::read(&node(vec![attr_ints("strides", &[2])]), 2, Some(&[3, 3]));
        assert!(err.unwrap_err().contains("strides"));
        let err = Window::read(
            &node(vec![attr_ints("pads", &[1, -1, 0, 0])]),
            2,
            Some(&[3, 3]),
        );
        assert!(err.unwrap_err().contains("pads"));
        assert!(Window::read(&node(vec![]), 2, None).is_err());
    }

    #[test]
    fn output_lengths_follow_onnx() {
        let w = Window::read(
            &node(vec![attr_ints("strides", &[2]), attr_ints("pads", &[1, 1])]),
            1,
            Some(&[3]),
        )
        .unwrap();
        // floor((32 + 2 - 3) / 2) + 1 = 16
        assert_eq!(w.output_len(0, 32, false), Some(16));
        // Ceil mode: ceil(31 / 2) + 1 = 17; the last window starts at 32, inside
        // the input plus its begin pad (33), so it stays.
        assert_eq!(w.output_len(0, 32, true), Some(17));
        assert_eq!(w.output_len(0, 0, false), None);
        // Kernel 3 over 2 elements: none in floor mode; one window in ceil mode,
        // as PyTorch's (2 - 3 + 2 - 1) / 2 + 1 and ONNX's ceil((2 - 3) / 2 + 1).
        let unpadded =
            Window::read(&node(vec![attr_ints("strides", &[2])]), 1, Some(&[3])).unwrap();
        assert_eq!(unpadded.output_len(0, 2, false), None);
        assert_eq!(unpadded.output_len(0, 2, true), Some(1));
        assert_eq!(unpadded.output_len(0, 1, true), None);
        let same = Window::read(
            &node(vec![
                attr_ints("strides", &[2]),
                attr_string("auto_pad", "SAME_LOWER"),
            ]),
            1,
            Some(&[4]),
        )
        .unwrap();
        // ceil(7 / 2) = 4 windows need (4 - 1) 2 + 4 - 7 = 3 pads: 2 before, 1 after.
        assert_eq!(same.pads_at(0, 7), (2, 1));
        assert_eq!(same.output_len(0, 7, false), Some(4));
        assert_eq!(same.transposed_len(0, 4, 0), Some(8));
    }
}
