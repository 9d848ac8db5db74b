//! `train` and `eval`: arguments and printing around `ldam_onnx::train`.

use super::data_args::DataArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use ldam_onnx::backend::{Backend, Device};
use ldam_onnx::train::batches::{Augment, NormalizeChoice, Preprocess};
use ldam_onnx::train::data::{self, Split};
use ldam_onnx::train::evaluate::{
    evaluate, fit_to_input, limit, recorded_normalization, recorded_train_counts, Classifier,
};
use ldam_onnx::train::longtail::Profile;
use ldam_onnx::train::metrics::GroupAccuracy;
use ldam_onnx::train::report::{self, Report};
use ldam_onnx::train::run::{self, Outcome, RunOptions};
use ldam_onnx::train::settings::{SamplerChoice, TrainSettings};
use ldam_onnx::SettingNames;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Settings flags; none of them may accompany --resume (the run keeps its own).
const SETTING_FLAGS: [&str; 31] = [
    "model",
    "train",
    "test",
    "image_root",
    "class_names",
    "skip_bad_images",
    "train_limit",
    "test_limit",
    "imbalance_ratio",
    "imbalance_profile",
    "pareto_alpha",
    "grey_to_rgb",
    "augment",
    "normalize",
    "epochs",
    "batch_size",
    "lr",
    "warmup_epochs",
    "lr_steps",
    "lr_factor",
    "drw_epoch",
    "sampler",
    "seed",
    "no_shuffle",
    "momentum",
    "weight_decay",
    "sam",
    "freeze",
    "eval_every",
    "eval_batch_size",
    "allow_count_mismatch",
];

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
ldam-onnx patch models/cnn.onnx --class-counts 6000,3597,2156,1292,774,464,278,166,99,60 --drw-epoch 16\n  \
ldam-onnx train models/cnn.ldam.onnx --train /usr/share/datasets/fashion-mnist \\\n      \
--imbalance-ratio 100 --epochs 20 --out runs/fmnist-ldam-drw\n  \
ldam-onnx train --resume runs/fmnist-ldam-drw\n  \
ldam-onnx eval runs/fmnist-ldam-drw/model.onnx --test /usr/share/datasets/fashion-mnist\n\n\
The run folder receives checkpoint.onnx (every epoch, and on Ctrl-C), metrics.csv, report.json, \
curves.png, per_class.png and model.onnx: the trained network without the loss, ready to deploy. \
Defaults follow the paper's CIFAR recipe: SGD momentum 0.9, weight decay 2e-4, batch 128, lr 0.1 \
with 5 warm-up epochs, x0.01 at 80% and 90% of the epochs, random crop + flip.")]
pub struct TrainArgs {
    /// The patched model (`ldam-onnx patch`)
    #[arg(required_unless_present = "resume")]
    model: Option<PathBuf>,
    /// Training data: an IDX/CIFAR folder or file, an NPZ with x and y, an image
    /// folder (ROOT/<class>/<image>, or ROOT/train and ROOT/val or ROOT/test), or a
    /// list file (.txt: one "relative/path label" per line)
    #[arg(long, value_name = "PATH", required_unless_present = "resume")]
    train: Option<PathBuf>,
    /// Test data [default: the --train path, whose test split is read]
    #[arg(long, value_name = "PATH")]
    test: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// The run folder (checkpoints, metrics, report, plots, model.onnx)
    #[arg(long, value_name = "DIR", required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint, with its own settings
    #[arg(long, value_name = "DIR", conflicts_with_all = SETTING_FLAGS, conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Start over in an --out folder that already holds a run
    #[arg(long)]
    force: bool,

    /// Long-tailed training set: n_max / n_min (e.g. 100); the test set stays balanced
    #[arg(long, value_name = "R")]
    imbalance_ratio: Option<f64>,
    /// How counts fall from head to tail: exp (geometric), step (half the classes rare)
    /// or pareto (a power law of shape --pareto-alpha, as ImageNet-LT was drawn)
    #[arg(long, default_value = "exp", value_parser = parse::<Profile>)]
    imbalance_profile: Profile,
    /// Shape of the pareto profile: smaller drops faster after the head
    #[arg(long, value_name = "ALPHA", default_value_t = 6.0)]
    pareto_alpha: f64,
    /// Use a seeded random subset of N training examples (before long-tailing)
    #[arg(long, value_name = "N")]
    train_limit: Option<usize>,
    /// Use a seeded random subset of N test examples
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    /// Repeat one-channel images into the model's channels
    #[arg(long)]
    grey_to_rgb: bool,
    /// Training augmentation: crop-flip (4-pixel padded random crop + horizontal flip;
    /// on image files larger than 32x32: resized-crop-flip), resized-crop-flip
    /// (torchvision's RandomResizedCrop + horizontal flip) or none
    #[arg(long, default_value = "crop-flip", value_parser = parse::<Augment>)]
    augment: Augment,
    /// Per-channel input normalisation: none, dataset (training-set mean/std), imagenet
    /// (0.485,0.456,0.406/0.229,0.224,0.225), or MEANS/STDS
    /// [default: dataset for u8 images, none for float data]
    #[arg(long, value_name = "SPEC", value_parser = parse_normalize)]
    normalize: Option<NormalizeChoice>,

