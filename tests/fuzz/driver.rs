//! One fuzz case: what a seed mutates ([`prepare`]) and the library calls the
//! CLI would make on it ([`run_case`]), each call's result recorded as a stage.

use super::data::{self, DataFiles, Format};
use super::model;
use super::rng::Rng;
use super::{bytewise, repo_dir};
use ldam_onnx::compile::{self, CompileOptions};
use ldam_onnx::counts::{self, CountsSource};
use ldam_onnx::inspect;
use ldam_onnx::ldam::{LossConfig, LossKind, Reweight};
use ldam_onnx::onnx::io::{self, SaveOptions};
use ldam_onnx::onnx::ModelProto;
use ldam_onnx::patch::{self, ContractNames, HeadMode, PatchOptions};
use ldam_onnx::train::data::Dataset;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Display;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Once, OnceLock};
use std::time::Instant;

// ---------------------------------------------------------------------------
// What a seed fuzzes

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Network {
    Mlp,
    Cnn,
    Resnet32,
    Shufflenet,
}

impl Network {
    pub const ALL: [Network; 4] = [
        Network::Mlp,
        Network::Cnn,
        Network::Resnet32,
        Network::Shufflenet,
    ];

    pub fn file(self) -> &'static str {
        match self {
            Network::Mlp => "mlp.onnx",
            Network::Cnn => "cnn.onnx",
            Network::Resnet32 => "resnet32.onnx",
            Network::Shufflenet => "shufflenet_v2_x0_5.onnx",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Network::Mlp => "mlp",
            Network::Cnn => "cnn",
            Network::Resnet32 => "resnet32",
            Network::Shufflenet => "shufflenet",
        }
    }

    /// The two small networks, cheap enough for ONNX Runtime in most cases.
    pub fn is_small(self) -> bool {
        matches!(self, Network::Mlp | Network::Cnn)
    }
}

/// Which form of a bundled model a case starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Variant {
    /// As exported.
    Original,
    /// After `patch` with the reference LDAM-DRW settings.
    Patched,
    /// After `patch` and `compile`: a training step.
    Compiled,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Original => "original",
            Variant::Patched => "patched",
            Variant::Compiled => "compiled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Subject {
    Model(Network, Variant),
    Data(Format),
}

impl Subject {
    pub fn name(self) -> String {
        match self {
            Subject::Model(n, v) => format!("{}/{}", n.name(), v.name()),
            Subject::Data(f) => format!("data/{}", f.name()),
        }
    }
}

/// The subject of a seed, and the generator that draws the rest of the case.
/// Fixed weights: the same seed means the same case in every mode.
pub fn plan(seed: u64) -> (Subject, Rng) {
    let mut rng = Rng::new(seed);
    let subject = if rng.chance(0.68) {
        let network = Network::ALL[rng.weighted(&[32, 36, 16, 16])];
        let variant =
            [Variant::Original, Variant::Patched, Variant::Compiled][rng.weighted(&[45, 35, 20])];
        Subject::Model(network, variant)
    } else {
        Subject::Data(Format::ALL[rng.weighted(&[30, 18, 12, 30, 10])])
    };
    (subject, rng)
}

// ---------------------------------------------------------------------------
// The bundled models, patched and compiled once per process

/// Class counts in the long-tailed shape the paper uses (ratio 100, exponential).
pub fn reference_counts(classes: usize) -> Vec<u64> {
    (0..classes)
        .map(|i| {
            let t = if classes > 1 {
                i as f64 / (classes - 1) as f64
            } else {
                0.0
            };
            (5000.0 * 0.01f64.powf(t)).floor().max(1.0) as u64
        })
        .collect()
}

fn reference_options(classes: usize) -> PatchOptions {
    PatchOptions {
        batchnorm: Default::default(),
        config: LossConfig::reference(reference_counts(classes)),
        head: HeadMode::Auto,
        logits: None,
        names: ContractNames::default(),
    }
}

