//! Exports as users make them: weights in external data files, a batch fixed at
//! the example's size, BatchNorm in inference mode or folded away, a final
//! LogSoftmax whose output is named `logits`. Each is either made trainable by
//! `patch` (checked by running what it writes) or refused up front with the fix.

mod common;

use common::tolerance::normwise_error;
use common::{model_from_graph, node, run, Data, Rng};
use ldam_onnx::compile::{compile, CompileOptions};
use ldam_onnx::ldam::{LossConfig, LossKind, Reweight};
use ldam_onnx::onnx::builder::attr_int;
use ldam_onnx::onnx::io::{self, SaveOptions};
use ldam_onnx::onnx::tensor::{f32_tensor, f32_values, i64_tensor, is_external, FLOAT};
use ldam_onnx::onnx::types::{tensor_type, value_info, Dim};
use ldam_onnx::onnx::{GraphProto, ModelProto, NodeProto, TensorProto};
use ldam_onnx::patch::batchnorm::BatchNormMode;
use ldam_onnx::patch::trainability::{self, Verdict};
use ldam_onnx::patch::{patch, PatchOptions, PatchSummary};

const CLASSES: usize = 3;

fn ce_options(batchnorm: BatchNormMode) -> PatchOptions {
    let config = LossConfig {
        loss: LossKind::Ce,
        reweight: Reweight::None,
        ..LossConfig::reference(vec![30, 20, 10])
    };
    PatchOptions {
        batchnorm,
        ..PatchOptions::new(config)
    }
}

fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    rng.floats(n, -scale, scale)
}

/// A classifier exported at batch 2: input `x [2, 1, 4, 4]`, `nodes` ending in
/// a `Gemm` over `flat` into `scores [2, 3]`, with `fc.weight [3, 16]` and
/// `fc.bias` (random, from `seed`) after `initializers`.
fn fixed_batch_model(
    name: &str,
    mut nodes: Vec<NodeProto>,
    mut initializers: Vec<TensorProto>,
    seed: u64,
) -> ModelProto {
    let mut rng = Rng::new(seed);
    nodes.push(node(
        "Gemm",
        &["flat", "fc.weight", "fc.bias"],
        &["scores"],
        vec![attr_int("transB", 1)],
    ));
    initializers.push(f32_tensor(
        "fc.weight",
        &[CLASSES as i64, 16],
        &random(&mut rng, 48, 0.3),
    ));
    initializers.push(f32_tensor(
        "fc.bias",
        &[CLASSES as i64],
        &random(&mut rng, 3, 0.1),
    ));
    let graph = GraphProto {
        name: Some(name.into()),
        node: nodes,
        initializer: initializers,
        input: vec![value_info(
            "x",
            FLOAT,
            &[Dim::Fixed(2), Dim::Fixed(1), Dim::Fixed(4), Dim::Fixed(4)],
        )],
        output: vec![value_info(
            "scores",
            FLOAT,
            &[Dim::Fixed(2), Dim::Fixed(CLASSES as i64)],
        )],
        ..Default::default()
    };
    model_from_graph(graph, 17)
}

/// `x [2, 1, 4, 4] -> Reshape(x, target) -> Gemm -> scores [2, 3]`: a flatten
/// as torch's default exporter writes it at batch 2.
fn fixed_batch_flatten(target: &[i64]) -> ModelProto {
    fixed_batch_model(
        "fixed_batch",
        vec![node("Reshape", &["x", "flat_shape"], &["flat"], vec![])],
        vec![i64_tensor("flat_shape", &[target.len() as i64], target)],
        7,
    )
}

fn first_dim(model: &ModelProto, input: &str) -> Dim {
    let graph = model.graph.as_ref().unwrap();
    let info = graph.input.iter().find(|i| i.name() == input).unwrap();
    tensor_type(info).unwrap().shape.unwrap()[0].clone()
}

fn patched_logits(model: &ModelProto, x: &[f32], batch: i64) -> Vec<f32> {
    let labels = vec![0i64; batch as usize];
    let out = run(
        model,
        &[
            ("x", Data::F32(vec![batch, 1, 4, 4], x.to_vec())),
            ("labels", Data::I64(vec![batch], labels)),
            ("epoch", Data::I64(vec![], vec![0])),
        ],
    );
    out["scores"].f32().to_vec()
}

