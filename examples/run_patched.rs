//! Runs patched models once in ONNX Runtime on a random batch and prints the loss
//! before and after the DRW epoch: `run_patched MODEL.ldam.onnx...`.

use anyhow::{Context, Result};
use ldam_onnx::onnx::io::load;
use ldam_onnx::onnx::types::{tensor_type, Dim};
use ldam_onnx::patch::metadata;

fn main() -> Result<()> {
    for path in std::env::args().skip(1) {
        let loaded = load(path.as_ref())?;
        let record = metadata::read(&loaded.model)?
            .with_context(|| format!("{path}: not a patched model"))?;
        let graph = loaded.graph();
        let input = graph.input.first().context("model has no input")?;
        let shape: Vec<i64> = tensor_type(input)
            .and_then(|t| t.shape)
            .context("input shape unknown")?
            .iter()
            .map(|d| if let Dim::Fixed(v) = d { *v } else { 8 })
            .collect();
        let batch = shape[0] as usize;
        let len: i64 = shape.iter().product();
        // A fixed pseudo-random batch: deterministic output across runs.
        let x: Vec<f32> = (0..len)
            .map(|i| ((i * 7919 % 2000) as f32 / 1000.0) - 1.0)
            .collect();
        let classes = record.config.class_counts.len();
        let labels: Vec<i64> = (0..batch).map(|i| (i % classes) as i64).collect();
        let mut session = ldam_onnx::runtime::session_from_file(path.as_ref())?;
        let mut losses = Vec::new();
        for epoch in [0, record.config.drw_epoch] {
            let outputs = session.run(ort::inputs![
                input.name() => ort::value::Tensor::from_array((shape.clone(), x.clone()))?,
                record.labels_input.as_str() => ort::value::Tensor::from_array((vec![batch as i64], labels.clone()))?,
                record.epoch_input.as_str() => ort::value::Tensor::from_array((Vec::<i64>::new(), vec![epoch]))?,
            ])?;
            let (_, loss) = outputs[record.loss_output.as_str()].try_extract_tensor::<f32>()?;
            losses.push(format!("epoch {epoch}: loss {:.6}", loss[0]));
        }
        println!("{path}: {}", losses.join(", "));
    }
    Ok(())
}