/// A bundled model in the given form (built on first use, then cached).
pub fn base_model(network: Network, variant: Variant) -> &'static ModelProto {
    static CACHE: OnceLock<[[OnceLock<ModelProto>; 3]; 4]> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let n = Network::ALL.iter().position(|&x| x == network).unwrap();
    let v = variant as usize;
    cache[n][v].get_or_init(|| match variant {
        Variant::Original => {
            let path = repo_dir().join("models").join(network.file());
            io::load(&path)
                .unwrap_or_else(|e| panic!("harness: {}: {e}", path.display()))
                .model
        }
        Variant::Patched => {
            let original = base_model(network, Variant::Original);
            let head = patch::head::detect(original.graph.as_ref().unwrap(), None)
                .unwrap_or_else(|e| panic!("harness: {}: {e}", network.file()));
            patch::patch(original, &reference_options(head.classes))
                .unwrap_or_else(|e| panic!("harness: patching {}: {e}", network.file()))
                .0
        }
        Variant::Compiled => {
            compile::compile(
                base_model(network, Variant::Patched),
                &CompileOptions::default(),
            )
            .unwrap_or_else(|e| panic!("harness: compiling {}: {e}", network.file()))
            .model
        }
    })
}

// ---------------------------------------------------------------------------
// Options and results

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Options {
    /// Fraction of mlp/cnn model cases that create ONNX Runtime sessions.
    pub ort_small: f64,
    /// The same for resnet32 and shufflenet, whose sessions take much longer.
    pub ort_big: f64,
    /// Folder for the per-case temporary folders (default: the system's).
    pub tmp_root: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ort_small: 0.25,
            ort_big: 0.02,
            tmp_root: None,
        }
    }
}

/// One library call and its result (`error: None` is `Ok`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageResult {
    pub stage: String,
    pub error: Option<String>,
}

/// How a case ended. Everything but `Ok` is a finding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    /// Every call returned `Ok` or an `Err` value.
    Ok,
    Panic {
        stage: String,
        message: String,
        location: String,
        /// The innermost library frame, when the panic is located in std or a
        /// dependency (from a backtrace).
        frame: Option<String>,
    },
    /// The process died (allocation failure, stack overflow, signal); `frame`
    /// is the innermost library frame of the backtrace it printed.
    Abort {
        stage: String,
        message: String,
        frame: Option<String>,
    },
    /// Still running after the time limit.
    Hang { stage: String, seconds: f64 },
    /// The CLI broke its contract without crashing (process mode): an error
    /// that left its output file behind, or an unexpected exit status.
    Violation { stage: String, message: String },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    pub fn stage(&self) -> &str {
        match self {
            Outcome::Ok => "",
            Outcome::Panic { stage, .. }
            | Outcome::Abort { stage, .. }
            | Outcome::Hang { stage, .. }
            | Outcome::Violation { stage, .. } => stage,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    pub seed: u64,
    pub subject: String,
    pub mutations: Vec<String>,
    pub stages: Vec<StageResult>,
    pub outcome: Outcome,
    pub millis: u64,
}

impl CaseResult {
    /// The `Err` message of `stage`, if that stage ran and failed.
    pub fn error_of(&self, stage: &str) -> Option<&str> {
        self.stages
            .iter()
            .find(|s| s.stage == stage)
            .and_then(|s| s.error.as_deref())
    }
}

// ---------------------------------------------------------------------------
// Panics: recorded by a hook, not printed

#[derive(Debug, Clone)]
pub struct PanicRecord {
    pub message: String,
    pub location: String,
    pub frame: Option<String>,
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<PanicRecord>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that, on threads running a case, records the
/// message and location instead of printing them; other threads keep the
/// default output.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                return default(info);
            }
            let message = info
                .payload_as_str()
                .unwrap_or("(non-string payload)")
                .to_string();
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            let frame = if location.starts_with("src/") {
                None
            } else {
                library_frame(&std::backtrace::Backtrace::force_capture().to_string())
            };
            LAST_PANIC.with(|p| {
                *p.borrow_mut() = Some(PanicRecord {
                    message,
                    location,
                    frame,
                })
            });
        }));
    });
}

/// The innermost `ldam_onnx::` frame of a printed backtrace, with its source
/// line when the binary has debug info.
pub fn library_frame(backtrace: &str) -> Option<String> {
    let lines: Vec<&str> = backtrace.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some((number, function)) = line.trim_start().split_once(": ") else {
            continue;
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if function.starts_with("ldam_onnx::") || function.starts_with("<ldam_onnx::") {
            let at = lines
                .get(i + 1)
                .and_then(|l| l.trim_start().strip_prefix("at "))
                .map(|a| format!(" at {}", a.trim_start_matches("./")))
                .unwrap_or_default();
            return Some(format!("{function}{at}"));
        }
    }
    None
}

/// Runs `f` with panics recorded rather than printed.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, PanicRecord> {
    install_panic_hook();
    QUIET.with(|q| q.set(true));
    LAST_PANIC.with(|p| p.borrow_mut().take());
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result.map_err(|_| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or(PanicRecord {
                message: "(panic without a record)".into(),
                location: String::new(),
                frame: None,
            })
    })
}

