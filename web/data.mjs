// Reads the binary `ldam-onnx export-data` writes (format: the library's
// train::data::export, version 1; every integer a little-endian u32, every
// real a little-endian f32) and turns examples into network input exactly as
// the tool's own input pipeline does: u8 pixels divided by 255, then
// (value - mean) / std per channel, each operation rounded to float32.

const MAGIC = 'LDAMDATA';
const VERSION = 1;

export function readDataset(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const need = (n) => {
    if (at + n > bytes.length) throw new Error(`dataset file truncated at byte ${at} (${bytes.length} bytes)`);
  };
  const u32 = () => {
    need(4);
    const v = view.getUint32(at, true);
    at += 4;
    return v;
  };
  const f32 = () => {
    need(4);
    const v = view.getFloat32(at, true);
    at += 4;
    return v;
  };
  const text = () => {
    const n = u32();
    need(n);
    const s = new TextDecoder().decode(bytes.subarray(at, at + n));
    at += n;
    return s;
  };
  need(8);
  if (new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) {
    throw new Error('not a dataset written by ldam-onnx export-data (no LDAMDATA magic)');
  }
  at = 8;
  const version = u32();
  if (version !== VERSION) throw new Error(`dataset format version ${version}; this page reads ${VERSION}`);
  const headerBytes = u32();
  const classes = u32();
  const rank = u32();
  const shape = Array.from({ length: rank }, u32);
  const pixelType = u32();
  if (pixelType > 1) throw new Error(`unknown pixel type ${pixelType}`);
  const channels = u32();
  const mean = Array.from({ length: channels }, f32);
  const std = Array.from({ length: channels }, f32);
  const trainCount = u32();
  const testCount = u32();
  const classCounts = Array.from({ length: classes }, u32);
  const names = text();
  const classNames = names ? JSON.parse(names) : classCounts.map((_, c) => `class ${c}`);
  const description = text();
  at = headerBytes;
  const exampleLength = shape.reduce((a, b) => a * b, 1);
  const split = (count) => {
    at = Math.ceil(at / 4) * 4;
    need(4 * count);
    const labels = new Uint32Array(bytes.buffer, bytes.byteOffset + at, count).slice();
    at += 4 * count;
    at = Math.ceil(at / 4) * 4;
    const values = count * exampleLength;
    let pixels;
    if (pixelType === 0) {
      need(values);
      pixels = bytes.subarray(at, at + values);
      at += values;
    } else {
      need(4 * values);
      pixels = new Float32Array(bytes.slice(at, at + 4 * values).buffer);
      at += 4 * values;
    }
    if (labels.some((l) => l >= classes)) throw new Error('a label is outside the class range');
    return { count, labels, pixels };
  };
  const train = split(trainCount);
  const test = split(testCount);
  return {
    classes,
    shape,
    exampleLength,
    pixelType,
    normalization: channels > 0 ? { mean, std } : null,
    classCounts,
    classNames,
    description,
    train,
    test,
  };
}

/// The network input of examples `indices` of `split` (a float32 array of
/// indices.length x exampleLength values), preprocessed as the tool does.
export function batchInput(data, split, indices) {
  const n = data.exampleLength;
  const out = new Float32Array(indices.length * n);
  const norm = data.normalization;
  const plane = norm ? n / norm.mean.length : n;
  indices.forEach((index, k) => {
    const base = index * n;
    for (let j = 0; j < n; j++) {
      let v = data.pixelType === 0 ? Math.fround(split.pixels[base + j] / 255) : split.pixels[base + j];
      if (norm) {
        const c = Math.floor(j / plane);
        v = Math.fround(v - norm.mean[c]) / norm.std[c];
      }
      out[k * n + j] = v;
    }
  });
  return out;
}

/// Labels of examples `indices` of `split`.
export function batchLabels(split, indices) {
  return indices.map((i) => split.labels[i]);
}