/// The Gemm of the fixture computed here in float64.
fn expected_logits(model: &ModelProto, x: &[f32], batch: usize) -> Vec<f32> {
    let graph = model.graph.as_ref().unwrap();
    let get = |name: &str| {
        f32_values(graph.initializer.iter().find(|t| t.name() == name).unwrap()).unwrap()
    };
    let (w, b) = (get("fc.weight"), get("fc.bias"));
    let mut out = Vec::new();
    for n in 0..batch {
        for c in 0..CLASSES {
            let dot: f64 = (0..16)
                .map(|k| w[c * 16 + k] as f64 * x[n * 16 + k] as f64)
                .sum();
            out.push((dot + b[c] as f64) as f32);
        }
    }
    out
}

#[test]
fn a_fixed_batch_becomes_symbolic_and_the_patched_model_takes_other_batch_sizes() {
    let model = fixed_batch_flatten(&[2, 16]);
    let (patched, summary) = patch(&model, &ce_options(BatchNormMode::Train)).unwrap();
    let freed = summary.freed_batch.clone().expect("the batch was fixed");
    assert_eq!(freed.size, 2);
    assert_eq!(freed.inputs, ["x"]);
    assert_eq!(freed.rewritten.len(), 1, "the flatten's target: {freed:?}");
    assert_eq!(first_dim(&patched, "x"), Dim::Symbolic("batch".into()));
    assert_eq!(first_dim(&patched, "labels"), Dim::Symbolic("batch".into()));
    for batch in [1usize, 2, 5] {
        let x = random(&mut Rng::new(batch as u64), batch * 16, 1.0);
        let got = patched_logits(&patched, &x, batch as i64);
        let want = expected_logits(&model, &x, batch);
        // One dot product of 16 terms in float32: 16 u |w||x| bounds the error
        // normwise; 1e-5 is above that for these magnitudes.
        let err = normwise_error(&got, &want, 0.0);
        assert!(
            err <= 1e-5,
            "batch {batch}: logits differ by {err} (normwise)"
        );
    }
    // Negative control: the unpatched model refuses batch 5 in ONNX Runtime.
    let bytes = io::to_bytes(&model);
    let mut session = ldam_onnx::runtime::session_from_bytes(&bytes).unwrap();
    let x = Data::F32(vec![5, 1, 4, 4], vec![0.0; 80]);
    let input = ort::value::Tensor::from_array((vec![5i64, 1, 4, 4], x.f32().to_vec())).unwrap();
    assert!(session.run(ort::inputs!["x" => input]).is_err());
}

#[test]
fn an_expanded_class_token_gets_the_batch_at_run_time() {
    // cls [1, 1, 16] expanded to [2, 1, 16] and added to x reshaped [2, 1, 16].
    let mut rng = Rng::new(3);
    let model = fixed_batch_model(
        "cls_token",
        vec![
            node("Expand", &["cls", "cls_shape"], &["tokens"], vec![]),
            node(
                "Reshape",
                &["x", "seq_shape"],
                &["seq"],
                vec![attr_int("allowzero", 1)],
            ),
            node("Add", &["seq", "tokens"], &["mixed"], vec![]),
            node("Reshape", &["mixed", "flat_shape"], &["flat"], vec![]),
        ],
        vec![
            f32_tensor("cls", &[1, 1, 16], &random(&mut rng, 16, 1.0)),
            i64_tensor("cls_shape", &[3], &[2, 1, 16]),
            i64_tensor("seq_shape", &[3], &[2, 1, 16]),
            i64_tensor("flat_shape", &[2], &[2, -1]),
        ],
        3,
    );
    let (patched, summary) = patch(&model, &ce_options(BatchNormMode::Train)).unwrap();
    assert_eq!(summary.freed_batch.unwrap().rewritten.len(), 3);
    let cls = f32_values(&model.graph.as_ref().unwrap().initializer[0]).unwrap();
    let x = random(&mut Rng::new(11), 4 * 16, 1.0);
    let shifted: Vec<f32> = x.iter().enumerate().map(|(i, v)| v + cls[i % 16]).collect();
    let got = patched_logits(&patched, &x, 4);
    let want = expected_logits(&model, &shifted, 4);
    let err = normwise_error(&got, &want, 0.0);
    assert!(err <= 1e-5, "logits differ by {err} (normwise)");
}

