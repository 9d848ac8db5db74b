//! torch.optim.SGD (dampening 0, no Nesterov), in place on libtorch tensors.

use tch::Tensor;

/// Momentum and weight decay as float32, the precision the compiled step's
/// constants have, so that both runtimes apply the same numbers.
pub struct Sgd {
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Sgd {
    pub fn new(momentum: f64, weight_decay: f64) -> Self {
        Sgd {
            momentum: f64::from(momentum as f32),
            weight_decay: f64::from(weight_decay as f32),
        }
    }

    /// `d = g + wd * p; v = mu * v + d; p = p - lr * v`. The buffer starts at
    /// zero, so the first step sets v = d as PyTorch's does. A parameter without a
    /// gradient (`g` undefined) is decayed only.
    pub fn update(
        &self,
        parameter: &mut Tensor,
        velocity: &mut Tensor,
        gradient: &Tensor,
        lr: f32,
    ) -> Result<(), tch::TchError> {
        tch::no_grad(|| {
            let mut direction = if gradient.defined() {
                gradient.shallow_clone()
            } else {
                parameter.f_zeros_like()?
            };
            if self.weight_decay != 0.0 {
                direction = direction.f_add(&parameter.f_mul_scalar(self.weight_decay)?)?;
            }
            let _ = velocity.f_mul_scalar_(self.momentum)?;
            let _ = velocity.f_add_(&direction)?;
            let _ = parameter.f_sub_(&velocity.f_mul_scalar(f64::from(lr))?)?;
            Ok(())
        })
    }
}
