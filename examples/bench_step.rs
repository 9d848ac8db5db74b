//! Throughput of the compiled training step in ONNX Runtime on this machine's
//! CPU, trained as the CLI trains (`OrtTrainer`, state bound in place), with
//! inference of the same network in the same process as the baseline, and (with
//! `--profile`) the time spent per op type from ONNX Runtime's profiler.
//!
//! `cargo run --release --example bench_step -- models/resnet32.onnx --batch 128 --steps 10 [--repeat 3] [--profile]`
//!
//! Every repetition of `--steps` timed steps prints one line
//! `result compiled MODEL BATCH IMG_PER_S` (read by `benches/speed.sh`).

use anyhow::{bail, Context, Result};
use ldam_onnx::backend::onnxruntime::OrtTrainer;
use ldam_onnx::backend::{Batch, Device, Trainer};
use ldam_onnx::compile::{compile, CompileOptions};
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::io::{load, to_bytes};
use ldam_onnx::onnx::types::{tensor_type, Dim};
use ldam_onnx::patch::{patch, ContractNames, HeadMode, PatchOptions};
use ldam_onnx::runtime::{self, PROFILE_ENV};
use ort::value::Tensor;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

struct Args {
    model: String,
    batch: usize,
    steps: usize,
    repeat: usize,
    profile: bool,
    inference: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        model: String::new(),
        batch: 128,
        steps: 10,
        repeat: 1,
        profile: false,
        inference: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--batch" => args.batch = it.next().context("--batch needs a value")?.parse()?,
            "--steps" => args.steps = it.next().context("--steps needs a value")?.parse()?,
            "--repeat" => args.repeat = it.next().context("--repeat needs a value")?.parse()?,
            "--profile" => args.profile = true,
            "--no-inference" => args.inference = false,
            other if args.model.is_empty() => args.model = other.to_string(),
            other => bail!("unexpected argument '{other}'"),
        }
    }
    if args.model.is_empty() || args.steps == 0 || args.repeat == 0 {
        bail!("usage: bench_step MODEL.onnx [--batch 128] [--steps 10] [--repeat 1] [--profile] [--no-inference]");
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let original = load(args.model.as_ref())?.model;
    let graph = original.graph.as_ref().context("no graph")?;
    let input = &graph.input[0];
    let mut shape: Vec<i64> = tensor_type(input)
        .and_then(|t| t.shape)
        .context("input shape unknown")?
        .iter()
        .map(|d| if let Dim::Fixed(v) = d { *v } else { 1 })
        .collect();
    shape[0] = args.batch as i64;
    let len = shape.iter().product::<i64>() as usize;
    let batch = Batch {
        data: (0..len)
            .map(|i| ((i * 7919 % 2000) as f32 / 1000.0) - 1.0)
            .collect(),
        labels: (0..args.batch).map(|i| (i % 10) as i64).collect(),
        shape: shape.clone(),
    };
    let name = Path::new(&args.model)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();

    // CIFAR-10-LT counts (ratio 100) and the reference recipe.
    let counts = vec![5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];
    let options = PatchOptions {
        batchnorm: Default::default(),
        config: LossConfig::reference(counts),
        head: HeadMode::Auto,
        logits: None,
        names: ContractNames::default(),
    };
    let (patched, _) = patch(&original, &options)?;
    let step = compile(&patched, &CompileOptions::default())?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "model: {}  batch {}  steps {} x {}  threads {threads}",
        args.model, args.batch, args.steps, args.repeat
    );

    // Baseline: inference of the exported network, same batch, same process.
    let inference_rate = if args.inference {
        let mut inference = runtime::session_from_bytes(&to_bytes(&original))?;
        let mut run = || -> Result<()> {
            inference.run(ort::inputs![input.name() => Tensor::from_array((shape.clone(), batch.data.clone()))?])?;
            Ok(())
        };
        run()?;
        let mut times = Vec::with_capacity(args.steps);
        for _ in 0..args.steps {
            let started = Instant::now();
            run()?;
            times.push(started.elapsed().as_secs_f64());
        }
        Some(Rates::of(&times, args.batch))
    } else {
        None
    };

    // The profiler is on for the training session only; its trace is written
    // when the session ends.
    let profile_prefix =
        std::env::temp_dir().join(format!("ldam_onnx_step_profile_{}", std::process::id()));
    if args.profile {
        std::env::set_var(PROFILE_ENV, &profile_prefix);
    }
    let mut trainer = OrtTrainer::new(&step, Device::Cpu)?;
    std::env::remove_var(PROFILE_ENV);
    let first = trainer.step(&batch, 0, 0.01)?.loss;
    let mut last = first;
    let mut all_times = Vec::new();
    for _ in 0..args.repeat {
        let mut times = Vec::with_capacity(args.steps);
        for _ in 0..args.steps {
            let started = Instant::now();
            last = trainer.step(&batch, 0, 0.01)?.loss;
            times.push(started.elapsed().as_secs_f64());
        }
        let rate = Rates::of(&times, args.batch);
        println!("result compiled {name} {} {:.1}", args.batch, rate.mean);
        all_times.extend(times);
    }
    drop(trainer);
    let train_rate = Rates::of(&all_times, args.batch);

    println!("loss: first step {first:.4}, last step {last:.4}");
    // The best run is the least disturbed by other load on a shared machine.
    if let Some(inference_rate) = &inference_rate {
        println!(
            "inference (forward only): {:9.1} images/s  (best run {:.1})",
            inference_rate.mean, inference_rate.best
        );
    }
    println!(
        "training step:            {:9.1} images/s  (best step {:.1})",
        train_rate.mean, train_rate.best,
    );
    if let Some(inference_rate) = &inference_rate {
        println!(
            "  {:.2}x the inference time per image, {:.2}x best to best",
            inference_rate.mean / train_rate.mean,
            inference_rate.best / train_rate.best
        );
    }
    if args.profile {
        print_profile(&profile_prefix)?;
    }
    Ok(())
}