#[test]
fn a_batch_merged_into_another_dimension_is_refused_naming_the_node_and_the_export_fix() {
    // [2, 1, 4, 4] -> [1, 32]: the whole batch flattened into one row feeds a
    // layer 32 wide whose 6 outputs are cut back into 2 rows: the examples are
    // mixed, so no rewrite keeps the graph's meaning at another batch size.
    let mut model = fixed_batch_flatten(&[1, 32]);
    let graph = model.graph.as_mut().unwrap();
    graph.initializer[1] = f32_tensor("fc.weight", &[6, 32], &[0.1; 192]);
    graph.initializer[2] = f32_tensor("fc.bias", &[6], &[0.0; 6]);
    graph.initializer.push(i64_tensor("rows", &[2], &[2, 3]));
    graph.node[1].output[0] = "mixed".into();
    graph
        .node
        .push(node("Reshape", &["mixed", "rows"], &["scores"], vec![]));
    graph.node[0].name = Some("/flatten/Reshape".into());
    let err = patch(&model, &ce_options(BatchNormMode::Train))
        .unwrap_err()
        .to_string();
    // The reshape keeps the examples apart in the row; the layer after it is
    // where they mix.
    assert!(err.contains("Gemm_scores"), "names the node: {err}");
    assert!(err.contains("contracts"), "says why: {err}");
    assert!(err.contains("batch size 2"), "names the size: {err}");
    assert!(
        err.contains("dynamic_shapes") && err.contains("dynamic_axes"),
        "names the export arguments: {err}"
    );
}

/// `x [N, 4] -> BatchNormalization (inference mode) -> Gemm -> scores [N, 3]`.
fn inference_batchnorm(rng: &mut Rng) -> ModelProto {
    let graph = GraphProto {
        name: Some("bn".into()),
        node: vec![
            node(
                "BatchNormalization",
                &[
                    "x",
                    "bn.weight",
                    "bn.bias",
                    "bn.running_mean",
                    "bn.running_var",
                ],
                &["normed"],
                vec![ldam_onnx::onnx::builder::attr_float("epsilon", 1e-5)],
            ),
            node(
                "Gemm",
                &["normed", "fc.weight", "fc.bias"],
                &["scores"],
                vec![attr_int("transB", 1)],
            ),
        ],
        initializer: vec![
            f32_tensor("bn.weight", &[4], &[1.0, 0.5, 2.0, 1.5]),
            f32_tensor("bn.bias", &[4], &[0.0, 0.1, -0.2, 0.3]),
            f32_tensor("bn.running_mean", &[4], &[0.5, -0.5, 1.0, 0.0]),
            f32_tensor("bn.running_var", &[4], &[2.0, 0.5, 1.0, 3.0]),
            f32_tensor("fc.weight", &[3, 4], &random(rng, 12, 0.5)),
            f32_tensor("fc.bias", &[3], &random(rng, 3, 0.1)),
        ],
        input: vec![value_info(
            "x",
            FLOAT,
            &[Dim::Symbolic("N".into()), Dim::Fixed(4)],
        )],
        output: vec![value_info(
            "scores",
            FLOAT,
            &[Dim::Symbolic("N".into()), Dim::Fixed(3)],
        )],
        ..Default::default()
    };
    model_from_graph(graph, 17)
}

/// The step's updated running statistics after one step on `x` [6, 4].
fn running_statistics_after_one_step(mode: BatchNormMode, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let model = inference_batchnorm(&mut Rng::new(5));
    let (patched, summary) = patch(&model, &ce_options(mode)).unwrap();
    assert_eq!(
        summary.batchnorm_converted.len(),
        usize::from(mode == BatchNormMode::Train)
    );
    assert_eq!(
        ldam_onnx::onnx::metadata(&patched, "ldam_onnx.batchnorm"),
        Some(mode.as_str())
    );
    let step = compile(&patched, &CompileOptions::default()).unwrap();
    let initial = step.initial_values();
    let mut inputs = vec![
        ("x", Data::F32(vec![6, 4], x.to_vec())),
        ("labels", Data::I64(vec![6], vec![0, 1, 2, 0, 1, 2])),
        ("epoch", Data::I64(vec![], vec![0])),
        ("lr", Data::F32(vec![], vec![0.1])),
    ];
    for s in &step.state {
        let t = &initial[&s.name];
        inputs.push((
            s.name.as_str(),
            Data::F32(t.dims.clone(), f32_values(t).unwrap()),
        ));
    }
    let out = run(&step.model, &inputs);
    let read = |name: &str| -> Vec<f32> {
        match step.state.iter().find(|s| s.name == name) {
            Some(s) => out[&s.next].f32().to_vec(),
            // Not state: the step leaves it as it was.
            None => f32_values(
                patched
                    .graph
                    .as_ref()
                    .unwrap()
                    .initializer
                    .iter()
                    .find(|t| t.name() == name)
                    .unwrap(),
            )
            .unwrap(),
        }
    };
    (read("bn.running_mean"), read("bn.running_var"))
}

