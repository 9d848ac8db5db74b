//! Loading and saving models.
//!
//! Loading decodes the file once; tensor payloads are zero-copy slices of the file
//! buffer. External data is checked (location inside the model's folder, bounds
//! within the file) but not read. Saving streams the model: the protobuf envelope is
//! encoded in small pieces and each tensor payload is written straight from memory,
//! so peak memory stays near the input size; external tensors are copied into one
//! `<output>.data` file beside the output. Both files are written to temporary
//! files in the target folder and renamed into place, so a failed save leaves
//! nothing behind, and the input is never written.

use super::integrity;
use super::proto::tensor_proto::DataLocation;
use super::{GraphProto, ModelProto, StringStringEntryProto, TensorProto};
use crate::error::{Error, Result};
use prost::bytes::Bytes;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A decoded model and the folder its external data is resolved against.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub model: ModelProto,
    pub path: PathBuf,
    pub dir: PathBuf,
}

impl LoadedModel {
    pub fn graph(&self) -> &GraphProto {
        self.model
            .graph
            .as_ref()
            .expect("load() rejects models without a graph")
    }
}

/// Reads and decodes an ONNX model, checking every external-data reference and
/// every declared size against the bytes present. External tensors stay where
/// they are (a pass that only rewrites the graph never reads them; `save` copies
/// them); [`load_with_data`] reads them too.
pub fn load(path: &Path) -> Result<LoadedModel> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(bytes, path)
}

/// [`load`], then every external tensor's bytes read into the model, for the
/// commands that compute with the values (train, eval, deploy, adjust).
pub fn load_with_data(path: &Path) -> Result<LoadedModel> {
    let mut loaded = load(path)?;
    loaded.read_external_data()?;
    Ok(loaded)
}

impl LoadedModel {
    /// Reads every external tensor's bytes (checked against its data file when
    /// the model was loaded) into `raw_data`, so that the model holds all its values.
    pub fn read_external_data(&mut self) -> Result<()> {
        self.read_external_data_up_to(u64::MAX)
    }

    /// Reads the external tensors of at most `max_bytes` into `raw_data`, leaving
    /// larger ones in their files: `patch` looks at the values of small constants
    /// (a class token the exporter repeated per example) and keeps the weights
    /// external.
    pub fn read_external_data_up_to(&mut self, max_bytes: u64) -> Result<()> {
        let (path, dir) = (self.path.clone(), self.dir.clone());
        let Some(graph) = self.model.graph.as_mut() else {
            return Ok(());
        };
        let mut files = DataFiles::default();
        visit_tensors_mut(graph, &mut |tensor| {
            if !super::tensor::is_external(tensor) {
                return Ok(());
            }
            let span = resolve_external(&path, &dir, tensor)?;
            if span.length > max_bytes {
                return Ok(());
            }
            // `resolve_external` checked the span against the file's size, so
            // this allocation is backed by bytes on disk.
            let mut bytes = Vec::with_capacity(span.length as usize);
            files
                .reader(&span)?
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io(&span.file, e))?;
            if bytes.len() as u64 != span.length {
                return Err(ended_early(&path, tensor, &span));
            }
            tensor.raw_data = Some(Bytes::from(bytes));
            tensor.data_location = None;
            tensor.external_data.clear();
            Ok(())
        })
    }
}

/// The data files external tensors are read from, each opened once.
#[derive(Default)]
struct DataFiles {
    open: HashMap<PathBuf, File>,
}

impl DataFiles {
    /// The bytes of `span`, positioned and limited to its length.
    fn reader(&mut self, span: &ExternalSpan) -> Result<io::Take<&mut File>> {
        let file = match self.open.entry(span.file.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(File::open(&span.file).map_err(|err| Error::io(&span.file, err))?)
            }
        };
        file.seek(SeekFrom::Start(span.offset))
            .map_err(|e| Error::io(&span.file, e))?;
        Ok(file.take(span.length))
    }
}

fn ended_early(model: &Path, tensor: &TensorProto, span: &ExternalSpan) -> Error {
    Error::ExternalData {
        path: model.to_path_buf(),
        tensor: tensor.name().to_string(),
        reason: format!("'{}' ended early", span.file.display()),
    }
}

