//! Models whose weights live in an external data file: loading checks every
//! reference, ONNX Runtime runs them, patching and saving elsewhere copies the
//! weights into `<output>.data` without touching the source folder, and references
//! that leave the model's folder or its data file are rejected.

mod common;

use common::{model_from_graph, node, run, run_session, Data, Rng};
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::io::{self, SaveOptions};
use ldam_onnx::onnx::proto::tensor_proto::DataLocation;
use ldam_onnx::onnx::tensor::{f32_tensor, i64_tensor, is_external, FLOAT};
use ldam_onnx::onnx::types::{value_info, Dim};
use ldam_onnx::onnx::{GraphProto, ModelProto, StringStringEntryProto, TensorProto};
use ldam_onnx::patch::{patch, ContractNames, HeadMode, PatchOptions};
use prost::Message;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const COUNTS: [u64; 10] = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];
const BATCH: i64 = 4;
/// Junk bytes between tensors in `weights.bin`, so a reader that ignores the offsets
/// reads the wrong values.
const GAP: usize = 13;

fn mlp_path() -> PathBuf {
    common::repo_dir().join("models/mlp.onnx")
}

fn mlp() -> ModelProto {
    io::load(&mlp_path()).unwrap().model
}

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value.into()),
    }
}

fn point_at(tensor: &mut TensorProto, location: &str, offset: u64, length: u64) {
    tensor.raw_data = None;
    tensor.data_location = Some(DataLocation::External as i32);
    tensor.external_data = vec![
        entry("location", location),
        entry("offset", &offset.to_string()),
        entry("length", &length.to_string()),
    ];
}