// ---------------------------------------------------------------------------
// Preparing a case's input

/// The input a seed produces, before any library call.
pub enum Input {
    /// Serialized (and possibly damaged) model bytes.
    Model {
        bytes: Vec<u8>,
    },
    Data(DataFiles),
}

pub struct Prepared {
    pub subject: Subject,
    pub mutations: Vec<String>,
    pub input: Input,
    /// Draws the case's remaining choices (options, flags).
    pub rng: Rng,
}

/// Builds the input of `seed`; data files are written into `dir`.
pub fn prepare(seed: u64, dir: &Path) -> Prepared {
    let (subject, mut rng) = plan(seed);
    let mut mutations = Vec::new();
    let input = match subject {
        Subject::Model(network, variant) => {
            let mut model = base_model(network, variant).clone();
            let structural = rng.chance(0.85);
            if structural {
                mutations.extend(model::mutate(&mut model, &mut rng));
            }
            let mut bytes = io::to_bytes(&model);
            if !structural || rng.chance(0.2) {
                let hot = bytewise::Hot {
                    head: 16 << 10,
                    tail: 8 << 10,
                };
                mutations.extend(
                    bytewise::mutate(&mut bytes, &mut rng, hot)
                        .into_iter()
                        .map(|m| format!("bytes: {m}")),
                );
            }
            Input::Model { bytes }
        }
        Subject::Data(format) => Input::Data(data::make(format, dir, &mut rng, &mut mutations)),
    };
    Prepared {
        subject,
        mutations,
        input,
        rng,
    }
}

/// The patch options a case uses: mostly the reference, sometimes another loss,
/// head or contract name.
pub fn patch_options(rng: &mut Rng, classes: usize) -> PatchOptions {
    let mut options = reference_options(0);
    options.config.loss =
        [LossKind::Ldam, LossKind::Ce, LossKind::Focal][rng.weighted(&[70, 15, 15])];
    options.config.reweight =
        [Reweight::Drw, Reweight::None, Reweight::Rw][rng.weighted(&[70, 15, 15])];
    options.head = [HeadMode::Auto, HeadMode::Keep, HeadMode::Cosine][rng.weighted(&[70, 15, 15])];
    if rng.chance(0.08) {
        let name = rng
            .pick(&["input", "logits", "", "labels", "ldam/x"])
            .to_string();
        match rng.below(3) {
            0 => options.names.labels = name,
            1 => options.names.epoch = name,
            _ => options.names.loss = name,
        }
    }
    options.config.class_counts = if classes <= 100_000 {
        reference_counts(classes)
    } else {
        // Not a real class count: the mismatch must be an error, not an allocation.
        reference_counts(10)
    };
    options
}

fn compile_options(rng: &mut Rng, model: &ModelProto) -> CompileOptions {
    let mut options = CompileOptions::default();
    match rng.below(10) {
        0 => {
            let names: Vec<String> = model
                .graph
                .iter()
                .flat_map(|g| g.initializer.iter().map(|t| t.name().to_string()))
                .chain(["not_an_initializer".to_string()])
                .collect();
            options.freeze = (0..rng.range(1, 3))
                .map(|_| rng.pick(&names).clone())
                .collect();
        }
        1 => {
            options.momentum = *rng.pick(&[f64::NAN, -1.0, 1.0, 0.0, 1e300]);
            options.weight_decay = *rng.pick(&[f64::NAN, -1.0, 0.0, f64::INFINITY]);
        }
        _ => {}
    }
    options
}

// ---------------------------------------------------------------------------
// Running a case

/// What a running case reports as it goes (the child process forwards these,
/// so that the parent knows the case and stage of an abort or a hang).
pub enum Event<'a> {
    Prepared {
        subject: &'a str,
        mutations: &'a [String],
    },
    Stage(&'a str),
}

/// Stage bookkeeping: the current stage (for a panic) and every result.
struct Stages<'a> {
    current: &'static str,
    results: Vec<StageResult>,
    on_event: &'a mut dyn FnMut(Event),
}

impl Stages<'_> {
    fn enter(&mut self, stage: &'static str) {
        self.current = stage;
        (self.on_event)(Event::Stage(stage));
    }

    /// Runs one library call as `stage`; `None` when it returned `Err`.
    fn run<T, E: Display>(
        &mut self,
        stage: &'static str,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Option<T> {
        self.enter(stage);
        let result = f();
        let (value, error) = match result {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        self.results.push(StageResult {
            stage: stage.to_string(),
            error,
        });
        value
    }

    /// A call that cannot fail (renderers): still a stage, for panics.
    fn call<T>(&mut self, stage: &'static str, f: impl FnOnce() -> T) -> T {
        self.run(stage, || Ok::<T, String>(f()))
            .expect("an Ok result is returned as Some")
    }
}

