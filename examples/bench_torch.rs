//! Training throughput of the torch backend, and the interpreter's overhead over
//! calling the same libtorch ops directly (a hand-written forward, loss, backward
//! and SGD step of `models/cnn.onnx` against interpreting its patched graph, the
//! two alternating step by step in one process on the same data).
//!
//! `cargo run --release --features torch --example bench_torch -- [--model resnet32|cnn|all|FILE.onnx] [--batch 128] [--steps 5] [--repeat 1]`
//! (FILE.onnx: another 3x32x32 network, torch backend only)
//!
//! Every repetition prints `result IMPL MODEL BATCH IMG_PER_S` lines (IMPL
//! `torch-backend` or `tch-direct`), read by `benches/speed.sh`.

use anyhow::{bail, Context, Result};
use ldam_onnx::backend::torch::TorchTrainer;
use ldam_onnx::backend::{Batch, Device, Trainer};
use ldam_onnx::compile::CompileOptions;
use ldam_onnx::ldam::{margins, LossConfig};
use ldam_onnx::onnx::io::load;
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::onnx::ModelProto;
use ldam_onnx::patch::{patch, ContractNames, HeadMode, PatchOptions};
use std::path::Path;
use std::time::Instant;
use tch::{Kind, Reduction, Tensor};

const COUNTS: [u64; 10] = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];
const LR: f32 = 0.1;

fn patched(path: &str) -> Result<ModelProto> {
    let original = load(Path::new(env!("CARGO_MANIFEST_DIR")).join(path).as_path())?.model;
    let options = PatchOptions {
        batchnorm: Default::default(),
        config: LossConfig::reference(COUNTS.to_vec()),
        head: HeadMode::Auto,
        logits: None,
        names: ContractNames::default(),
    };
    Ok(patch(&original, &options)?.0)
}

/// A deterministic batch (a small linear congruential generator).
fn batch(shape: &[i64], seed: u64) -> Batch {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let count = shape.iter().product::<i64>() as usize;
    Batch {
        data: (0..count)
            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
            .collect(),
        labels: (0..shape[0]).map(|_| (next() % 10) as i64).collect(),
        shape: shape.to_vec(),
    }
}

/// Seconds per step over `steps` steps.
fn seconds_per_step(steps: usize, mut step: impl FnMut() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..steps {
        step()?;
    }
    Ok(start.elapsed().as_secs_f64() / steps as f64)
}

/// `models/cnn.onnx` patched (cosine head, LDAM loss) written directly against
/// tch: the ops the interpreter calls for its graph, without the interpreter.
struct HandWrittenCnn {
    parameters: Vec<Tensor>,
    velocities: Vec<Tensor>,
    statistics: Vec<Tensor>,
    margins: Tensor,
}

impl HandWrittenCnn {
    fn new(model: &ModelProto) -> Result<Self> {
        let graph = model.graph.as_ref().context("no graph")?;
        let tensor = |name: &str| -> Result<Tensor> {
            let t = graph
                .initializer
                .iter()
                .find(|t| t.name() == name)
                .with_context(|| format!("no initializer '{name}'"))?;
            let values = f32_values(t).context("float32 initializer")?;
            Ok(Tensor::from_slice(&values).reshape(t.dims.as_slice()))
        };
        let parameter_names = [
            "features.0.weight",
            "features.0.bias",
            "features.1.weight",
            "features.1.bias",
            "features.4.weight",
            "features.4.bias",
            "features.5.weight",
            "features.5.bias",
            "classifier.1.weight",
        ];
        let parameters = parameter_names
            .iter()
            .map(|n| Ok(tensor(n)?.set_requires_grad(true)))
            .collect::<Result<Vec<_>>>()?;
        let velocities = parameters.iter().map(Tensor::zeros_like).collect();
        let statistics = [
            "features.1.running_mean",
            "features.1.running_var",
            "features.5.running_mean",
            "features.5.running_var",
        ]
        .iter()
        .map(|n| tensor(n))
        .collect::<Result<Vec<_>>>()?;
        let margins: Vec<f32> = margins(&COUNTS, 0.5).iter().map(|&m| m as f32).collect();
        Ok(HandWrittenCnn {
            parameters,
            velocities,
            statistics,
            margins: Tensor::from_slice(&margins),
        })
    }

    fn step(&mut self, batch: &Batch) -> f32 {
        let p = &self.parameters;
        let s = &self.statistics;
        let x = Tensor::from_slice(&batch.data).reshape(batch.shape.as_slice());
        let labels = Tensor::from_slice(&batch.labels);
        let block = |x: &Tensor, conv: usize, stats: usize| {
            x.convolution(
                &p[conv],
                Some(&p[conv + 1]),
                [1, 1],
                [1, 1],
                [1, 1],
                false,
                [0, 0],
                1,
            )
            .batch_norm(
                Some(&p[conv + 2]),
                Some(&p[conv + 3]),
                Some(&s[stats]),
                Some(&s[stats + 1]),
                true,
                0.1,
                1e-5,
                true,
            )
            .relu()
            .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
        };
        let features = block(&block(&x, 0, 0), 4, 2).flatten(1, -1);
        let eps = Tensor::from(1e-12f32);
        let normalize = |t: &Tensor| t / t.norm_scalaropt_dim(2.0, [1], true).maximum(&eps);
        let logits = normalize(&features).linear::<Tensor>(&normalize(&p[8]), None);
        let onehot = labels.one_hot(10).to_kind(Kind::Float);
        let scores = (&logits - onehot * &self.margins) * 30.0;
        let loss =
            scores
                .log_softmax(1, None)
                .nll_loss_nd::<Tensor>(&labels, None, Reduction::Mean, -100);
        let gradients = Tensor::run_backward(&[&loss], &self.parameters, false, false);
        tch::no_grad(|| {
            for ((w, v), g) in self
                .parameters
                .iter_mut()
                .zip(&mut self.velocities)
                .zip(&gradients)
            {
                let direction = g + &*w * f64::from(2e-4f32);
                *v *= f64::from(0.9f32);
                *v += &direction;
                *w -= &*v * f64::from(LR);
            }
        });
        loss.double_value(&[]) as f32
    }
}