/// Images per second over all timed runs, and in the fastest one.
struct Rates {
    mean: f64,
    best: f64,
}

impl Rates {
    fn of(seconds: &[f64], batch: usize) -> Rates {
        let total: f64 = seconds.iter().sum();
        let fastest = seconds.iter().copied().fold(f64::INFINITY, f64::min);
        Rates {
            mean: (seconds.len() * batch) as f64 / total,
            best: batch as f64 / fastest,
        }
    }
}

/// Sums ONNX Runtime's per-node kernel times by op type.
fn print_profile(prefix: &Path) -> Result<()> {
    let dir = prefix.parent().context("profile prefix has no folder")?;
    let stem = prefix
        .file_name()
        .and_then(|s| s.to_str())
        .context("profile prefix is not UTF-8")?;
    let file = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|s| s.to_str())
                .is_some_and(|n| n.starts_with(stem) && n.ends_with(".json"))
        })
        .context("ONNX Runtime wrote no profile")?;
    let file = file.display().to_string();
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading profile {file}"))?;
    let events: Vec<serde_json::Value> = serde_json::from_str(&text)?;
    let mut by_op: HashMap<String, (f64, usize)> = HashMap::new();
    for e in &events {
        let is_kernel = e["cat"] == "Node"
            && e["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("_kernel_time"));
        if let (true, Some(op), Some(dur)) =
            (is_kernel, e["args"]["op_name"].as_str(), e["dur"].as_f64())
        {
            let entry = by_op.entry(op.to_string()).or_default();
            entry.0 += dur;
            entry.1 += 1;
        }
    }
    let total: f64 = by_op.values().map(|v| v.0).sum();
    let mut rows: Vec<_> = by_op.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    println!(
        "time per op type (all profiled steps, warm-up included; {}):",
        file
    );
    for (op, (us, calls)) in rows.iter().take(20) {
        println!(
            "  {op:28} {:9.1} ms  {:5.1}%  {calls} calls",
            us / 1000.0,
            100.0 * us / total
        );
    }
    let _ = std::fs::remove_file(&file);
    Ok(())
}