fn ort_wanted(seed: u64, subject: Subject, options: &Options) -> bool {
    let fraction = match subject {
        Subject::Model(n, _) if n.is_small() => options.ort_small,
        Subject::Model(..) => options.ort_big,
        Subject::Data(_) => 0.0,
    };
    // A generator of its own: the fraction never shifts the case's other draws.
    Rng::new(seed ^ 0x6F72_7400).chance(fraction)
}

pub fn temp_dir(options: &Options) -> tempfile::TempDir {
    let mut builder = tempfile::Builder::new();
    builder.prefix("ldam-fuzz-");
    match &options.tmp_root {
        Some(root) => builder.tempdir_in(root),
        None => builder.tempdir(),
    }
    .expect("harness: creating a temporary folder")
}

/// Runs case `seed`: prepares its input and makes every library call on it,
/// reporting the prepared case and each stage to `on_event` as they start.
pub fn run_case(seed: u64, options: &Options, on_event: &mut dyn FnMut(Event)) -> CaseResult {
    let start = Instant::now();
    let dir = temp_dir(options);
    let mut subject = String::from("?");
    let mut mutations = Vec::new();
    let mut stages = Stages {
        current: "prepare",
        results: Vec::new(),
        on_event,
    };
    let caught = catch(|| {
        stages.enter("prepare");
        let prepared = prepare(seed, dir.path());
        subject = prepared.subject.name();
        mutations = prepared.mutations.clone();
        (stages.on_event)(Event::Prepared {
            subject: &subject,
            mutations: &mutations,
        });
        let ort = ort_wanted(seed, prepared.subject, options);
        let Prepared {
            subject,
            input,
            mut rng,
            ..
        } = prepared;
        match input {
            Input::Model { bytes } => {
                let variant = match subject {
                    Subject::Model(_, v) => v,
                    Subject::Data(_) => unreachable!("model input"),
                };
                model_case(&mut stages, dir.path(), &bytes, variant, &mut rng, ort)
            }
            Input::Data(files) => data_case(&mut stages, &files, &mut rng),
        }
    });
    let outcome = match caught {
        Ok(()) => Outcome::Ok,
        Err(record) => Outcome::Panic {
            stage: stages.current.to_string(),
            message: record.message,
            location: record.location,
            frame: record.frame,
        },
    };
    CaseResult {
        seed,
        subject,
        mutations,
        stages: stages.results,
        outcome,
        millis: start.elapsed().as_millis() as u64,
    }
}

fn ort_session(model: &ModelProto) -> ldam_onnx::Result<()> {
    ldam_onnx::runtime::session_from_bytes(&io::to_bytes(model)).map(drop)
}

fn model_case(
    stages: &mut Stages,
    dir: &Path,
    bytes: &[u8],
    variant: Variant,
    rng: &mut Rng,
    ort: bool,
) {
    let path = dir.join("model.onnx");
    std::fs::write(&path, bytes).expect("harness: writing the model");
    let Some(loaded) = stages.run("load", || io::load(&path)) else {
        return;
    };
    if ort {
        // What ONNX Runtime thinks of the input itself, to tell a broken input
        // from a broken output below.
        stages.run("ort.input", || {
            ldam_onnx::runtime::session_from_bytes(bytes).map(drop)
        });
    }

    // inspect (text, json, dot; and the views train reports use)
    if let Some(summary) = stages.run("inspect.summarize", || inspect::summarize(&loaded)) {
        stages.call("inspect.text", || inspect::render_text(&summary));
        stages.call("inspect.json", || inspect::render_json(&summary));
    }
    stages.call("inspect.dot", || inspect::render_dot(&loaded.model));
    stages.call("inspect.appended", || {
        inspect::render_appended(&loaded.model)
    });
    stages.call("inspect.train_step", || {
        inspect::render_train_step(&loaded.model)
    });

    // patch, as `ldam-onnx patch` does it
    let patched = patch_command(stages, dir, &loaded, rng, ort);

    // compile: the freshly patched model, or the mutated patched/compiled one
    let to_compile = match (&patched, variant) {
        (Some(p), _) => Some(p.clone()),
        (None, Variant::Original) => None,
        (None, _) => Some(loaded.model.clone()),
    };
    if let Some(input) = to_compile {
        let options = compile_options(rng, &input);
        if let Some(step) = stages.run("compile", || compile::compile(&input, &options)) {
            stages.run("compile.inference", || {
                compile::inference_model(&step.model, &HashMap::new())
            });
            if rng.chance(0.3) {
                stages.run("compile.save", || {
                    io::save(
                        &step.model,
                        Some(&loaded),
                        &dir.join("model.train.onnx"),
                        SaveOptions::overwriting(true),
                    )
                });
            }
            if ort {
                stages.run("ort.step", || ort_session(&step.model));
            }
        }
    }
    if variant == Variant::Compiled {
        stages.run("step.inference", || {
            compile::inference_model(&loaded.model, &HashMap::new())
        });
        if ort {
            stages.run("ort.loaded_step", || ort_session(&loaded.model));
        }
    }
}

