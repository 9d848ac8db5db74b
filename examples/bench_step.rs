//! Throughput of the compiled training step in ONNX Runtime on this machine's
//! CPU, with inference of the same network in the same process as the baseline,
//! and (with `--profile`) the time spent per op type from ONNX Runtime's profiler.
//!
//! `cargo run --release --example bench_step -- models/resnet32.onnx --batch 128 --steps 10 --profile`

use anyhow::{bail, Context, Result};
use ldam_onnx::compile::{compile, CompileOptions};
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::io::{load, to_bytes};
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::onnx::types::{tensor_type, Dim};
use ldam_onnx::patch::{patch, ContractNames, HeadMode, PatchOptions};
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use std::collections::HashMap;
use std::time::Instant;

struct Args {
    model: String,
    batch: usize,
    steps: usize,
    profile: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        model: String::new(),
        batch: 128,
        steps: 10,
        profile: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--batch" => args.batch = it.next().context("--batch needs a value")?.parse()?,
            "--steps" => args.steps = it.next().context("--steps needs a value")?.parse()?,
            "--profile" => args.profile = true,
            other if args.model.is_empty() => args.model = other.to_string(),
            other => bail!("unexpected argument '{other}'"),
        }
    }
    if args.model.is_empty() {
        bail!("usage: bench_step MODEL.onnx [--batch 128] [--steps 10] [--profile]");
    }
    Ok(args)
}

fn session(bytes: &[u8], profile: Option<&str>) -> Result<Session> {
    let environment = ldam_onnx::runtime::init()?;
    let mut builder = Session::builder(environment)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_intra_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(prefix) = profile {
        builder = builder
            .with_profiling(prefix)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    builder
        .commit_from_memory(bytes)
        .map_err(|e| anyhow::anyhow!("{e}"))
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
    let x: Vec<f32> = (0..len)
        .map(|i| ((i * 7919 % 2000) as f32 / 1000.0) - 1.0)
        .collect();

    // CIFAR-10-LT counts (ratio 100) and the reference recipe.
    let counts = vec![5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];
    let options = PatchOptions {
        config: LossConfig::reference(counts),
        head: HeadMode::Auto,
        logits: None,
        names: ContractNames::default(),
    };
    let (patched, _) = patch(&original, &options)?;
    let step = compile(&patched, &CompileOptions::default())?;
    let labels: Vec<i64> = (0..args.batch).map(|i| (i % 10) as i64).collect();
    let step_graph = step.model.graph.as_ref().context("no graph")?;
    let mut state: HashMap<String, (Vec<i64>, Vec<f32>)> = step
        .state
        .iter()
        .map(|s| {
            let t = step_graph
                .initializer
                .iter()
                .find(|t| t.name() == s.name)
                .expect("state is an initializer");
            (
                s.name.clone(),
                (t.dims.clone(), f32_values(t).expect("float state")),
            )
        })
        .collect();

    // Baseline: inference of the exported network, same batch, same process.
    let mut inference = session(&to_bytes(&original), None)?;
    let run_inference = |s: &mut Session| -> Result<()> {
        s.run(ort::inputs![input.name() => Tensor::from_array((shape.clone(), x.clone()))?])?;
        Ok(())
    };
    run_inference(&mut inference)?;
    let mut inference_times = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        let started = Instant::now();
        run_inference(&mut inference)?;
        inference_times.push(started.elapsed().as_secs_f64());
    }
    let inference_rate = Rates::of(&inference_times, args.batch);

    let profile_prefix = std::env::temp_dir().join("ldam_onnx_step_profile");
    let mut train = session(
        &to_bytes(&step.model),
        args.profile
            .then(|| profile_prefix.to_str().expect("utf-8 temp dir")),
    )?;
    let run_step =
        |s: &mut Session, state: &mut HashMap<String, (Vec<i64>, Vec<f32>)>| -> Result<f32> {
            let mut inputs: Vec<(String, SessionInputValue<'_>)> = vec![
                (
                    input.name().to_string(),
                    Tensor::from_array((shape.clone(), x.clone()))?.into(),
                ),
                (
                    "labels".into(),
                    Tensor::from_array((vec![args.batch as i64], labels.clone()))?.into(),
                ),
                (
                    "epoch".into(),
                    Tensor::from_array((Vec::<i64>::new(), vec![0i64]))?.into(),
                ),
                (
                    "lr".into(),
                    Tensor::from_array((Vec::<i64>::new(), vec![0.01f32]))?.into(),
                ),
            ];
            for s in &step.state {
                let (dims, values) = &state[&s.name];
                inputs.push((
                    s.name.clone(),
                    Tensor::from_array((dims.clone(), values.clone()))?.into(),
                ));
            }
            let outputs = s.run(inputs)?;
            for st in &step.state {
                let (_, v) = outputs[st.next.as_str()].try_extract_tensor::<f32>()?;
                state.get_mut(&st.name).expect("known state").1 = v.to_vec();
            }
            Ok(outputs["loss"].try_extract_tensor::<f32>()?.1[0])
        };
    let first = run_step(&mut train, &mut state)?;
    let mut last = first;
    let mut step_times = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        let started = Instant::now();
        last = run_step(&mut train, &mut state)?;
        step_times.push(started.elapsed().as_secs_f64());
    }
    let train_rate = Rates::of(&step_times, args.batch);

    println!(
        "model: {}  batch {}  steps {}  threads {}",
        args.model,
        args.batch,
        args.steps,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("loss: first step {first:.4}, last step {last:.4}");
    // The best run is the least disturbed by other load on a shared machine.
    println!(
        "inference (forward only): {:9.1} images/s  (best run {:.1})",
        inference_rate.mean, inference_rate.best
    );
    println!(
        "training step:            {:9.1} images/s  (best step {:.1}; {:.2}x the inference time per image, {:.2}x best to best)",
        train_rate.mean,
        train_rate.best,
        inference_rate.mean / train_rate.mean,
        inference_rate.best / train_rate.best
    );

    if args.profile {
        let file = train.end_profiling()?;
        print_profile(&file)?;
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
fn print_profile(file: &str) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading profile {file}"))?;
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
    println!("time per op type (all profiled steps; {file}):");
    for (op, (us, calls)) in rows.iter().take(20) {
        println!(
            "  {op:28} {:9.1} ms  {:5.1}%  {calls} calls",
            us / 1000.0,
            100.0 * us / total
        );
    }
    let _ = std::fs::remove_file(file);
    Ok(())
}