/// Decodes a model file's bytes as `load` does; `path` names the file in errors and
/// locates its external data.
pub fn decode(bytes: Vec<u8>, path: &Path) -> Result<LoadedModel> {
    let model = parse(bytes, path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let loaded = LoadedModel {
        model,
        path: path.to_path_buf(),
        dir,
    };
    let mut spans = HashMap::new();
    for tensor in external_tensors(loaded.graph()) {
        let span = resolve_external(&loaded.path, &loaded.dir, tensor)?;
        spans.insert(tensor as *const TensorProto, span);
    }
    check_integrity(&loaded.model, path, &mut |t| {
        spans
            .get(&(t as *const TensorProto))
            .map(|span: &ExternalSpan| span.length)
    })?;
    Ok(loaded)
}

/// A model from bytes in memory (an embedded file, a download), checked as
/// [`load`] checks a file. Its tensors must hold their data inline: there is no
/// folder to find external data in.
pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<ModelProto> {
    let path = Path::new("<bytes>");
    let model = parse(bytes.into(), path)?;
    let graph = model
        .graph
        .as_ref()
        .expect("parse rejects models without a graph");
    if let Some(tensor) = external_tensors(graph).first() {
        return Err(Error::ExternalData {
            path: path.to_path_buf(),
            tensor: tensor.name().to_string(),
            reason: "a model read from bytes has no folder to find external data in; \
                     load it from its file instead"
                .to_string(),
        });
    }
    check_integrity(&model, path, &mut |_| None)?;
    Ok(model)
}

/// Every problem of the graph's declared sizes against the bytes present
/// (`external_length` gives an external tensor's), as one error.
fn check_integrity(
    model: &ModelProto,
    path: &Path,
    external_length: &mut dyn FnMut(&TensorProto) -> Option<u64>,
) -> Result<()> {
    let graph = model
        .graph
        .as_ref()
        .expect("parse rejects models without a graph");
    let problems = integrity::graph_problems(graph, external_length);
    if problems.is_empty() {
        return Ok(());
    }
    let shown = problems.len().min(4);
    let mut reason = problems[..shown].join("; ");
    if problems.len() > shown {
        reason.push_str(&format!("; and {} more", problems.len() - shown));
    }
    Err(Error::NotOnnx {
        path: path.to_path_buf(),
        reason,
    })
}

/// The protobuf decoded, and the parts every real model has checked.
fn parse(bytes: Vec<u8>, path: &Path) -> Result<ModelProto> {
    let not_onnx = |reason: &str| Error::NotOnnx {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.is_empty() {
        return Err(not_onnx("the file is empty"));
    }
    let model = ModelProto::decode(Bytes::from(bytes)).map_err(|e| {
        not_onnx(&format!(
            "protobuf decoding failed: {e}; is the file truncated?"
        ))
    })?;
    // Arbitrary bytes sometimes decode as a protobuf message; a real model has these.
    if model.ir_version.unwrap_or(0) <= 0 {
        return Err(not_onnx("no ir_version"));
    }
    if model.graph.is_none() {
        return Err(not_onnx("no graph"));
    }
    if model.opset_import.is_empty() {
        return Err(not_onnx("no opset_import"));
    }
    Ok(model)
}

/// Where an external tensor's bytes are: file, offset, and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalSpan {
    pub file: PathBuf,
    pub offset: u64,
    pub length: u64,
}

/// Resolves and checks an external-data reference relative to the model's folder.
pub fn resolve_external(
    model_path: &Path,
    dir: &Path,
    tensor: &TensorProto,
) -> Result<ExternalSpan> {
    let fail = |reason: String| Error::ExternalData {
        path: model_path.to_path_buf(),
        tensor: tensor.name().to_string(),
        reason,
    };
    let entry = |key: &str| {
        tensor
            .external_data
            .iter()
            .find(|e| e.key() == key)
            .map(|e| e.value())
    };
    let location = entry("location").ok_or_else(|| fail("no 'location' entry".into()))?;
    let relative = Path::new(location);
    let escapes = relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(fail(format!(
            "location '{location}' is outside the model's folder; external data must be a relative path below it"
        )));
    }
    let file = dir.join(relative);
    let canonical_dir = dir
        .canonicalize()
        .map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let canonical = file
        .canonicalize()
        .map_err(|e| fail(format!("data file '{}': {e}", file.display())))?;
    if !canonical.starts_with(&canonical_dir) {
        return Err(fail(format!(
            "location '{location}' resolves outside the model's folder (through a link)"
        )));
    }
    let metadata = std::fs::metadata(&canonical)
        .map_err(|e| fail(format!("data file '{}': {e}", file.display())))?;
    if !metadata.is_file() {
        return Err(fail(format!("location '{location}' is not a regular file")));
    }
    let size = metadata.len();
    let number = |key: &str| -> Result<Option<u64>> {
        entry(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| fail(format!("'{key}' is not a number: '{v}'")))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    // Without a stated length the tensor is as long as its dims and type require.
    let length = match number("length")? {
        Some(length) => length,
        None => integrity::payload_bytes(tensor.data_type(), &tensor.dims).map_err(&fail)?,
    };
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(fail(format!(
            "bytes {offset}..{} lie past the end of '{}' ({size} bytes)",
            offset.saturating_add(length),
            file.display()
        )));
    }
    Ok(ExternalSpan {
        file: canonical,
        offset,
        length,
    })
}