    #[arg(long, default_value_t = 200)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Base learning rate
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Linear warm-up epochs [default: 5, or the first LR step if earlier]
    #[arg(long, value_name = "N")]
    warmup_epochs: Option<usize>,
    /// Epochs after which lr is multiplied by --lr-factor [default: 80% and 90% of --epochs]
    #[arg(long, value_name = "E,E", value_delimiter = ',')]
    lr_steps: Option<Vec<usize>>,
    #[arg(long, default_value_t = 0.01)]
    lr_factor: f64,
    /// First epoch (0-based) of deferred re-weighting [default: the one patched into the model]
    #[arg(long, value_name = "E")]
    drw_epoch: Option<i64>,
    /// instance, class-balanced (RS) or deferred (DRS: class-balanced from the DRW epoch)
    #[arg(long, default_value = "instance", value_parser = parse::<SamplerChoice>)]
    sampler: SamplerChoice,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Visit training examples in file order (shuffled by default)
    #[arg(long)]
    no_shuffle: bool,
    #[command(flatten)]
    sgd: crate::cli::sgd::SgdArgs,
    /// Evaluate on the test set every N epochs (the last epoch always)
    #[arg(long, default_value_t = 1, value_name = "N")]
    eval_every: usize,
    #[arg(long, default_value_t = 512)]
    eval_batch_size: usize,
    /// Train even when the data's class counts differ from the model's
    #[arg(long)]
    allow_count_mismatch: bool,
    /// ort (compiled training step in ONNX Runtime) or torch (libtorch autograd)
    /// [default: ort]. Both train the same step on the same state, so with
    /// --resume it moves a run to the other runtime
    #[arg(long, value_parser = parse::<Backend>)]
    backend: Option<Backend>,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu", value_parser = parse::<Device>)]
    device: Device,
    /// Print nothing but errors
    #[arg(long, short)]
    quiet: bool,
}

fn parse_normalize(text: &str) -> Result<NormalizeChoice, String> {
    NormalizeChoice::parse(text).map_err(|e| crate::cli::message::library_message(&e))
}

fn parse<T: std::str::FromStr<Err = ldam_onnx::Error>>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|e: ldam_onnx::Error| crate::cli::message::library_message(&e))
}

impl TrainArgs {
    fn settings(&self) -> Option<TrainSettings> {
        let (model, train) = (self.model.clone()?, self.train.clone()?);
        let test = self.test.clone().unwrap_or_else(|| train.clone());
        let mut s = TrainSettings::new(model, train, test);
        s.image_root = self.data.image_root.clone();
        s.class_names = self.data.class_names.clone();
        s.skip_bad_images = self.data.skip_bad_images;
        s.train_limit = self.train_limit;
        s.test_limit = self.test_limit;
        s.imbalance_ratio = self.imbalance_ratio;
        s.imbalance_profile = self.imbalance_profile;
        s.pareto_alpha = self.pareto_alpha;
        s.recipe.grey_to_rgb = self.grey_to_rgb;
        s.recipe.augment = self.augment;
        s.recipe.normalize = self.normalize.clone();
        s.recipe.epochs = self.epochs;
        s.recipe.batch_size = self.batch_size;
        s.recipe.lr = self.lr;
        s.recipe.warmup_epochs = self.warmup_epochs;
        s.recipe.lr_steps = self.lr_steps.clone();
        s.recipe.lr_factor = self.lr_factor;
        s.recipe.drw_epoch = self.drw_epoch;
        s.recipe.sampler = self.sampler;
        s.recipe.seed = self.seed;
        s.recipe.shuffle = !self.no_shuffle;
        let sgd = self.sgd.options();
        s.recipe.momentum = sgd.momentum;
        s.recipe.weight_decay = sgd.weight_decay;
        s.recipe.freeze = sgd.freeze;
        s.recipe.sam = sgd.sam;
        s.recipe.eval_every = self.eval_every;
        s.recipe.eval_batch_size = self.eval_batch_size;
        s.recipe.allow_count_mismatch = self.allow_count_mismatch;
        s.recipe.backend = self.backend.unwrap_or(Backend::OnnxRuntime);
        Some(s)
    }
}