fn main() -> Result<()> {
    let mut batch_size = 128i64;
    let mut steps = 5usize;
    let mut repeat = 1usize;
    let mut model = "all".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--batch" => batch_size = args.next().context("--batch needs a value")?.parse()?,
            "--steps" => steps = args.next().context("--steps needs a value")?.parse()?,
            "--repeat" => repeat = args.next().context("--repeat needs a value")?.parse()?,
            "--model" => model = args.next().context("--model needs a value")?,
            other => bail!("unexpected argument '{other}'"),
        }
    }
    // Another 3x32x32 network (a CIFAR ResNet of another depth): a model file.
    let file = model.ends_with(".onnx").then(|| model.clone());
    if steps == 0
        || repeat == 0
        || (file.is_none() && !["all", "resnet32", "cnn"].contains(&model.as_str()))
    {
        bail!(
            "usage: bench_torch [--model resnet32|cnn|all|FILE.onnx] [--batch 128] [--steps 5] [--repeat 1]"
        );
    }
    println!("threads: libtorch {}", tch::get_num_threads());
    let options = CompileOptions::default();
    let rate = |seconds: f64| batch_size as f64 / seconds;

    if model != "cnn" {
        // ResNet-32 (or the given file), batch 3x32x32.
        let (path, name) = match &file {
            Some(path) => (
                path.as_str(),
                Path::new(path)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("model"),
            ),
            None => ("models/resnet32.onnx", "resnet32"),
        };
        let resnet = patched(path)?;
        let data = batch(&[batch_size, 3, 32, 32], 7);
        let mut torch = TorchTrainer::new(&resnet, &options, Device::Cpu)?;
        let first = torch.step(&data, 0, LR)?.loss;
        for _ in 0..repeat {
            let seconds = seconds_per_step(steps, || Ok(torch.step(&data, 0, LR).map(drop)?))?;
            println!(
                "result torch-backend {name} {batch_size} {:.1}",
                rate(seconds)
            );
        }
        println!("{name} first loss {first:.6}");
    }

    if model == "all" || model == "cnn" {
        // The interpreter against the same libtorch ops called directly,
        // alternating so that both see the same load.
        let cnn = patched("models/cnn.onnx")?;
        let data = batch(&[batch_size, 1, 28, 28], 8);
        let mut interpreted = TorchTrainer::new(&cnn, &options, Device::Cpu)?;
        let mut direct = HandWrittenCnn::new(&cnn)?;
        let first = (interpreted.step(&data, 0, LR)?.loss, direct.step(&data));
        let cnn_steps = steps * 4;
        // Step by step, in turn, the first of each pair alternating: both see the
        // same load, and a burst of other work on the machine lands on both.
        let (mut interpreted_total, mut direct_total) = (0.0, 0.0);
        let mut ratios = Vec::with_capacity(repeat * cnn_steps);
        for _ in 0..repeat {
            let (mut interpreted_time, mut direct_time) = (0.0, 0.0);
            for i in 0..cnn_steps {
                let mut time_interpreted = || -> Result<f64> {
                    seconds_per_step(1, || Ok(interpreted.step(&data, 0, LR).map(drop)?))
                };
                let mut time_direct = || {
                    seconds_per_step(1, || {
                        direct.step(&data);
                        Ok(())
                    })
                };
                let (a, b) = if i % 2 == 0 {
                    let a = time_interpreted()?;
                    (a, time_direct()?)
                } else {
                    let b = time_direct()?;
                    (time_interpreted()?, b)
                };
                interpreted_time += a;
                direct_time += b;
                ratios.push(a / b);
            }
            interpreted_time /= cnn_steps as f64;
            direct_time /= cnn_steps as f64;
            println!(
                "result torch-backend cnn {batch_size} {:.1}",
                rate(interpreted_time)
            );
            println!(
                "result tch-direct cnn {batch_size} {:.1}",
                rate(direct_time)
            );
            interpreted_total += interpreted_time;
            direct_total += direct_time;
        }
        ratios.sort_by(f64::total_cmp);
        let median_ratio = ratios[ratios.len() / 2];
        println!(
            "cnn.onnx, batch {batch_size}, {repeat} x {cnn_steps} timed steps each, alternating (first losses: interpreted {:.6}, direct {:.6}):",
            first.0, first.1
        );
        println!(
            "  interpreted        {:8.2} ms/step ({:.1} images/s)",
            interpreted_total * 1e3 / repeat as f64,
            rate(interpreted_total / repeat as f64)
        );
        println!(
            "  direct tch calls   {:8.2} ms/step ({:.1} images/s)",
            direct_total * 1e3 / repeat as f64,
            rate(direct_total / repeat as f64)
        );
        println!(
            "  interpreter overhead: {:+.1}% (total time), {:+.1}% (median of the per-step ratios)",
            (interpreted_total / direct_total - 1.0) * 100.0,
            (median_ratio - 1.0) * 100.0
        );
    }
    Ok(())
}