/// mlp.onnx with every initializer moved into `dir/weights.bin` (with gaps), written
/// as `dir/model.onnx`. Returns the model path and the externalised message.
fn write_external_mlp(dir: &Path) -> (PathBuf, ModelProto) {
    let mut model = mlp();
    let mut data = Vec::new();
    let graph = model.graph.as_mut().unwrap();
    assert!(!graph.initializer.is_empty());
    for tensor in &mut graph.initializer {
        let raw = tensor
            .raw_data
            .clone()
            .unwrap_or_else(|| panic!("'{}' has raw_data", tensor.name()));
        data.extend(std::iter::repeat_n(0xAB, GAP));
        let offset = data.len() as u64;
        data.extend_from_slice(&raw);
        point_at(tensor, "weights.bin", offset, raw.len() as u64);
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("weights.bin"), &data).unwrap();
    let path = dir.join("model.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    (path, model)
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn random_input(seed: u64) -> Data {
    let len = (BATCH * 28 * 28) as usize;
    Data::F32(
        vec![BATCH, 1, 28, 28],
        Rng::new(seed).floats(len, -1.0, 1.0),
    )
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn ext_entry<'t>(tensor: &'t TensorProto, key: &str) -> &'t str {
    tensor
        .external_data
        .iter()
        .find(|e| e.key() == key)
        .unwrap_or_else(|| panic!("'{}' has external_data '{key}'", tensor.name()))
        .value()
}

#[test]
fn external_weights_load_and_run_like_the_inline_model() {
    let dir = tempfile::tempdir().unwrap();
    let (path, written) = write_external_mlp(dir.path());
    let loaded = io::load(&path).expect("io::load accepts in-folder external data");
    assert!(loaded.model == written);
    assert_eq!(
        io::external_tensors(loaded.graph()).len(),
        mlp().graph.unwrap().initializer.len(),
        "every initializer is external"
    );

    let mut session =
        ldam_onnx::runtime::session_from_file(&path).expect("ONNX Runtime loads the file");
    for seed in 0..3 {
        let input = random_input(seed);
        let external = run_session(&mut session, &[("input", input.clone())]);
        let inline = run(&mlp(), &[("input", input)]);
        let (e, i) = (&external["logits"], &inline["logits"]);
        assert_eq!(e.shape(), [BATCH, 10]);
        assert_eq!(e.shape(), i.shape());
        let diff = max_abs_diff(e.f32(), i.f32());
        assert!(diff <= 1e-6, "seed {seed}: logits differ by {diff}");
    }
}

fn options() -> PatchOptions {
    PatchOptions {
        batchnorm: Default::default(),
        config: LossConfig::reference(COUNTS.to_vec()),
        head: HeadMode::Auto,
        logits: None,
        names: ContractNames::default(),
    }
}

#[test]
fn patch_and_save_elsewhere_copies_weights_to_output_data_and_leaves_source_alone() {
    let root = tempfile::tempdir().unwrap();
    let src_dir = root.path().join("src");
    let out_dir = root.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let (path, _) = write_external_mlp(&src_dir);
    let before = snapshot(&src_dir);

    let loaded = io::load(&path).unwrap();
    let (patched, _) = patch(&loaded.model, &options()).unwrap();
    let out = out_dir.join("patched.onnx");
    io::save(&patched, Some(&loaded), &out, SaveOptions::default())
        .expect("save with external data");

    // The output folder holds exactly the model and its data file.
    let data_path = out_dir.join("patched.onnx.data");
    let files: Vec<PathBuf> = snapshot(&out_dir).into_keys().collect();
    assert_eq!(
        files,
        [out.clone(), data_path.clone()],
        "no temporary files left in the output folder"
    );
    assert_eq!(
        snapshot(&src_dir),
        before,
        "the source folder's files are unchanged"
    );

    // Every weight that was external stays external, pointing into the new data file
    // with exactly the original bytes.
    let saved = io::load(&out).expect("the saved model loads");
    let data = std::fs::read(&data_path).unwrap();
    let inline = mlp();
    let inline_init = &inline.graph.as_ref().unwrap().initializer;
    let saved_init = &saved.graph().initializer;
    let mut external = 0;
    for original in inline_init {
        let Some(tensor) = saved_init.iter().find(|t| t.name() == original.name()) else {
            continue; // the head bias, dropped by the cosine head
        };
        external += 1;
        assert!(is_external(tensor), "'{}' is still external", tensor.name());
        assert!(
            tensor.raw_data.is_none(),
            "'{}' has no inline raw_data",
            tensor.name()
        );
        assert_eq!(ext_entry(tensor, "location"), "patched.onnx.data");
        let offset: usize = ext_entry(tensor, "offset").parse().unwrap();
        let length: usize = ext_entry(tensor, "length").parse().unwrap();
        assert_eq!(
            &data[offset..offset + length],
            original.raw_data.as_deref().unwrap(),
            "'{}' bytes in the data file",
            tensor.name()
        );
    }
    assert_eq!(
        external + 1,
        inline_init.len(),
        "all weights but the dropped head bias"
    );
    for tensor in saved_init.iter().filter(|t| t.name().starts_with("ldam")) {
        assert!(
            !is_external(tensor),
            "new loss constant '{}' is inline",
            tensor.name()
        );
    }

    // ONNX Runtime runs the saved file by path, like the patched inline model.
    let (patched_inline, _) = patch(&inline, &options()).unwrap();
    let mut session =
        ldam_onnx::runtime::session_from_file(&out).expect("ONNX Runtime loads the saved file");
    for epoch in [0, 200] {
        let inputs = [
            ("input", random_input(epoch as u64 + 7)),
            ("labels", Data::I64(vec![BATCH], vec![0, 9, 4, 9])),
            ("epoch", Data::I64(vec![], vec![epoch])),
        ];
        let from_file = run_session(&mut session, &inputs);
        let reference = run(&patched_inline, &inputs);
        for name in ["loss", "logits"] {
            assert_eq!(
                from_file[name].shape(),
                reference[name].shape(),
                "{name} shape"
            );
            let diff = max_abs_diff(from_file[name].f32(), reference[name].f32());
            assert!(diff <= 1e-6, "epoch {epoch}: {name} differs by {diff}");
        }
    }
    assert_eq!(
        snapshot(&src_dir),
        before,
        "the source folder's files are unchanged after running"
    );
}

/// Loads `model` (written to `dir/model.onnx`) and expects an external-data error
/// naming `tensor` whose text contains `needle`.
fn assert_rejected(dir: &Path, model: &ModelProto, tensor: &str, needle: &str) {
    let path = dir.join("model.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    let error = match io::load(&path) {
        Ok(_) => panic!("io::load must reject the reference of '{tensor}'"),
        Err(error) => error,
    };
    let text = error.to_string();
    match &error {
        ldam_onnx::Error::ExternalData { tensor: named, .. } => assert_eq!(named, tensor, "{text}"),
        other => panic!("expected an external-data error, got {other:?}"),
    }
    assert!(
        text.contains(&format!("'{tensor}'")),
        "error names the tensor: {text}"
    );
    assert!(text.contains(needle), "error mentions {needle:?}: {text}");
}

/// The externalised mlp with its first initializer pointing at `location`.
fn retarget_first(model: &ModelProto, location: &str) -> (ModelProto, String) {
    let mut model = model.clone();
    let tensor = &mut model.graph.as_mut().unwrap().initializer[0];
    let length: u64 = ext_entry(tensor, "length").parse().unwrap();
    point_at(tensor, location, 0, length);
    let name = tensor.name().to_string();
    (model, name)
}

#[test]
fn location_with_parent_component_is_rejected_naming_the_tensor() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("model");
    let (_, model) = write_external_mlp(&dir);
    // The file exists and is large enough: only its location is wrong.
    copy_file(&dir.join("weights.bin"), &root.path().join("escape.bin"));
    let (bad, name) = retarget_first(&model, "../escape.bin");
    assert_rejected(&dir, &bad, &name, "outside the model's folder");
    let (bad, name) = retarget_first(&model, "sub/../../escape.bin");
    assert_rejected(&dir, &bad, &name, "outside the model's folder");
}

