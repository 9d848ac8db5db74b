//! insta snapshots of `inspect` for every model and of the appended subgraph for
//! every loss x reweight x head combination. A snapshot diff means the emitted
//! graph changed: review it like code.

mod common;

use ldam_onnx::inspect::{render_appended, render_text, summarize};
use ldam_onnx::ldam::{LossConfig, LossKind, Reweight};
use ldam_onnx::onnx::io::{load, LoadedModel};
use ldam_onnx::patch::{patch, ContractNames, HeadMode, PatchOptions};

const COUNTS: [u64; 10] = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];

macro_rules! snapshot {
    ($name:expr, $text:expr) => {
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!($name, $text);
        })
    };
}

#[test]
fn inspect_summaries_of_every_model() {
    for path in common::model_files() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let loaded = load(&path).unwrap();
        snapshot!(
            format!("inspect__{stem}"),
            render_text(&summarize(&loaded).unwrap())
        );
    }
}

#[test]
fn inspect_summary_of_a_patched_resnet32() {
    let loaded = load(&common::repo_dir().join("models/resnet32.onnx")).unwrap();
    let options = PatchOptions {
        batchnorm: Default::default(),
        config: LossConfig::reference(COUNTS.to_vec()),
        head: HeadMode::Auto,
        logits: None,
        names: ContractNames::default(),
    };
    let (model, _) = patch(&loaded.model, &options).unwrap();
    let patched = LoadedModel {
        model,
        path: "resnet32.ldam.onnx".into(),
        dir: ".".into(),
    };
    snapshot!(
        "inspect__resnet32_patched",
        render_text(&summarize(&patched).unwrap())
    );
}

#[test]
fn appended_subgraph_for_every_loss_reweight_and_head() {
    let mlp = load(&common::repo_dir().join("models/mlp.onnx"))
        .unwrap()
        .model;
    let losses = [
        LossKind::Ldam,
        LossKind::Ce,
        LossKind::Focal,
        LossKind::La,
        LossKind::Vs,
    ];
    for loss in losses {
        for reweight in [Reweight::None, Reweight::Rw, Reweight::Drw] {
            for (head, head_name) in [(HeadMode::Keep, "keep"), (HeadMode::Cosine, "cosine")] {
                let options = PatchOptions {
                    batchnorm: Default::default(),
                    config: LossConfig {
                        loss,
                        reweight,
                        ..LossConfig::reference(COUNTS.to_vec())
                    },
                    head,
                    logits: None,
                    names: ContractNames::default(),
                };
                let (model, _) = patch(&mlp, &options).unwrap();
                snapshot!(
                    format!("appended__{loss}_{reweight}_{head_name}"),
                    render_appended(&model)
                );
            }
        }
    }
}

/// The MLP patched with the reference loss and compiled with default options.
fn mlp_train_step() -> ldam_onnx::compile::TrainStep {
    let mlp = load(&common::repo_dir().join("models/mlp.onnx"))
        .unwrap()
        .model;
    let options = PatchOptions {
        batchnorm: Default::default(),
        config: LossConfig::reference(COUNTS.to_vec()),
        head: HeadMode::Auto,
        logits: None,
        names: ContractNames::default(),
    };
    let (patched, _) = patch(&mlp, &options).unwrap();
    ldam_onnx::compile::compile(&patched, &ldam_onnx::compile::CompileOptions::default()).unwrap()
}

#[test]
fn compiled_training_step_of_the_mlp() {
    let step = mlp_train_step();
    snapshot!(
        "train_step__mlp",
        ldam_onnx::inspect::render_train_step(&step.model)
    );
}

#[test]
fn split_step_of_the_mlp() {
    let parts = ldam_onnx::compile::split::split(&mlp_train_step()).unwrap();
    snapshot!(
        "split_step__mlp",
        format!(
            "gradient graph\n{}\napply graph\n{}",
            ldam_onnx::inspect::render_train_step(&parts.gradient),
            ldam_onnx::inspect::render_train_step(&parts.apply)
        )
    );
}