#[test]
fn inference_mode_batchnorm_trains_with_batch_statistics_as_model_train_does() {
    let x = random(&mut Rng::new(21), 24, 2.0);
    // PyTorch's update: running = 0.9 running + 0.1 batch, unbiased variance.
    let (mut mean, mut var) = (vec![0f64; 4], vec![0f64; 4]);
    for c in 0..4 {
        let col: Vec<f64> = (0..6).map(|n| x[n * 4 + c] as f64).collect();
        let m = col.iter().sum::<f64>() / 6.0;
        let v = col.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / 5.0;
        (mean[c], var[c]) = (m, v);
    }
    let old_mean = [0.5, -0.5, 1.0, 0.0];
    let old_var = [2.0, 0.5, 1.0, 3.0];
    let want_mean: Vec<f32> = (0..4)
        .map(|c| (0.9 * old_mean[c] + 0.1 * mean[c]) as f32)
        .collect();
    let want_var: Vec<f32> = (0..4)
        .map(|c| (0.9 * old_var[c] + 0.1 * var[c]) as f32)
        .collect();
    // Sums of 6 terms in float32: well inside 1e-5 of norms near 1.
    let bound = 1e-5;
    let (got_mean, got_var) = running_statistics_after_one_step(BatchNormMode::Train, &x);
    let err_mean = normwise_error(&got_mean, &want_mean, 0.0);
    let err_var = normwise_error(&got_var, &want_var, 0.0);
    assert!(
        err_mean <= bound,
        "running mean off by {err_mean}: {got_mean:?} vs {want_mean:?}"
    );
    assert!(
        err_var <= bound,
        "running var off by {err_var}: {got_var:?} vs {want_var:?}"
    );

    // Frozen keeps the exported statistics, which the same check rejects.
    let (frozen_mean, frozen_var) = running_statistics_after_one_step(BatchNormMode::Frozen, &x);
    let old_mean32: Vec<f32> = old_mean.iter().map(|&v| v as f32).collect();
    let old_var32: Vec<f32> = old_var.iter().map(|&v| v as f32).collect();
    assert_eq!(frozen_mean, old_mean32);
    assert_eq!(frozen_var, old_var32);
    assert!(normwise_error(&frozen_mean, &want_mean, 0.0) > 100.0 * bound);
    assert!(normwise_error(&frozen_var, &want_var, 0.0) > 100.0 * bound);
}

#[test]
fn a_final_log_softmax_output_named_logits_trains_on_the_logits_before_it() {
    let mut model = common::linear_model(&[0.1; 12], &[0.0; 3], 4, 3, 17);
    let graph = model.graph.as_mut().unwrap();
    graph.node.push(node(
        "LogSoftmax",
        &["scores"],
        &["logits"],
        vec![attr_int("axis", 1)],
    ));
    graph.output[0] = value_info("logits", FLOAT, &[Dim::Symbolic("N".into()), Dim::Fixed(3)]);
    let (patched, summary): (ModelProto, PatchSummary) =
        patch(&model, &ce_options(BatchNormMode::Train)).unwrap();
    assert_eq!(summary.head.logits, "scores");
    assert_eq!(summary.logits_renamed.as_deref(), Some("logits_1"));
    let outputs: Vec<&str> = patched
        .graph
        .as_ref()
        .unwrap()
        .output
        .iter()
        .map(|o| o.name())
        .collect();
    assert!(
        outputs.contains(&"logits_1") && outputs.contains(&"logits"),
        "{outputs:?}"
    );
    // An explicitly chosen name that is taken is still an error.
    let mut options = ce_options(BatchNormMode::Train);
    options.names.logits = "x".into();
    assert!(patch(&model, &options).is_err());
}

