//! The optimizer subgraph: PyTorch's SGD with momentum and weight decay, and the
//! BatchNorm running-statistics update.

use crate::autodiff::batchnorm::BatchStatistics;
use crate::autodiff::scalar;
use crate::error::{Error, Result};
use crate::ldam::contract;
use crate::onnx::builder::Emitter;
use crate::onnx::tensor::element_count;
use crate::onnx::TensorProto;

/// Shared constants of the update.
pub struct Sgd {
    momentum: String,
    weight_decay: Option<String>,
}

/// The names one parameter's update produces.
pub struct ParameterUpdate {
    pub parameter_next: String,
    pub momentum: String,
    pub momentum_next: String,
    /// Zero-filled initial value of the momentum buffer.
    pub momentum_initial: TensorProto,
}

impl Sgd {
    pub fn new(b: &mut Emitter, momentum: f64, weight_decay: f64) -> Self {
        let float = crate::onnx::tensor::FLOAT;
        Sgd {
            momentum: b.constant("sgd/momentum", scalar(float, momentum)),
            weight_decay: (weight_decay != 0.0)
                .then(|| b.constant("sgd/weight_decay", scalar(float, weight_decay))),
        }
    }

    /// `d = g + wd * p; v' = mu * v + d; p' = p - lr * v'` (torch.optim.SGD with
    /// dampening 0 and a zero initial buffer, which makes the first step v' = d).
    pub fn step(
        &mut self,
        b: &mut Emitter,
        parameter: &TensorProto,
        gradient: &str,
        lr: &str,
    ) -> Result<ParameterUpdate> {
        if parameter.data_type() != crate::onnx::tensor::FLOAT {
            return Err(Error::compile(format!(
                "parameter '{}' is not float32; the optimizer updates float32 parameters",
                parameter.name()
            )));
        }
        let p = parameter.name();
        let momentum = contract::momentum_name(p);
        if !b.names.claim(&momentum) {
            return Err(Error::compile(format!(
                "the name '{momentum}' for a momentum buffer is already taken"
            )));
        }
        let direction = match &self.weight_decay {
            Some(wd) => {
                let decay = b.mul(p, wd, &format!("sgd/{p}/decay"));
                b.add(gradient, &decay, &format!("sgd/{p}/direction"))
            }
            None => gradient.to_string(),
        };
        let kept = b.mul(&momentum, &self.momentum, &format!("sgd/{p}/kept_velocity"));
        let momentum_next = claim(b, &contract::next_name(&momentum))?;
        b.op_into("Add", &[&kept, &direction], vec![], &momentum_next);
        let step = b.mul(&momentum_next, lr, &format!("sgd/{p}/step"));
        let parameter_next = claim(b, &contract::next_name(p))?;
        b.op_into("Sub", &[p, &step], vec![], &parameter_next);
        let zeros = vec![0.0f32; element_count(parameter) as usize];
        Ok(ParameterUpdate {
            parameter_next,
            momentum_next,
            momentum_initial: crate::onnx::tensor::f32_tensor(&momentum, &parameter.dims, &zeros),
            momentum,
        })
    }
}

fn claim(b: &mut Emitter, name: &str) -> Result<String> {
    if b.names.claim(name) {
        Ok(name.to_string())
    } else {
        Err(Error::compile(format!(
            "the output name '{name}' is already taken"
        )))
    }
}

/// PyTorch's running statistics: `r' = m r + (1 - m) s` with ONNX's momentum m
/// (PyTorch's 1 - momentum), using the unbiased batch variance `var * n / (n - 1)`.
pub fn running_statistics(b: &mut Emitter, stats: &BatchStatistics) -> Result<(String, String)> {
    let float = crate::onnx::tensor::FLOAT;
    let keep = b.constant("bn/momentum", scalar(float, stats.momentum as f64));
    let take = b.constant(
        "bn/one_minus_momentum",
        scalar(float, 1.0 - stats.momentum as f64),
    );
    let one = b.constant("bn/one", scalar(float, 1.0));
    let name = &stats.node_name;
    let n_minus_one = b.sub(
        &stats.per_channel_count,
        &one,
        &format!("bn/{name}/n_minus_one"),
    );
    let bessel = b.div(
        &stats.per_channel_count,
        &n_minus_one,
        &format!("bn/{name}/bessel"),
    );
    let unbiased = b.mul(
        &stats.batch_var,
        &bessel,
        &format!("bn/{name}/unbiased_var"),
    );
    let mut blend = |running: &str, batch: &str| -> Result<String> {
        let old = b.mul(running, &keep, &format!("bn/{name}/kept"));
        let new = b.mul(batch, &take, &format!("bn/{name}/taken"));
        let next = claim(b, &contract::next_name(running))?;
        b.op_into("Add", &[&old, &new], vec![], &next);
        Ok(next)
    };
    let mean_next = blend(&stats.running_mean, &stats.batch_mean)?;
    let var_next = blend(&stats.running_var, &unbiased)?;
    Ok((mean_next, var_next))
}