/// Every tensor stored externally: initializers and `Constant` values, subgraphs included.
pub fn external_tensors(graph: &GraphProto) -> Vec<&TensorProto> {
    let mut out = Vec::new();
    visit_tensors(graph, &mut |t| {
        if super::tensor::is_external(t) {
            out.push(t)
        }
    });
    out
}

fn visit_tensors<'g>(graph: &'g GraphProto, f: &mut dyn FnMut(&'g TensorProto)) {
    graph.initializer.iter().for_each(&mut *f);
    for node in &graph.node {
        for attr in &node.attribute {
            attr.t.iter().chain(&attr.tensors).for_each(&mut *f);
            for sub in attr.g.iter().chain(&attr.graphs) {
                visit_tensors(sub, f);
            }
        }
    }
}

fn visit_tensors_mut(
    graph: &mut GraphProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<()>,
) -> Result<()> {
    for t in &mut graph.initializer {
        f(t)?;
    }
    for node in &mut graph.node {
        for attr in &mut node.attribute {
            for t in attr.t.iter_mut().chain(attr.tensors.iter_mut()) {
                f(t)?;
            }
            for sub in attr.g.iter_mut().chain(attr.graphs.iter_mut()) {
                visit_tensors_mut(sub, f)?;
            }
        }
    }
    Ok(())
}

/// How to write a model file.
#[derive(Debug, Clone, Copy)]
pub struct SaveOptions {
    /// Replace an existing output file.
    pub overwrite: bool,
    /// Inline tensor bytes past which a model is written with external data:
    /// every tensor of at least [`EXTERNAL_MIN_BYTES`] goes to `<out>.data`.
    /// Protobuf cannot encode or parse a message of 2 GiB or more, so a model
    /// near that size must keep its weights beside it.
    pub inline_limit: u64,
}

/// The default [`SaveOptions::inline_limit`]: 1 GiB, well below protobuf's 2 GiB
/// so that the graph, the metadata and a training step's extra tensors fit too.
pub const DEFAULT_INLINE_LIMIT: u64 = 1 << 30;

/// This process's inline limit: what [`SaveOptions::default`] and the ONNX
/// Runtime sessions of in-memory models ([`crate::runtime::session`]) use.
static PROCESS_INLINE_LIMIT: AtomicU64 = AtomicU64::new(DEFAULT_INLINE_LIMIT);

/// Sets this process's inline limit (a program's setting, such as an
/// environment variable the program reads); a caller that saves one model
/// passes [`SaveOptions::inline_limit`] instead.
pub fn set_default_inline_limit(bytes: u64) {
    PROCESS_INLINE_LIMIT.store(bytes, Ordering::Relaxed);
}