fn finding<'f>(findings: &'f [trainability::Finding], topic: &str) -> &'f trainability::Finding {
    findings
        .iter()
        .find(|f| f.topic == topic)
        .unwrap_or_else(|| panic!("no '{topic}' finding in {findings:?}"))
}

#[test]
fn trainability_names_folded_batchnorm_fixed_batch_and_missing_gradients_with_their_fixes() {
    // A convolution with no normalisation, a fixed batch, and an op with no
    // gradient rule (a made-up custom-domain op on the way to the logits).
    let mut rng = Rng::new(1);
    let mut graph = GraphProto {
        name: Some("folded".into()),
        node: vec![
            node("Conv", &["x", "conv.weight"], &["c"], vec![]),
            node("Flatten", &["c"], &["f"], vec![attr_int("axis", 1)]),
            node(
                "Gemm",
                &["f", "fc.weight"],
                &["scores"],
                vec![attr_int("transB", 1)],
            ),
        ],
        initializer: vec![
            f32_tensor("conv.weight", &[2, 1, 1, 1], &[1.0, -1.0]),
            f32_tensor("fc.weight", &[3, 32], &random(&mut rng, 96, 0.1)),
        ],
        input: vec![value_info(
            "x",
            FLOAT,
            &[Dim::Fixed(2), Dim::Fixed(1), Dim::Fixed(4), Dim::Fixed(4)],
        )],
        output: vec![value_info("scores", FLOAT, &[Dim::Fixed(2), Dim::Fixed(3)])],
        ..Default::default()
    };
    let findings = trainability::check(&model_from_graph(graph.clone(), 17));
    let norm = finding(&findings, "normalisation");
    assert_eq!(norm.verdict, Verdict::Warning);
    assert!(
        norm.line().contains("folded") && norm.line().contains("TRAINING"),
        "{}",
        norm.line()
    );
    let batch = finding(&findings, "batch");
    assert_eq!(batch.verdict, Verdict::Warning);
    assert!(
        batch.line().contains("fixes the batch at 2"),
        "{}",
        batch.line()
    );
    assert_eq!(finding(&findings, "gradients").verdict, Verdict::Fine);
    assert_eq!(finding(&findings, "head").verdict, Verdict::Fine);

    graph.node[1].domain = Some("com.example".into());
    let findings = trainability::check(&model_from_graph(graph, 17));
    let gradients = finding(&findings, "gradients");
    assert_eq!(gradients.verdict, Verdict::Blocker);
    assert!(
        gradients.line().contains("com.example:Flatten"),
        "{}",
        gradients.line()
    );
}