fn patch_command(
    stages: &mut Stages,
    dir: &Path,
    loaded: &io::LoadedModel,
    rng: &mut Rng,
    ort: bool,
) -> Option<ModelProto> {
    stages.run("patch.check", || patch::check_patchable(&loaded.model))?;
    // `--logits NAME` now and then: an output's name, or one that is not there.
    let logits = rng.chance(0.1).then(|| {
        let mut names: Vec<String> = loaded
            .graph()
            .output
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        names.push("zzz".to_string());
        rng.pick(&names).clone()
    });
    let head = stages.run("patch.detect", || {
        patch::head::detect(loaded.graph(), logits.as_deref())
    })?;
    let mut options = patch_options(rng, head.classes);
    options.logits = logits;
    // Counts the way the CLI reads them: a list, or training labels to count.
    let source = match rng.below(10) {
        0 => {
            let labels = dir.join("labels.txt");
            let text: Vec<String> = (0..20)
                .map(|i| (i % head.classes.clamp(1, 10)).to_string())
                .collect();
            std::fs::write(&labels, text.join("\n")).expect("harness: writing labels");
            CountsSource::Labels(labels)
        }
        1 => CountsSource::List(
            rng.pick(&["5,0,3", "", "-1", "1,2", "18446744073709551616"])
                .to_string(),
        ),
        _ => CountsSource::List(
            options
                .config
                .class_counts
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    options.config.class_counts =
        stages.run("patch.counts", || counts::resolve(&source, head.classes))?;
    let (patched, _summary) = stages.run("patch", || patch::patch(&loaded.model, &options))?;
    if rng.chance(0.3) {
        stages.run("patch.save", || {
            io::save(
                &patched,
                Some(loaded),
                &dir.join("model.ldam.onnx"),
                SaveOptions::overwriting(true),
            )
        });
    }
    if ort {
        stages.run("ort.patched", || ort_session(&patched));
    }
    Some(patched)
}

fn data_case(stages: &mut Stages, files: &DataFiles, rng: &mut Rng) {
    if let Some((path, split)) = &files.dataset {
        if let Some(dataset) =
            stages.run("data.load", || ldam_onnx::train::data::load(path, *split))
        {
            use_dataset(stages, &dataset, rng);
        }
    }
    if let Some(labels) = &files.labels {
        stages.run("data.labels", || {
            counts::resolve(&CountsSource::Labels(labels.clone()), files.classes)
        });
    }
}

/// What training does with a dataset once read: examples, counts, channel
/// broadcast, normalisation statistics, a long-tailed subset.
fn use_dataset(stages: &mut Stages, dataset: &Dataset, rng: &mut Rng) {
    stages.call("data.examples", || {
        let _ = dataset.example(0);
        let _ = dataset.example(dataset.len() - 1);
        dataset.class_counts()
    });
    if dataset.shape.len() == 3 {
        stages.run("data.grey_to_rgb", || dataset.broadcast_channels(3));
    }
    stages.run("data.normalization", || {
        ldam_onnx::train::batches::Normalization::of_dataset(dataset)
    });
    let counts = dataset.class_counts();
    let most = counts.iter().copied().max().unwrap_or(1) as usize;
    let ratio = *rng.pick(&[1.0, 10.0, 100.0]);
    stages.run("data.long_tail", || {
        let wanted = ldam_onnx::train::longtail::long_tail_counts(
            most,
            dataset.classes,
            ratio,
            ldam_onnx::train::longtail::Profile::Exp,
        );
        ldam_onnx::train::longtail::subsample(dataset, &wanted, 0)
    });
}