/// This process's inline limit: [`DEFAULT_INLINE_LIMIT`] unless
/// [`set_default_inline_limit`] changed it.
pub fn default_inline_limit() -> u64 {
    PROCESS_INLINE_LIMIT.load(Ordering::Relaxed)
}

/// The smallest tensor moved to the data file when a model is written with
/// external data (ONNX's own converter uses the same threshold): shape
/// constants and scalars stay in the graph, where shape inference reads them.
pub const EXTERNAL_MIN_BYTES: usize = 1024;

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            overwrite: false,
            inline_limit: default_inline_limit(),
        }
    }
}

impl SaveOptions {
    /// The default options, replacing an existing file or not.
    pub fn overwriting(overwrite: bool) -> Self {
        SaveOptions {
            overwrite,
            ..SaveOptions::default()
        }
    }
}

/// Bytes held inline in `raw_data` by the graph's tensors (subgraphs included).
pub(crate) fn inline_payload(graph: &GraphProto) -> u64 {
    let mut total = 0u64;
    visit_tensors(graph, &mut |t| {
        total += t.raw_data.as_ref().map_or(0, |r| r.len() as u64);
    });
    total
}

/// The default output path for a patched model: `<stem>.ldam.onnx` beside the input.
pub fn sibling_with_suffix(input: &Path, suffix: &str) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    input.with_file_name(format!("{stem}.{suffix}.onnx"))
}

/// Writes `model` to `out` atomically. `source` is the model the tensors were
/// loaded with: its external data is copied into `<out>.data`.
pub fn save(
    model: &ModelProto,
    source: Option<&LoadedModel>,
    out: &Path,
    options: SaveOptions,
) -> Result<()> {
    let file_name = output_file_name(out)?;
    save_with_data_file(model, source, out, &format!("{file_name}.data"), options)
}

fn output_file_name(out: &Path) -> Result<String> {
    Ok(out
        .file_name()
        .ok_or_else(|| Error::config(format!("{}: output path has no file name", out.display())))?
        .to_string_lossy()
        .into_owned())
}

/// [`save`], with the external data (when there is any) in `data_name`, a file
/// in `out`'s folder, instead of `<out>.data`. A file that is replaced while
/// others may read it (a run's checkpoint) gives each version's data a new
/// name: the data file is renamed into place before the model file, so the
/// model file on disk, old or new, always names complete data of its own.
pub fn save_with_data_file(
    model: &ModelProto,
    source: Option<&LoadedModel>,
    out: &Path,
    data_name: &str,
    options: SaveOptions,
) -> Result<()> {
    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = output_file_name(out)?;
    if data_name == file_name
        || Path::new(data_name).file_name() != Some(std::ffi::OsStr::new(data_name))
    {
        return Err(Error::config(format!(
            "{}: the data file '{data_name}' must be a file name in the model's folder",
            out.display()
        )));
    }
    if let Some(source) = source {
        let data_path = out_dir.join(data_name);
        let mut inputs = vec![source.path.clone()];
        for tensor in external_tensors(source.graph()) {
            inputs.push(resolve_external(&source.path, &source.dir, tensor)?.file);
        }
        for written in [out, data_path.as_path()] {
            if inputs.iter().any(|input| same_file(input, written)) {
                return Err(Error::config(format!(
                    "{}: writing there would overwrite one of the input model's files; choose another path with -o",
                    written.display()
                )));
            }
        }
    }
    if out.exists() && !options.overwrite {
        return Err(Error::OutputExists {
            path: out.to_path_buf(),
        });
    }

    let mut model = model.clone();
    let data_path = out_dir.join(data_name);
    let has_external = model
        .graph
        .as_ref()
        .is_some_and(|g| !external_tensors(g).is_empty());
    let move_inline = model
        .graph
        .as_ref()
        .is_some_and(|g| inline_payload(g) > options.inline_limit);
    let data_tmp = if has_external || move_inline {
        if has_external && source.is_none() {
            return Err(Error::config(
                "model has external tensors but no source model to read them from",
            ));
        }
        if data_path.exists() && !options.overwrite {
            return Err(Error::OutputExists { path: data_path });
        }
        Some(write_external_data(
            &mut model,
            source,
            move_inline,
            &out_dir,
            data_name,
        )?)
    } else {
        None
    };

    let io_err = |e: io::Error| Error::io(out, e);
    let mut tmp = temp_file_in(&out_dir, &file_name, ".tmp").map_err(io_err)?;
    {
        let mut writer = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        write_model(&model, &mut writer).map_err(io_err)?;
        writer.flush().map_err(io_err)?;
    }
    tmp.as_file().sync_all().map_err(io_err)?;
    if let Some(data_tmp) = data_tmp {
        data_tmp
            .persist(&data_path)
            .map_err(|e| Error::io(&data_path, e.error))?;
    }
    tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
    Ok(())
}