#[test]
fn absolute_location_is_rejected_naming_the_tensor() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("model");
    let (_, model) = write_external_mlp(&dir);
    let inside = dir.join("weights.bin");
    let outside = root.path().join("abs.bin");
    // The folder's own data file needs no copy (copying a file onto itself
    // truncates it); the one outside is a copy, failing loudly if it cannot be.
    copy_file(&inside, &outside);
    let size = file_len(&inside);
    assert_eq!(file_len(&outside), size);
    // Even an absolute path into the model's own folder is refused. Both files
    // exist and hold the first tensor's span: only the location is wrong.
    for target in [&inside, &outside] {
        let (bad, name) = retarget_first(&model, target.to_str().unwrap());
        let tensor = &bad.graph.as_ref().unwrap().initializer[0];
        let length: u64 = ext_entry(tensor, "length").parse().unwrap();
        assert!(
            length > 0 && length <= file_len(target),
            "{}",
            target.display()
        );
        assert_rejected(&dir, &bad, &name, "outside the model's folder");
    }
    assert_eq!(file_len(&inside), size, "the model's data file is intact");
}

/// Copies `from` to another file `to`, panicking on any I/O error.
fn copy_file(from: &Path, to: &Path) {
    let source = std::fs::canonicalize(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    if let Ok(target) = std::fs::canonicalize(to) {
        assert_ne!(
            source,
            target,
            "copying {} onto itself would truncate it",
            from.display()
        );
    }
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

#[cfg(unix)]
#[test]
fn symlink_leaving_the_folder_is_rejected_naming_the_tensor() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("model");
    let (_, model) = write_external_mlp(&dir);
    let outside = root.path().join("outside.bin");
    copy_file(&dir.join("weights.bin"), &outside);
    std::os::unix::fs::symlink(&outside, dir.join("link.bin")).unwrap();
    let (bad, name) = retarget_first(&model, "link.bin");
    assert_rejected(&dir, &bad, &name, "through a link");

    // A link that stays inside the folder is fine.
    std::os::unix::fs::symlink(dir.join("weights.bin"), dir.join("inside.bin")).unwrap();
    let (good, _) = retarget_first(&model, "inside.bin");
    std::fs::write(dir.join("model.onnx"), good.encode_to_vec()).unwrap();
    io::load(&dir.join("model.onnx")).expect("a link inside the folder is accepted");
}

#[test]
fn span_past_the_end_of_the_data_file_is_rejected_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = write_external_mlp(dir.path());
    let size = std::fs::metadata(dir.path().join("weights.bin"))
        .unwrap()
        .len();
    let last = model.graph.as_ref().unwrap().initializer.len() - 1;

    // The last tensor one byte too long.
    let mut bad = model.clone();
    let tensor = &mut bad.graph.as_mut().unwrap().initializer[last];
    let offset: u64 = ext_entry(tensor, "offset").parse().unwrap();
    let length: u64 = ext_entry(tensor, "length").parse().unwrap();
    assert_eq!(offset + length, size, "the last tensor ends the file");
    point_at(tensor, "weights.bin", offset, length + 1);
    let name = tensor.name().to_string();
    assert_rejected(dir.path(), &bad, &name, "past the end");

    // An offset beyond the file, and an offset + length that overflows u64.
    for (offset, length) in [(size + 1, 0), (1, u64::MAX)] {
        let mut bad = model.clone();
        let tensor = &mut bad.graph.as_mut().unwrap().initializer[0];
        point_at(tensor, "weights.bin", offset, length);
        let name = tensor.name().to_string();
        assert_rejected(dir.path(), &bad, &name, "past the end");
    }
}