#[test]
fn external_weights_patch_compile_train_and_large_models_are_written_external() {
    let dir = tempfile::tempdir().unwrap();
    // fc.weight [3, 100] is 1200 bytes: at an inline limit of 0 it moves to
    // linear.onnx.data, the 12-byte bias stays (ONNX's own 1 KiB threshold).
    let mut rng = Rng::new(9);
    let model = common::linear_model(&random(&mut rng, 300, 0.1), &[0.0; 3], 100, 3, 17);
    let source = dir.path().join("linear.onnx");
    let tiny_limit = SaveOptions {
        inline_limit: 0,
        ..SaveOptions::default()
    };
    io::save(&model, None, &source, tiny_limit).unwrap();
    let loaded = io::load(&source).unwrap();
    let external: Vec<&str> = loaded
        .graph()
        .initializer
        .iter()
        .filter(|t| is_external(t))
        .map(|t| t.name())
        .collect();
    assert_eq!(
        external,
        ["fc.weight"],
        "only tensors of 1 KiB or more move"
    );
    assert!(dir.path().join("linear.onnx.data").exists());
    // Under the default limit the same model is written inline.
    let inline_path = dir.path().join("inline.onnx");
    io::save(&model, None, &inline_path, SaveOptions::default()).unwrap();
    assert!(!dir.path().join("inline.onnx.data").exists());

    // Patched from the external file and saved: the weight stays external.
    let (patched, _) = patch(&loaded.model, &ce_options(BatchNormMode::Train)).unwrap();
    let patched_path = dir.path().join("linear.ldam.onnx");
    io::save(
        &patched,
        Some(&loaded),
        &patched_path,
        SaveOptions::default(),
    )
    .unwrap();
    assert!(io::load(&patched_path)
        .unwrap()
        .graph()
        .initializer
        .iter()
        .any(is_external));

    // What `train` reads: the patched file with its data. Two steps in ONNX
    // Runtime move the weight read from the data file.
    let with_data = io::load_with_data(&patched_path).unwrap();
    let weight = |m: &ModelProto| {
        f32_values(
            m.graph
                .as_ref()
                .unwrap()
                .initializer
                .iter()
                .find(|t| t.name() == "fc.weight")
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        weight(&with_data.model),
        weight(&model),
        "read back exactly"
    );
    let step = compile(&with_data.model, &CompileOptions::default()).unwrap();
    let mut trainer =
        ldam_onnx::backend::onnxruntime::OrtTrainer::new(&step, ldam_onnx::backend::Device::Cpu)
            .unwrap();
    let batch = ldam_onnx::backend::Batch {
        shape: vec![4, 100],
        data: random(&mut rng, 400, 1.0),
        labels: vec![0, 1, 2, 1],
    };
    use ldam_onnx::backend::Trainer;
    let first = trainer.step(&batch, 0, 0.5).unwrap();
    let second = trainer.step(&batch, 0, 0.5).unwrap();
    assert!(first.loss.is_finite() && second.loss.is_finite());
    assert!(
        second.loss < first.loss,
        "{} then {}",
        first.loss,
        second.loss
    );

    // The step and its state file, written beside an external source and read
    // back: every state tensor has its values.
    let step_path = dir.path().join("linear.train.onnx");
    let patched_loaded = io::load(&patched_path).unwrap();
    let step = compile(&patched_loaded.model, &CompileOptions::default()).unwrap();
    step.save(&step_path, Some(&patched_loaded), SaveOptions::default())
        .unwrap();
    let state = ldam_onnx::compile::files::initial_state(&io::load(&step_path).unwrap()).unwrap();
    assert_eq!(f32_values(&state["fc.weight"]).unwrap(), weight(&model));
}

/// The default exporter keeps every tensor of 1 KiB or more in the data file,
/// a constant it repeated per example (a class token expanded at batch 2)
/// included: the CLI reads such small constants, so that it can see their rows
/// are equal and free the batch, and leaves the weights in a data file.
#[test]
fn the_cli_frees_the_batch_of_an_export_whose_repeated_constant_is_in_its_data_file() {
    const WIDTH: usize = 1200; // the two weights: 76.8 KB each, the token 9.6 KB
    let mut rng = Rng::new(5);
    let token_row = random(&mut rng, WIDTH, 1.0);
    let tokens: Vec<f32> = token_row.iter().chain(&token_row).copied().collect();
    let model = fixed_batch_model(
        "repeated_token",
        vec![
            node("Reshape", &["x", "rows"], &["x_flat"], vec![]),
            node("MatMul", &["x_flat", "up.weight"], &["wide"], vec![]),
            node("Add", &["wide", "tokens"], &["mixed"], vec![]),
            node("MatMul", &["mixed", "down.weight"], &["flat"], vec![]),
        ],
        vec![
            i64_tensor("rows", &[2], &[2, 16]),
            f32_tensor(
                "up.weight",
                &[16, WIDTH as i64],
                &random(&mut rng, 16 * WIDTH, 0.2),
            ),
            f32_tensor("tokens", &[2, WIDTH as i64], &tokens),
            f32_tensor(
                "down.weight",
                &[WIDTH as i64, 16],
                &random(&mut rng, 16 * WIDTH, 0.02),
            ),
        ],
        4,
    );
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("exported.onnx");
    let all_external = SaveOptions {
        inline_limit: 0,
        ..SaveOptions::default()
    };
    io::save(&model, None, &source, all_external).unwrap();
    let external = |path: &std::path::Path| -> Vec<String> {
        let loaded = io::load(path).unwrap();
        let mut names: Vec<String> = loaded
            .graph()
            .initializer
            .iter()
            .filter(|t| is_external(t))
            .map(|t| t.name().to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(external(&source), ["down.weight", "tokens", "up.weight"]);

    let out = dir.path().join("patched.onnx");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
        .args(["patch", "--loss", "ce", "--class-counts", "3,2,1", "-o"])
        .arg(&out)
        .arg(&source)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "patch failed: {stderr}");
    let patched = io::load_with_data(&out).unwrap();
    assert!(
        matches!(first_dim(&patched.model, "x"), Dim::Symbolic(_)),
        "the batch is still fixed: {stderr}"
    );
    assert_eq!(external(&out), ["down.weight", "up.weight"]);

    // At batch 3 every example gets the token row, as the export did at batch 2:
    // ((x up + token) down) fc^T + b, in float64.
    let x = random(&mut Rng::new(6), 3 * 16, 1.0);
    let got = patched_logits(&patched.model, &x, 3);
    let get = |name: &str| {
        let graph = model.graph.as_ref().unwrap();
        f32_values(graph.initializer.iter().find(|t| t.name() == name).unwrap()).unwrap()
    };
    let (up, down) = (get("up.weight"), get("down.weight"));
    let mut flat = Vec::new();
    for n in 0..3 {
        let wide: Vec<f64> = (0..WIDTH)
            .map(|j| {
                let dot: f64 = (0..16)
                    .map(|k| x[n * 16 + k] as f64 * up[k * WIDTH + j] as f64)
                    .sum();
                dot + token_row[j] as f64
            })
            .collect();
        for k in 0..16 {
            let dot: f64 = (0..WIDTH).map(|j| wide[j] * down[j * 16 + k] as f64).sum();
            flat.push(dot as f32);
        }
    }
    let want = expected_logits(&model, &flat, 3);
    let err = normwise_error(&got, &want, 0.0);
    assert!(err <= 1e-5, "logits differ by {err} (normwise)");
}

/// A constant with one row per example of the export's batch whose rows differ
/// has no value at another batch size: refused, naming the node and the
/// constant, rather than written as a model that fails at batch 3.
#[test]
fn a_constant_with_different_rows_per_example_pins_the_batch() {
    let mut rng = Rng::new(8);
    let model = fixed_batch_model(
        "per_example_constant",
        vec![
            node("Reshape", &["x", "rows"], &["x_flat"], vec![]),
            node("Add", &["x_flat", "offsets"], &["flat"], vec![]),
        ],
        vec![
            i64_tensor("rows", &[2], &[2, 16]),
            f32_tensor("offsets", &[2, 16], &random(&mut rng, 32, 1.0)),
        ],
        8,
    );
    let e = patch(&model, &ce_options(BatchNormMode::Train))
        .err()
        .expect("refused");
    let message = e.to_string();
    for needle in ["Add node 'Add_flat'", "'offsets'", "dynamic_shapes"] {
        assert!(message.contains(needle), "{needle} missing: {message}");
    }
}

/// The Hugging Face recipe through the CLI: the committed BERT export (int64
/// token ids) patched with the counts of an NPZ of token ids, trained by
/// `train` on each backend, and the deployed model evaluated on its own gives
/// the accuracy its run reported.
#[test]
fn a_token_classifier_trains_from_an_npz_of_token_ids() {
    use ndarray::{Array1, Array2};
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let mut rng = Rng::new(12);
    let ids: Vec<i64> = (0..48 * 12)
        .map(|_| 1 + (rng.next_u64() % 99) as i64)
        .collect();
    let labels: Vec<i64> = (0..48).map(|i| [0, 0, 0, 1, 1, 2, 3, 4][i % 8]).collect();
    let mut npz = ndarray_npy::NpzWriter::new(std::fs::File::create(p("tokens.npz")).unwrap());
    npz.add_array("x", &Array2::from_shape_vec((48, 12), ids).unwrap())
        .unwrap();
    npz.add_array("y", &Array1::from(labels)).unwrap();
    npz.finish().unwrap();
    let model = common::repo_dir().join("tests/exports/hf_bert__helper.onnx");
    let run = common::cli::ldam_ok;
    let patched = p("bert.ldam.onnx");
    run(&[
        "patch",
        &model.display().to_string(),
        "--labels-file",
        &p("tokens.npz"),
        "-o",
        &patched,
    ]);
    let mut backends = vec!["onnxruntime"];
    if cfg!(feature = "torch") {
        backends.push("torch");
    }
    for backend in backends {
        let out = p(&format!("run-{backend}"));
        run(&[
            "train",
            &patched,
            "--train",
            &p("tokens.npz"),
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--augment",
            "none",
            "--backend",
            backend,
            "--out",
            &out,
        ]);
        common::cli::assert_eval_reproduces_the_report(
            std::path::Path::new(&out),
            &["--test", &p("tokens.npz")],
        );
    }
}