/// A hidden temporary file `.NAME.XXXX<suffix>` in `dir`, to be renamed over
/// `dir/NAME` (a rename within one file system is atomic). It is created with
/// mode 0o666 less the umask, like any new file: tempfile's private 0o600
/// default would leave the result unreadable to others.
pub(crate) fn temp_file_in(
    dir: &Path,
    name: &str,
    suffix: &str,
) -> io::Result<tempfile::NamedTempFile> {
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Alignment of large tensors in the data file, so runtimes can map them directly.
const PAGE: u64 = 4096;

/// Copies every external tensor's bytes (from `source`'s data files) into a
/// temporary data file, and with `move_inline` the inline tensors of at least
/// [`EXTERNAL_MIN_BYTES`] too, and points those tensors at `data_name`.
fn write_external_data(
    model: &mut ModelProto,
    source: Option<&LoadedModel>,
    move_inline: bool,
    out_dir: &Path,
    data_name: &str,
) -> Result<tempfile::NamedTempFile> {
    let data_err = |e: io::Error| Error::io(out_dir.join(data_name), e);
    let mut tmp = temp_file_in(out_dir, data_name, ".tmp").map_err(data_err)?;
    let mut writer = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
    let mut written: u64 = 0;
    let mut files = DataFiles::default();
    let graph = model
        .graph
        .as_mut()
        .expect("caller checked the graph exists");
    visit_tensors_mut(graph, &mut |tensor| {
        let moved_inline = move_inline
            && !super::tensor::is_external(tensor)
            && tensor
                .raw_data
                .as_ref()
                .is_some_and(|r| r.len() >= EXTERNAL_MIN_BYTES);
        if !moved_inline && !super::tensor::is_external(tensor) {
            return Ok(());
        }
        let mut pad_to_page = |length: u64, writer: &mut BufWriter<&mut File>| {
            if length >= PAGE * 16 && written % PAGE != 0 {
                let pad = PAGE - written % PAGE;
                writer
                    .write_all(&vec![0u8; pad as usize])
                    .map_err(data_err)?;
                written += pad;
            }
            Ok::<(), Error>(())
        };
        let length = if moved_inline {
            let raw = tensor.raw_data.take().unwrap_or_default();
            pad_to_page(raw.len() as u64, &mut writer)?;
            writer.write_all(&raw).map_err(data_err)?;
            raw.len() as u64
        } else {
            let source = source.ok_or_else(|| {
                Error::config("model has external tensors but no source model to read them from")
            })?;
            let span = resolve_external(&source.path, &source.dir, tensor)?;
            pad_to_page(span.length, &mut writer)?;
            let copied = io::copy(&mut files.reader(&span)?, &mut writer).map_err(data_err)?;
            if copied != span.length {
                return Err(ended_early(&source.path, tensor, &span));
            }
            span.length
        };
        tensor.data_location = Some(DataLocation::External as i32);
        tensor.external_data = vec![
            entry("location", data_name),
            entry("offset", &written.to_string()),
            entry("length", &length.to_string()),
        ];
        written += length;
        Ok(())
    })?;
    writer.flush().map_err(data_err)?;
    drop(writer);
    tmp.as_file().sync_all().map_err(data_err)?;
    Ok(tmp)
}

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.to_string()),
        value: Some(value.to_string()),
    }
}

