//! Sharpness-aware minimisation's perturbation (Foret et al., ICLR 2021), in
//! place on libtorch tensors, as the compiled step computes it
//! ([`crate::compile::sam`]): `e = rho * g / (||g||_2 + 1e-12)` over every
//! trainable tensor, each norm term and the scale in float32.

use crate::compile::sam::NORM_EPS;
use tch::{Kind, Tensor};

/// Adds `e` to each parameter (whose gradient is in `gradients`, undefined for
/// none) and returns the weights as they were, to restore after the second pass.
pub fn perturb(
    parameters: &mut [&mut Tensor],
    gradients: &[Tensor],
    rho: f64,
) -> Result<Vec<Tensor>, tch::TchError> {
    tch::no_grad(|| {
        let saved = parameters
            .iter()
            .map(|p| p.f_detach_copy())
            .collect::<Result<Vec<_>, _>>()?;
        let mut total: Option<Tensor> = None;
        for g in gradients.iter().filter(|g| g.defined()) {
            let square_sum = g.f_square()?.f_sum(Kind::Float)?;
            total = Some(match total {
                Some(t) => t.f_add(&square_sum)?,
                None => square_sum,
            });
        }
        let Some(total) = total else {
            return Ok(saved);
        };
        let denominator = total.f_sqrt()?.f_add_scalar(f64::from(NORM_EPS as f32))?;
        let scale = denominator
            .f_reciprocal()?
            .f_mul_scalar(f64::from(rho as f32))?;
        for (p, g) in parameters.iter_mut().zip(gradients) {
            if g.defined() {
                let _ = p.f_add_(&g.f_mul(&scale)?)?;
            }
        }
        Ok(saved)
    })
}

/// Puts the weights saved by [`perturb`] back.
pub fn restore(parameters: &mut [&mut Tensor], saved: &[Tensor]) -> Result<(), tch::TchError> {
    tch::no_grad(|| {
        for (p, s) in parameters.iter_mut().zip(saved) {
            let _ = p.f_copy_(s)?;
        }
        Ok(())
    })
}
