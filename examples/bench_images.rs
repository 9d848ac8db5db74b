//! Decode + augment throughput of the image-file pipeline alone, without
//! training: an image folder read as `train` reads it, fitted to a model input
//! of `3 x SIZE x SIZE`, and its epochs assembled into batches by the trainer's
//! background producer (`batches::Producer`, rayon inside) with the training
//! augmentation (`crop-flip`: pad-crop-flip at 32x32 and below, torchvision's
//! `RandomResizedCrop` + flip above) and `--normalize imagenet`. The batches
//! are consumed and dropped.
//!
//! `cargo run --release --example bench_images -- DIR --size 224 [--batch 128] [--repeat 3] [--limit N]`
//!
//! Every repetition (one pass over the folder, or its first `--limit` images)
//! prints one line `result ldam-onnx SIZE IMAGES SECONDS IMG_PER_S` (read by
//! `benches/images.sh`).

use anyhow::{bail, Context, Result};
use ldam_onnx::train::batches::{Augment, Normalization, Preprocess, Producer};
use ldam_onnx::train::data::{load_with, ReadOptions, Split};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

struct Args {
    data: PathBuf,
    size: usize,
    batch: usize,
    repeat: usize,
    limit: Option<usize>,
}

fn parse_args() -> Result<Args> {
    let mut data = None;
    let mut args = Args {
        data: PathBuf::new(),
        size: 224,
        batch: 128,
        repeat: 3,
        limit: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<usize> {
            it.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--size" => args.size = value("--size")?,
            "--batch" => args.batch = value("--batch")?,
            "--repeat" => args.repeat = value("--repeat")?,
            "--limit" => args.limit = Some(value("--limit")?),
            other if other.starts_with("--") => bail!("unknown option {other}"),
            other => data = Some(PathBuf::from(other)),
        }
    }
    args.data = data.context("usage: bench_images DIR --size 224 [--batch 128] [--repeat 3]")?;
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let opened = Instant::now();
    let dataset = load_with(&args.data, Split::Train, &ReadOptions::default())?
        .with_image_shape([3, args.size, args.size])?;
    eprintln!(
        "{}: {} images, {} classes, read in {:.2} s",
        args.data.display(),
        dataset.len(),
        dataset.classes,
        opened.elapsed().as_secs_f64()
    );
    let dataset = Arc::new(dataset);
    let preprocess = Arc::new(Preprocess {
        augment: Augment::CropFlip,
        normalization: Some(Normalization::imagenet()),
        seed: 0,
    });
    preprocess.check(&dataset)?;
    let images = args.limit.unwrap_or(dataset.len()).min(dataset.len());
    for epoch in 0..args.repeat {
        // A shuffled order as training draws it (a fixed stride through the
        // folder, so that consecutive reads are not the directory's order).
        let order: Vec<usize> = (0..images)
            .map(|k| (k * 7919 + epoch * 104_729) % dataset.len())
            .collect();
        let started = Instant::now();
        let mut seen = 0usize;
        let producer = Producer::spawn(
            dataset.clone(),
            order,
            args.batch,
            0,
            preprocess.clone(),
            epoch,
        );
        for (_, batch) in producer {
            let batch = batch?;
            seen += batch.labels.len();
            std::hint::black_box(&batch.data);
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "result ldam-onnx {} {} {:.3} {:.1}",
            args.size,
            seen,
            seconds,
            seen as f64 / seconds
        );
    }
    Ok(())
}