// Field numbers from onnx.proto used by the streaming writer.
const MODEL_GRAPH: u32 = 7;
const GRAPH_INITIALIZER: u32 = 5;
const TENSOR_RAW_DATA: u32 = 9;

/// Encodes `model` to `w` without building the whole message in memory. Fields
/// are written in field-number order, as protobuf encoders do, so a loaded and
/// saved model is byte-identical to its input: the model fields before the graph,
/// the graph (its fields before the initializers, each initializer with its payload
/// copied straight from its buffer, the fields after), then the model fields after.
pub fn write_model<W: Write>(model: &ModelProto, w: &mut W) -> io::Result<()> {
    let mut tail = model.clone();
    let head = ModelProto {
        ir_version: tail.ir_version.take(),
        producer_name: tail.producer_name.take(),
        producer_version: tail.producer_version.take(),
        domain: tail.domain.take(),
        model_version: tail.model_version.take(),
        doc_string: tail.doc_string.take(),
        ..Default::default()
    };
    let graph = tail.graph.take();
    w.write_all(&head.encode_to_vec())?;
    if let Some(mut graph) = graph {
        let initializers = std::mem::take(&mut graph.initializer);
        let graph_head = GraphProto {
            node: std::mem::take(&mut graph.node),
            name: graph.name.take(),
            ..Default::default()
        }
        .encode_to_vec();
        let graph_tail = graph.encode_to_vec();

        // Each initializer as (encoded fields before raw_data, raw_data, fields after).
        let parts: Vec<(Vec<u8>, Option<Bytes>, Vec<u8>)> = initializers
            .into_iter()
            .map(|mut t| {
                let raw = t.raw_data.take();
                let before = TensorProto {
                    dims: std::mem::take(&mut t.dims),
                    data_type: t.data_type.take(),
                    segment: t.segment.take(),
                    float_data: std::mem::take(&mut t.float_data),
                    int32_data: std::mem::take(&mut t.int32_data),
                    string_data: std::mem::take(&mut t.string_data),
                    int64_data: std::mem::take(&mut t.int64_data),
                    name: t.name.take(),
                    ..Default::default()
                };
                (before.encode_to_vec(), raw, t.encode_to_vec())
            })
            .collect();
        let raw_field_len = |raw: &Option<Bytes>| {
            raw.as_ref().map_or(0, |r| {
                key_len(TENSOR_RAW_DATA) + encoded_len_varint(r.len() as u64) + r.len()
            })
        };
        let tensor_len = |(before, raw, after): &(Vec<u8>, Option<Bytes>, Vec<u8>)| {
            before.len() + raw_field_len(raw) + after.len()
        };
        let graph_len: usize = graph_head.len()
            + graph_tail.len()
            + parts
                .iter()
                .map(|p| {
                    key_len(GRAPH_INITIALIZER)
                        + encoded_len_varint(tensor_len(p) as u64)
                        + tensor_len(p)
                })
                .sum::<usize>();

        write_prefix(w, MODEL_GRAPH, graph_len)?;
        w.write_all(&graph_head)?;
        for part in &parts {
            write_prefix(w, GRAPH_INITIALIZER, tensor_len(part))?;
            w.write_all(&part.0)?;
            if let Some(raw) = &part.1 {
                write_prefix(w, TENSOR_RAW_DATA, raw.len())?;
                w.write_all(raw)?;
            }
            w.write_all(&part.2)?;
        }
        w.write_all(&graph_tail)?;
    }
    w.write_all(&tail.encode_to_vec())
}

/// Key and length of a length-delimited field.
fn write_prefix<W: Write>(w: &mut W, field: u32, len: usize) -> io::Result<()> {
    let mut prefix = Vec::with_capacity(16);
    encode_key(field, WireType::LengthDelimited, &mut prefix);
    encode_varint(len as u64, &mut prefix);
    w.write_all(&prefix)
}

/// The model encoded in memory, for tests and runtimes that take bytes.
pub fn to_bytes(model: &ModelProto) -> Vec<u8> {
    let mut out = Vec::with_capacity(model.encoded_len());
    write_model(model, &mut out).expect("writing to a Vec cannot fail");
    out
}