pub fn run_train(args: TrainArgs) -> Result<ExitCode> {
    // Under `mpirun -np K`, one of K ranks training together; else alone.
    let world = Arc::new(ldam_onnx::distributed::World::from_environment()?);
    if world.is_mpi() && world.is_writer() && !args.quiet {
        eprintln!("{}", world.describe());
    }
    let result = train_in_world(args, world.clone());
    match result {
        // A rank that fails ends them all: the others would wait for it in
        // the next allreduce.
        Err(error) if world.size() > 1 => {
            eprintln!(
                "error: rank {} of {}: {}",
                world.rank(),
                world.size(),
                crate::cli::message(&error)
            );
            world.abort(1)
        }
        other => other,
    }
}

fn train_in_world(args: TrainArgs, world: Arc<ldam_onnx::distributed::World>) -> Result<ExitCode> {
    let interrupt = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupt.clone();
        // A second Ctrl-C while the checkpoint is written exits at once.
        ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupted: saving a checkpoint after this step (Ctrl-C again to quit now)"
            );
        })
        .context("installing the Ctrl-C handler")?;
    }
    let options = RunOptions {
        device: args.device,
        quiet: args.quiet,
        interrupt,
        force: args.force,
        backend: args.backend,
        names: SettingNames::Flags,
        world: world.clone(),
    };
    let (run_dir, outcome) = match (&args.resume, args.settings(), &args.out) {
        (Some(dir), _, _) => (dir.clone(), run::resume(dir, &options)?),
        (None, Some(settings), Some(out)) => (out.clone(), run::start(settings, out, &options)?),
        _ => bail!("give MODEL, --train and --out, or --resume DIR"),
    };
    match outcome {
        Outcome::Replica { .. } => Ok(ExitCode::SUCCESS),
        Outcome::Interrupted { .. } if !world.is_writer() => Ok(ExitCode::from(130)),
        Outcome::Interrupted { epoch, batch } => {
            eprintln!(
                "stopped at epoch {}, batch {batch}; checkpoint saved. Continue with:\n  ldam-onnx train --resume {}",
                epoch + 1,
                run_dir.display()
            );
            Ok(ExitCode::from(130))
        }
        Outcome::Finished(done) => {
            if !args.quiet {
                print_result(&done.report);
                println!("model:   {}", done.model.display());
                println!(
                    "report:  {}\nmetrics: {}\nplots:   {}, {}",
                    done.files.report_json.display(),
                    done.files.metrics_csv.display(),
                    done.files.curves_png.display(),
                    done.files.per_class_png.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_result(report: &Report) {
    let group = |g: Option<f64>| g.map_or("-".to_string(), |v| format!("{v:.2}"));
    let GroupAccuracy { many, medium, few } = report.groups;
    println!(
        "top-1 accuracy {:.2}%  (error {:.2}%)  many {}  medium {}  few {}",
        report.top1,
        report.top1_error,
        group(many),
        group(medium),
        group(few)
    );
}

/// Per-class accuracy with class names, when the classes fit on a screen.
fn print_per_class(report: &Report) {
    const MAX_LISTED: usize = 100;
    if report.per_class.len() > MAX_LISTED {
        println!(
            "{} classes: per-class accuracies in report.json (--out)",
            report.per_class.len()
        );
        return;
    }
    let width = report
        .per_class
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<width$}  {:>8}  {:>6}  accuracy",
        "class", "train", "test"
    );
    for class in &report.per_class {
        let accuracy = class.accuracy.map_or("-".into(), |a| format!("{a:.2}%"));
        println!(
            "{:<width$}  {:>8}  {:>6}  {accuracy}",
            class.name, class.train, class.test
        );
    }
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
ldam-onnx eval runs/fmnist-ldam-drw/model.onnx --test /usr/share/datasets/fashion-mnist\n  \
ldam-onnx eval resnet32.onnx --test cifar-10-batches-bin --normalize 0.4914,0.4822,0.4465/0.2023,0.1994,0.2010 --out eval/\n\n\
A model written by `train` carries its input normalisation and training class counts, so \
neither needs a flag. Many/medium/few groups (>100, 20-100, <20 training examples) need the \
training counts: from the model or --class-counts.")]
pub struct EvalArgs {
    /// Any ONNX classifier with one image input and [N, C] logits
    model: PathBuf,
    /// Test data: an IDX/CIFAR folder or file, an NPZ with x and y, an image folder,
    /// or a list file (.txt)
    #[arg(long, value_name = "PATH")]
    test: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Write report.json and per_class.png into DIR
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// none, dataset (the test set's mean/std) or MEANS/STDS [default: recorded in the model, else dataset]
    #[arg(long, value_name = "SPEC", value_parser = parse_normalize)]
    normalize: Option<NormalizeChoice>,
    /// Repeat one-channel images into the model's channels
    #[arg(long)]
    grey_to_rgb: bool,
    /// Training examples per class, for the many/medium/few groups [default: recorded in the model]
    #[arg(long, value_name = "N,N,...")]
    class_counts: Option<String>,
    /// The output holding the logits, when several qualify
    #[arg(long, value_name = "NAME")]
    logits: Option<String>,
    #[arg(long, default_value_t = 512)]
    batch_size: usize,
    /// Evaluate a seeded random subset of N test examples
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "cpu", value_parser = parse::<Device>)]
    device: Device,
}

pub fn run_eval(args: EvalArgs) -> Result<ExitCode> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    // ONNX Runtime reads the weights from the file itself (external data included).
    let loaded = ldam_onnx::onnx::io::load(&args.model)?;
    let context = || args.model.display().to_string();
    let mut classifier = Classifier::from_file(&loaded, args.logits.as_deref(), args.device)
        .with_context(context)?;
    let model = loaded.model;
    ldam_onnx::train::run::refuse_fixed_batch(
        &context(),
        &classifier.input,
        &classifier.input_dims,
        args.batch_size,
    )?;
    let options = args.data.read_options(Some(classifier.classes));
    let dataset = data::load_with(&args.test, Split::Test, &options)?;
    let dataset = fit_to_input(
        dataset,
        &classifier.input,
        &classifier.input_dims,
        args.grey_to_rgb,
    )
    .with_context(context)?;
    if dataset.classes > classifier.classes {
        bail!(
            "{} has labels up to {}, but {} has {} classes",
            dataset.source,
            dataset.classes - 1,
            args.model.display(),
            classifier.classes
        );
    }
    let dataset = limit(dataset, args.test_limit, args.seed)?;
    let normalization = match (&args.normalize, recorded_normalization(&model)?) {
        (Some(choice), _) => choice.resolve(&dataset)?,
        (None, Some(recorded)) => Some(recorded),
        (None, None) => NormalizeChoice::default_for(&dataset).resolve(&dataset)?,
    };
    let preprocess = Preprocess {
        augment: Augment::None,
        normalization,
        seed: args.seed,
    };
    preprocess.check(&dataset)?;
    let classes = classifier.classes;
    let evaluation = evaluate(&dataset, &preprocess, args.batch_size, classes, |batch| {
        classifier.predict(batch)
    })?;
    let train_counts = match &args.class_counts {
        Some(list) => ldam_onnx::counts::resolve(
            &ldam_onnx::counts::CountsSource::List(list.clone()),
            classes,
        )?,
        None => recorded_train_counts(&model)?.unwrap_or_default(),
    };
    let settings = serde_json::json!({
        "model": std::path::absolute(&args.model).unwrap_or(args.model.clone()),
        "test_data": std::path::absolute(&args.test).unwrap_or(args.test.clone()),
        "test_examples": dataset.len(),
        "normalization": preprocess.normalization,
        "logits": classifier.output,
        "device": args.device.to_string(),
        "class_names": dataset.class_names,
        "skipped_images": dataset.skipped_images,
    });
    // Without training counts (or with counts for another class list) there
    // are no shot groups: they stay empty rather than guessed.
    let group_counts = if train_counts.len() == classes {
        train_counts
    } else {
        Vec::new()
    };
    let report = Report::new(
        &evaluation,
        &group_counts,
        settings,
        ldam_onnx::runtime::ORT_VERSION,
    )?;
    print_result(&report);
    println!("on {} test examples of {}", dataset.len(), dataset.source);
    if dataset.skipped_images > 0 {
        println!("{} unreadable image files skipped", dataset.skipped_images);
    }
    print_per_class(&report);
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = report::write_report_json(dir, &report)?;
        println!("report:  {}", json.display());
        let csv = report::write_confusion_csv(dir, &report)?;
        println!("confusion matrix: {}", csv.display());
        if !group_counts.is_empty() {
            let png = report::plot_per_class(dir, &report)?;
            println!("plot:    {}", png.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Command};

    /// Every train flag but the run-control ones (which say where and how to run,
    /// not what to compute: `--backend` and `--device` change the runtime, not
    /// the step) is a setting that `--resume` must refuse: a flag missing from
    /// the list would be silently ignored.
    #[test]
    fn every_setting_flag_conflicts_with_resume() {
        let command = TrainArgs::augment_args(Command::new("train"));
        let run_control = ["resume", "force", "out", "device", "quiet", "backend"];
        let mut settings: Vec<&str> = command
            .get_arguments()
            .map(|a| a.get_id().as_str())
            .filter(|id| !run_control.contains(id))
            .collect();
        let mut listed = SETTING_FLAGS.to_vec();
        settings.sort_unstable();
        listed.sort_unstable();
        assert_eq!(settings, listed);
    }
}
