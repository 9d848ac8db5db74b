//! Load + save keeps every model in `models/` intact, as judged by our prost types
//! and by an independent decoder (`onnx-protobuf`, rust-protobuf 3.4), and a patched
//! model differs from its original by exactly the intended changes.

mod common;

use ldam_onnx::ldam::{effective_number_weights, LossConfig};
use ldam_onnx::onnx::io::{self, SaveOptions};
use ldam_onnx::patch::{patch, ContractNames, HeadMode, PatchOptions};
use onnx_protobuf::{Message, ModelProto as PbModel};
use prost::Message as _;
use std::path::Path;

const COUNTS: [u64; 10] = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];
/// `TensorProto.DataType` codes.
const FLOAT: i32 = 1;
const INT64: i32 = 7;

fn independent_decode(bytes: &[u8], what: &str) -> PbModel {
    PbModel::parse_from_bytes(bytes)
        .unwrap_or_else(|e| panic!("{what}: onnx-protobuf cannot decode: {e}"))
}

fn load_and_save(path: &Path, dir: &Path) -> (ldam_onnx::onnx::io::LoadedModel, Vec<u8>) {
    let loaded = io::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let out = dir.join(path.file_name().unwrap());
    io::save(&loaded.model, Some(&loaded), &out, SaveOptions::default())
        .unwrap_or_else(|e| panic!("saving {}: {e}", out.display()));
    let saved = std::fs::read(&out).unwrap();
    (loaded, saved)
}

