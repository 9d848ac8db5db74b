//! The optimizer flags that `compile` and `train` share.

use clap::Args;

/// The optimizer flags `compile` and `train` share.
#[derive(Args, Debug)]
pub struct SgdArgs {
    /// SGD momentum (PyTorch form: v = mu v + (g + wd w))
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// L2 weight decay applied to every trainable parameter
    #[arg(long, default_value_t = 2e-4)]
    pub weight_decay: f64,
    /// Initializers to keep fixed (repeat the flag or separate with commas)
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub freeze: Vec<String>,
    /// Sharpness-aware minimisation with radius RHO (Foret et al.; on LDAM-DRW as Rangwani et al.): the update takes the gradient at w + RHO g/||g||
    #[arg(long, value_name = "RHO")]
    pub sam: Option<f64>,
}

impl SgdArgs {
    pub fn options(&self) -> ldam_onnx::compile::CompileOptions {
        ldam_onnx::compile::CompileOptions {
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            freeze: self.freeze.clone(),
            sam: self.sam,
        }
    }
}