#[test]
fn missing_data_file_is_rejected_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = write_external_mlp(dir.path());
    let (bad, name) = retarget_first(&model, "absent.bin");
    assert_rejected(dir.path(), &bad, &name, "absent.bin");
}

#[test]
fn streaming_writer_round_trips_the_inline_mlp() {
    let model = mlp();
    let bytes = io::to_bytes(&model);
    let decoded = ModelProto::decode(bytes.as_slice()).expect("prost decodes to_bytes output");
    assert!(
        decoded == model,
        "to_bytes(mlp) decodes to the same message"
    );
    assert_eq!(
        bytes.len(),
        model.encoded_len(),
        "same length as prost's encoding"
    );
}

#[test]
fn streaming_writer_round_trips_a_model_with_multi_megabyte_initializers() {
    // 1.2 MB and 2.4 MB payloads: 3- and 4-byte length varints at every level.
    let mut rng = Rng::new(42);
    let (f_small, f_big, classes) = (300, 2000, 300);
    let w1 = rng.floats(f_small * 1000, -1.0, 1.0);
    let w2 = rng.floats(f_big * classes, -1.0, 1.0);
    let batch = Dim::Symbolic("N".into());
    let graph = GraphProto {
        name: Some("big".into()),
        node: vec![
            node("MatMul", &["x", "w1"], &["h"], vec![]),
            node("Reshape", &["h", "shape"], &["h2"], vec![]),
            node("MatMul", &["h2", "w2"], &["scores"], vec![]),
        ],
        initializer: vec![
            f32_tensor("w1", &[f_small as i64, 1000], &w1),
            i64_tensor("shape", &[2], &[-1, f_big as i64]),
            TensorProto {
                // No raw_data: exercises the writer's other path.
                name: Some("unused_float_data".into()),
                dims: vec![3],
                data_type: Some(FLOAT),
                float_data: vec![1.0, 2.0, 3.0],
                ..Default::default()
            },
            f32_tensor("w2", &[f_big as i64, classes as i64], &w2),
        ],
        input: vec![value_info(
            "x",
            FLOAT,
            &[batch.clone(), Dim::Fixed(f_small as i64)],
        )],
        output: vec![value_info(
            "scores",
            FLOAT,
            &[batch, Dim::Fixed(classes as i64)],
        )],
        doc_string: Some("written by the streaming writer".into()),
        ..Default::default()
    };
    let mut model = model_from_graph(graph, 17);
    model.metadata_props.push(entry("note", "big"));
    let bytes = io::to_bytes(&model);
    assert!(
        bytes.len() > 3_000_000,
        "the model is several MB ({} bytes)",
        bytes.len()
    );
    let decoded = ModelProto::decode(bytes.as_slice()).expect("prost decodes to_bytes output");
    assert!(decoded == model, "to_bytes decodes to the same message");
    assert_eq!(
        bytes.len(),
        model.encoded_len(),
        "same length as prost's encoding"
    );

    // And io::save writes the same bytes.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big.onnx");
    io::save(&model, None, &out, SaveOptions::default()).unwrap();
    assert!(
        std::fs::read(&out).unwrap() == bytes,
        "save writes to_bytes' bytes"
    );
}