fn entries(props: &[onnx_protobuf::StringStringEntryProto]) -> Vec<(String, String)> {
    props
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

fn names(values: &[onnx_protobuf::ValueInfoProto]) -> Vec<&str> {
    values.iter().map(|v| v.name.as_str()).collect()
}

/// Field-by-field comparison (for readable failures), then whole-message equality
/// (which also covers fields not listed here and unknown fields).
fn assert_same_content(expected: &PbModel, actual: &PbModel, what: &str) {
    assert_eq!(actual.ir_version, expected.ir_version, "{what}: ir_version");
    assert_eq!(
        actual.producer_name, expected.producer_name,
        "{what}: producer_name"
    );
    assert_eq!(
        actual.producer_version, expected.producer_version,
        "{what}: producer_version"
    );
    assert_eq!(actual.domain, expected.domain, "{what}: domain");
    assert_eq!(
        actual.model_version, expected.model_version,
        "{what}: model_version"
    );
    assert_eq!(
        actual.doc_string, expected.doc_string,
        "{what}: model doc_string"
    );
    let opsets = |m: &PbModel| {
        m.opset_import
            .iter()
            .map(|o| (o.domain.clone(), o.version))
            .collect::<Vec<_>>()
    };
    assert_eq!(opsets(actual), opsets(expected), "{what}: opset_import");
    assert_eq!(
        entries(&actual.metadata_props),
        entries(&expected.metadata_props),
        "{what}: metadata_props"
    );

    let (eg, ag) = (
        expected.graph.as_ref().unwrap(),
        actual.graph.as_ref().unwrap(),
    );
    assert_eq!(ag.name, eg.name, "{what}: graph name");
    assert_eq!(ag.doc_string, eg.doc_string, "{what}: graph doc_string");
    assert_eq!(ag.node.len(), eg.node.len(), "{what}: node count");
    for (i, (a, e)) in ag.node.iter().zip(&eg.node).enumerate() {
        let at = format!("{what}: node {i} ({} '{}')", e.op_type, e.name);
        assert_eq!(a.op_type, e.op_type, "{at}: op_type");
        assert_eq!(a.name, e.name, "{at}: name");
        assert_eq!(a.domain, e.domain, "{at}: domain");
        assert_eq!(a.input, e.input, "{at}: inputs");
        assert_eq!(a.output, e.output, "{at}: outputs");
        assert_eq!(a.doc_string, e.doc_string, "{at}: doc_string");
        let attr_names = |n: &onnx_protobuf::NodeProto| {
            n.attribute
                .iter()
                .map(|x| x.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(attr_names(a), attr_names(e), "{at}: attribute names");
        for (x, y) in a.attribute.iter().zip(&e.attribute) {
            assert_eq!(x, y, "{at}: attribute '{}' value", y.name);
        }
        assert_eq!(a, e, "{at}: whole node");
    }
    assert_eq!(
        ag.initializer.len(),
        eg.initializer.len(),
        "{what}: initializer count"
    );
    for (a, e) in ag.initializer.iter().zip(&eg.initializer) {
        let at = format!("{what}: initializer '{}'", e.name);
        assert_eq!(a.name, e.name, "{at}: name");
        assert_eq!(a.dims, e.dims, "{at}: dims");
        assert_eq!(a.data_type, e.data_type, "{at}: data_type");
        assert!(a.raw_data == e.raw_data, "{at}: raw_data bytes differ");
        assert_eq!(a.doc_string, e.doc_string, "{at}: doc_string");
        assert!(a == e, "{at}: whole tensor differs");
    }
    assert_eq!(names(&ag.input), names(&eg.input), "{what}: graph inputs");
    assert_eq!(
        names(&ag.output),
        names(&eg.output),
        "{what}: graph outputs"
    );
    assert_eq!(
        names(&ag.value_info),
        names(&eg.value_info),
        "{what}: value_info"
    );
    assert_eq!(ag.input, eg.input, "{what}: graph input types");
    assert_eq!(ag.output, eg.output, "{what}: graph output types");
    assert_eq!(ag.value_info, eg.value_info, "{what}: value_info types");
    assert_eq!(
        entries(&ag.metadata_props),
        entries(&eg.metadata_props),
        "{what}: graph metadata_props"
    );
    assert!(
        actual == expected,
        "{what}: the decoded models differ in some other field"
    );
}

#[test]
fn load_then_save_keeps_every_model_equal_under_both_decoders() {
    let dir = tempfile::tempdir().unwrap();
    for path in common::model_files() {
        let what = path.file_name().unwrap().to_string_lossy().into_owned();
        let original = std::fs::read(&path).unwrap();
        let (loaded, saved) = load_and_save(&path, dir.path());

        // (a) our prost types: the saved file decodes to the loaded message.
        let reloaded = ldam_onnx::onnx::ModelProto::decode(saved.as_slice())
            .unwrap_or_else(|e| panic!("{what}: prost cannot decode the saved file: {e}"));
        assert!(
            reloaded == loaded.model,
            "{what}: prost decodes the saved file to a different message"
        );
        // ... and `io::load` accepts the saved file.
        let reloaded =
            io::load(&dir.path().join(&what)).unwrap_or_else(|e| panic!("{what}: reload: {e}"));
        assert!(
            reloaded.model == loaded.model,
            "{what}: io::load of the saved file differs"
        );

        // (b) the independent decoder sees the same model in both files.
        assert_same_content(
            &independent_decode(&original, &what),
            &independent_decode(&saved, &what),
            &what,
        );

        // The writer emits fields in field-number order, as the exporter's
        // protobuf encoder does, so nothing moves.
        let first_difference = saved.iter().zip(&original).position(|(a, b)| a != b);
        assert!(
            saved == original,
            "{what}: load+save is not byte-identical (first difference at byte {first_difference:?}, {} -> {} bytes)",
            original.len(),
            saved.len()
        );
    }
}

#[test]
fn to_bytes_and_save_write_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for path in common::model_files() {
        let (loaded, saved) = load_and_save(&path, dir.path());
        assert!(
            io::to_bytes(&loaded.model) == saved,
            "{}: to_bytes differs from the saved file",
            path.display()
        );
    }
}

fn tensor_f32(t: &onnx_protobuf::TensorProto) -> Vec<f32> {
    assert_eq!(t.data_type, FLOAT, "'{}' is float32", t.name);
    if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}

fn tensor_i64(t: &onnx_protobuf::TensorProto) -> Vec<i64> {
    assert_eq!(t.data_type, INT64, "'{}' is int64", t.name);
    if t.raw_data.is_empty() {
        t.int64_data.clone()
    } else {
        t.raw_data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}

/// `(elem_type, dims)` of a tensor value; dims as `dim_param` or the number.
fn signature(v: &onnx_protobuf::ValueInfoProto) -> (i32, Vec<String>) {
    let tensor = v.type_.tensor_type();
    assert!(tensor.shape.is_some(), "'{}' has a shape", v.name);
    let dims = tensor
        .shape
        .dim
        .iter()
        .map(|d| {
            if d.has_dim_param() {
                d.dim_param().to_string()
            } else {
                d.dim_value().to_string()
            }
        })
        .collect();
    (tensor.elem_type, dims)
}

fn assert_all_close(actual: &[f32], expected: &[f64], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let err = (a as f64 - e).abs() / e.abs().max(1e-12);
        assert!(
            err <= 1e-6,
            "{what}[{i}]: {a} vs {e} (relative error {err:e})"
        );
    }
}

#[test]
fn patched_mlp_is_the_original_plus_exactly_the_loss_and_cosine_head() {
    let source = common::repo_dir().join("models/mlp.onnx");
    let loaded = io::load(&source).unwrap();
    let options = PatchOptions {
        batchnorm: Default::default(),
        config: LossConfig::reference(COUNTS.to_vec()),
        head: HeadMode::Auto,
        logits: None,
        names: ContractNames::default(),
    };
    let (patched, summary) = patch(&loaded.model, &options).expect("mlp.onnx patches");
    assert!(
        summary.cosine,
        "the default LDAM options rewrite mlp's Gemm head"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mlp.ldam.onnx");
    io::save(&patched, Some(&loaded), &out, SaveOptions::default()).unwrap();
    let saved = std::fs::read(&out).unwrap();
    let reloaded = ldam_onnx::onnx::ModelProto::decode(saved.as_slice()).unwrap();
    assert!(
        reloaded == patched,
        "prost decodes the saved patched model to the patched message"
    );

    let before = independent_decode(&std::fs::read(&source).unwrap(), "mlp.onnx");
    let after = independent_decode(&saved, "mlp.ldam.onnx");
    let (bg, ag) = (
        before.graph.as_ref().unwrap(),
        after.graph.as_ref().unwrap(),
    );

    // Model envelope unchanged.
    assert_eq!(after.ir_version, before.ir_version);
    assert_eq!(after.producer_name, before.producer_name);
    assert_eq!(after.producer_version, before.producer_version);
    assert_eq!(after.doc_string, before.doc_string);
    assert_eq!(
        after.opset_import, before.opset_import,
        "opset imports unchanged"
    );
    assert_eq!(ag.name, bg.name);
    assert_eq!(ag.doc_string, bg.doc_string);

    // Nodes: the original ones in order, the logits Gemm replaced in place by the
    // cosine head, then the loss nodes; every added node is named `ldam/...`.
    let gemm = bg
        .node
        .iter()
        .position(|n| n.output.iter().any(|o| o == "logits"))
        .unwrap();
    assert_eq!(bg.node[gemm].op_type, "Gemm");
    let head_bias = bg.node[gemm].input[2].clone();
    assert_eq!(
        &ag.node[..gemm],
        &bg.node[..gemm],
        "nodes before the head are unchanged, in order"
    );
    let kept: Vec<_> = ag
        .node
        .iter()
        .filter(|n| !n.name.starts_with("ldam/"))
        .collect();
    let expected_kept: Vec<_> = bg
        .node
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != gemm)
        .map(|(_, n)| n)
        .collect();
    assert_eq!(
        kept, expected_kept,
        "original nodes except the head Gemm, unchanged and in order"
    );
    let producer = ag
        .node
        .iter()
        .find(|n| n.output.iter().any(|o| o == "logits"))
        .unwrap();
    assert_eq!(producer.op_type, "Gemm");
    assert!(
        producer.name.starts_with("ldam/"),
        "the new head Gemm is an added node: {}",
        producer.name
    );
    assert_eq!(producer.input.len(), 2, "the cosine head has no bias");
    let loss_node = ag
        .node
        .iter()
        .find(|n| n.output.iter().any(|o| o == "loss"))
        .unwrap();
    assert_eq!(loss_node.op_type, "SoftmaxCrossEntropyLoss");
    assert!(
        loss_node.input.iter().any(|i| i == "labels"),
        "the loss reads labels"
    );
    assert!(
        ag.node.iter().any(|n| n.input.iter().any(|i| i == "epoch")),
        "a node reads epoch"
    );
    assert!(
        ag.node.iter().all(|n| n.domain.is_empty()),
        "only default-domain ops"
    );

    // Inputs and outputs.
    assert_eq!(
        &ag.input[..bg.input.len()],
        &bg.input[..],
        "original inputs unchanged"
    );
    assert_eq!(names(&ag.input[bg.input.len()..]), ["labels", "epoch"]);
    let batch = signature(&bg.input[0]).1[0].clone();
    assert_eq!(
        signature(&ag.input[bg.input.len()]),
        (INT64, vec![batch.clone()]),
        "labels: int64 [N]"
    );
    assert_eq!(
        signature(&ag.input[bg.input.len() + 1]),
        (INT64, vec![]),
        "epoch: int64 scalar"
    );
    assert_eq!(
        &ag.output[..bg.output.len()],
        &bg.output[..],
        "original outputs unchanged"
    );
    assert_eq!(names(&ag.output[bg.output.len()..]), ["loss"]);
    assert_eq!(
        signature(&ag.output[bg.output.len()]),
        (FLOAT, vec![]),
        "loss: float scalar"
    );
    assert_eq!(ag.value_info, bg.value_info, "value_info unchanged");

    // Initializers: the originals (minus the dropped head bias) byte for byte, then
    // the loss constants.
    let original_kept: Vec<_> = bg
        .initializer
        .iter()
        .filter(|t| t.name != head_bias)
        .collect();
    assert_eq!(
        original_kept.len() + 1,
        bg.initializer.len(),
        "only the head bias '{head_bias}' is dropped"
    );
    let (old, new) = ag.initializer.split_at(original_kept.len());
    assert_eq!(
        old.iter().collect::<Vec<_>>(),
        original_kept,
        "original initializers unchanged, in order"
    );
    for t in new {
        assert!(
            t.name.starts_with("ldam.") || t.name.starts_with("ldam/"),
            "added initializer '{}'",
            t.name
        );
    }
    let find = |name: &str| {
        new.iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("initializer '{name}' added"))
    };
    let margins = find("ldam.margins");
    assert_eq!(margins.dims, [10]);
    let quarter: Vec<f64> = COUNTS.iter().map(|&n| (n as f64).powf(-0.25)).collect();
    let max_quarter = quarter.iter().cloned().fold(0.0, f64::max);
    let expected: Vec<f64> = quarter.iter().map(|q| 0.5 * q / max_quarter).collect();
    assert_all_close(&tensor_f32(margins), &expected, "ldam.margins");
    assert_eq!(tensor_f32(margins)[9], 0.5, "the rarest class gets max_m");
    let scale = find("ldam.scale");
    assert!(scale.dims.is_empty());
    assert_eq!(tensor_f32(scale), [30.0]);
    let drw = find("ldam.drw_epoch");
    assert!(drw.dims.is_empty());
    assert_eq!(tensor_i64(drw), [160]);
    let weights = find("ldam.class_weights");
    assert_eq!(weights.dims, [10]);
    let raw: Vec<f64> = COUNTS
        .iter()
        .map(|&n| (1.0 - 0.9999) / (1.0 - 0.9999f64.powi(n as i32)))
        .collect();
    let total: f64 = raw.iter().sum();
    let expected_w: Vec<f64> = raw.iter().map(|w| w * 10.0 / total).collect();
    assert_all_close(&tensor_f32(weights), &expected_w, "ldam.class_weights");
    assert_all_close(
        &tensor_f32(weights),
        &effective_number_weights(&COUNTS, 0.9999),
        "library weights",
    );
    let names_new: Vec<&str> = new.iter().map(|t| t.name.as_str()).collect();
    let mut unique = names_new.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        names_new.len(),
        "added initializer names are unique: {names_new:?}"
    );

    // Metadata: the original entries, then the patch record.
    let meta = entries(&after.metadata_props);
    let original_meta = entries(&before.metadata_props);
    assert_eq!(
        &meta[..original_meta.len()],
        &original_meta[..],
        "original metadata kept first"
    );
    let added: Vec<(&str, &str)> = meta[original_meta.len()..]
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        added,
        [
            ("ldam_onnx.version", version),
            (
                "ldam_onnx.class_counts",
                "5000,2997,1796,1077,645,387,232,139,83,50"
            ),
            ("ldam_onnx.loss", "ldam"),
            ("ldam_onnx.max_m", "0.5"),
            ("ldam_onnx.scale", "30"),
            ("ldam_onnx.gamma", "1"),
            ("ldam_onnx.reweight", "drw"),
            ("ldam_onnx.drw_epoch", "160"),
            ("ldam_onnx.beta", "0.9999"),
            ("ldam_onnx.logits", "logits"),
            ("ldam_onnx.head", "cosine"),
            ("ldam_onnx.labels_input", "labels"),
            ("ldam_onnx.epoch_input", "epoch"),
            ("ldam_onnx.loss_output", "loss"),
            ("ldam_onnx.logits_output", "logits"),
            ("ldam_onnx.batchnorm", "train"),
        ]
    );
}

/// Written models get the permissions of any new file (0o666 less the umask),
/// not the private 0o600 of a temporary file.
#[cfg(unix)]
#[test]
fn saved_models_are_as_readable_as_any_new_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let loaded = io::load(&common::repo_dir().join("models/mlp.onnx")).unwrap();
    let out = dir.path().join("copy.onnx");
    io::save(&loaded.model, Some(&loaded), &out, SaveOptions::default()).unwrap();
    let plain = dir.path().join("plain");
    std::fs::File::create(&plain).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), mode(&plain));
}
