//! Test-set evaluation, shared by the training loop (through its trainer) and
//! `ldam-onnx eval` (any ONNX classifier in an ONNX Runtime session), plus the
//! checks that a dataset fits a model's input.

pub use crate::backend::onnxruntime::Classifier;
use crate::backend::Batch;
use crate::error::{Error, Result};
use crate::ldam::contract::keys;
pub use crate::ldam::contract::{data_input, recorded_train_counts};
use crate::onnx::types::Dim;
use crate::onnx::{metadata, ModelProto};
use crate::train::batches::{eval_batches, Normalization, Preprocess};
use crate::train::data::Dataset;
use crate::train::metrics::Evaluation;

/// Metadata of an exported model: the input normalisation it was trained with
/// (`MEANS/STDS`), so `eval` feeds it the same input by default.
pub const NORMALIZE_KEY: &str = keys::INPUT_NORMALIZATION;
/// Metadata of an exported model: the training class counts (comma-separated),
/// which decide the many/medium/few groups of its report.
pub const TRAIN_COUNTS_KEY: &str = keys::TRAIN_CLASS_COUNTS;

/// Evaluates `predict` on every example of `dataset` in order.
pub fn evaluate(
    dataset: &Dataset,
    preprocess: &Preprocess,
    batch_size: usize,
    classes: usize,
    mut predict: impl FnMut(&Batch) -> Result<Vec<f32>>,
) -> Result<Evaluation> {
    let mut evaluation = Evaluation::new(classes);
    for batch in eval_batches(dataset, preprocess, batch_size) {
        let batch = batch?;
        let logits = predict(&batch)?;
        evaluation.add_logits(&logits, &batch.labels)?;
    }
    Ok(evaluation)
}

/// `dataset` in the shape the model reads (`[N, ...dims]`): grey images are
/// repeated into the model's channels when `grey_to_rgb`; any other difference
/// is an error naming both shapes.
pub fn fit_to_input(
    dataset: Dataset,
    input: &str,
    dims: &[Dim],
    grey_to_rgb: bool,
) -> Result<Dataset> {
    let expected = &dims[1.min(dims.len())..];
    if dataset.is_image_files() {
        // Image files decode to the model's channels and size.
        if let [Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)] = expected {
            let size = |d: i64| usize::try_from(d).ok();
            if let (Some(c), Some(h), Some(w)) = (size(*c), size(*h), size(*w)) {
                return dataset.with_image_shape([c, h, w]);
            }
        }
    }
    let fits = |shape: &[usize]| {
        expected.len() == shape.len()
            && expected
                .iter()
                .zip(shape)
                .all(|(d, &s)| !matches!(d, Dim::Fixed(v) if *v != s as i64))
    };
    if fits(&dataset.shape) {
        return Ok(dataset);
    }
    let describe: Vec<String> = dims.iter().map(ToString::to_string).collect();
    if let ([Dim::Fixed(channels), ..], [1, ..]) = (expected, dataset.shape.as_slice()) {
        if *channels > 1 {
            if !grey_to_rgb {
                return Err(Error::GreyImages {
                    data: dataset.source.clone(),
                    shape: dataset.shape.clone(),
                    input: input.to_string(),
                    dims: describe.join(", "),
                    channels: *channels,
                });
            }
            let broadcast = dataset.broadcast_channels(*channels as usize)?;
            if fits(&broadcast.shape) {
                return Ok(broadcast);
            }
        }
    }
    Err(Error::config(format!(
        "{} holds examples of shape {:?}, but the model's input '{input}' is [{}]",
        dataset.source,
        dataset.shape,
        describe.join(", ")
    )))
}

/// A seeded random subset of `limit` examples (all when `limit` is larger),
/// kept in their original order.
pub fn limit(dataset: Dataset, limit: Option<usize>, seed: u64) -> Result<Dataset> {
    let Some(limit) = limit.filter(|&l| l < dataset.len()) else {
        return Ok(dataset);
    };
    use rand::seq::SliceRandom;
    let mut indices: Vec<usize> = (0..dataset.len()).collect();
    indices.shuffle(&mut crate::train::batches::rng_for(&[
        seed,
        crate::train::batches::STREAM_LIMIT,
    ]));
    indices.truncate(limit);
    indices.sort_unstable();
    let source = format!("{} (random {limit} of {})", dataset.source, dataset.len());
    dataset.subset(&indices, source)
}

/// The normalisation recorded in an exported model, if any.
pub fn recorded_normalization(model: &ModelProto) -> Result<Option<Normalization>> {
    metadata(model, NORMALIZE_KEY)
        .map(|text| {
            Normalization::parse(text).map_err(|e| {
                Error::invalid(format!("metadata '{NORMALIZE_KEY}' is not valid: {e}"))
            })
        })
        .transpose()
}