#[test]
fn location_naming_the_folder_itself_is_rejected_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = write_external_mlp(dir.path());
    let mut bad = model.clone();
    let tensor = &mut bad.graph.as_mut().unwrap().initializer[0];
    point_at(tensor, ".", 0, 16);
    let name = tensor.name().to_string();
    // Any wording, as long as it is an external-data error naming the tensor.
    assert_rejected(dir.path(), &bad, &name, "");
}

/// Source tensors spread over two files, the second of which is the data file the
/// output would get: saving with overwrite must not replace the input's weights.
#[test]
fn save_never_overwrites_any_of_the_inputs_data_files() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut model) = write_external_mlp(dir.path());
    copy_file(
        &dir.path().join("weights.bin"),
        &dir.path().join("out.onnx.data"),
    );
    let graph = model.graph.as_mut().unwrap();
    for tensor in graph.initializer.iter_mut().skip(1) {
        let (offset, length) = (
            ext_entry(tensor, "offset").to_string(),
            ext_entry(tensor, "length").to_string(),
        );
        point_at(
            tensor,
            "out.onnx.data",
            offset.parse().unwrap(),
            length.parse().unwrap(),
        );
    }
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    let before = snapshot(dir.path());
    let loaded = io::load(&path).unwrap();
    let result = io::save(
        &loaded.model,
        Some(&loaded),
        &dir.path().join("out.onnx"),
        SaveOptions::overwriting(true),
    );
    let after = snapshot(dir.path());
    let changed: Vec<_> = before
        .keys()
        .filter(|p| after.get(*p) != before.get(*p))
        .collect();
    assert!(result.is_err(), "save should refuse to replace 'out.onnx.data', which the input reads; changed: {changed:?}");
    assert!(
        changed.is_empty(),
        "the input's files are unchanged; changed: {changed:?}"
    );
}

/// Overwriting is for the output: an output path that is the input's data file is
/// refused even with overwrite, as an output equal to the input model is.
#[test]
fn save_never_writes_the_model_over_the_inputs_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_external_mlp(dir.path());
    let before = snapshot(dir.path());
    let loaded = io::load(&path).unwrap();
    let out = dir.path().join("weights.bin");
    let result = io::save(
        &loaded.model,
        Some(&loaded),
        &out,
        SaveOptions::overwriting(true),
    );
    let after = snapshot(dir.path());
    let changed: Vec<_> = before
        .keys()
        .filter(|p| after.get(*p) != before.get(*p))
        .collect();
    assert!(result.is_err(), "save should refuse to write over 'weights.bin', which the input reads; changed: {changed:?}");
    assert!(
        changed.is_empty(),
        "the input's files are unchanged; changed: {changed:?}"
    );
}
