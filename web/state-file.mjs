// The trained state as a file in the companion format `ldam-onnx compile`
// writes (an ONNX model with no inputs and no nodes whose outputs are the state
// tensors, each an initializer): the companion's own bytes with every
// initializer's values replaced by the trained ones, in place (same type, same
// size), and metadata entries appended. `ldam-onnx deploy STEP --state FILE`
// turns it into the deployable model.

function varint(value) {
  const out = [];
  while (value >= 0x80) {
    out.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  out.push(value);
  return out;
}

/// Calls visit(field, wire, begin, end) for each field of the message in
/// bytes[begin, end); for wire type 2, [begin, end) is the payload.
function fields(bytes, begin, end, visit) {
  let at = begin;
  const read = () => {
    let value = 0;
    let scale = 1;
    for (;;) {
      if (at >= end) throw new Error('truncated ONNX protobuf');
      const byte = bytes[at++];
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
  };
  while (at < end) {
    const key = read();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) visit(field, wire, at, (read(), at));
    else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) {
      const length = read();
      if (at + length > end) throw new Error('truncated ONNX protobuf');
      visit(field, wire, at, at + length);
      at += length;
    } else throw new Error(`unsupported protobuf wire type ${wire}`);
  }
}

const FLOAT = 1;

/// bytes: the companion file; values: Map name -> Float32Array; metadata:
/// [key, value] pairs to append. Returns the new file's bytes.
export function writeStateFile(companionBytes, values, metadata = []) {
  const src = companionBytes instanceof Uint8Array ? companionBytes : new Uint8Array(companionBytes);
  const out = src.slice();
  const text = new TextDecoder();
  const written = new Set();
  fields(src, 0, src.length, (field, wire, gBegin, gEnd) => {
    if (field !== 7 || wire !== 2) return; // ModelProto.graph
    fields(src, gBegin, gEnd, (f, w, tBegin, tEnd) => {
      if (f !== 5 || w !== 2) return; // GraphProto.initializer
      let name = null;
      let dataType = FLOAT;
      let span = null;
      fields(src, tBegin, tEnd, (tf, tw, b, e) => {
        if (tf === 8) name = text.decode(src.subarray(b, e));
        else if (tf === 2 && tw === 0) dataType = src[b];
        else if ((tf === 9 || tf === 4) && tw === 2) span = [b, e]; // raw_data, packed float_data
      });
      if (name === null || !values.has(name)) return;
      const value = values.get(name);
      if (dataType !== FLOAT || !(value instanceof Float32Array)) {
        throw new Error(`state tensor '${name}' is not float32`);
      }
      if (span === null || span[1] - span[0] !== value.byteLength) {
        throw new Error(`state tensor '${name}': the state file holds its values in a form this page cannot replace`);
      }
      // ONNX stores little-endian; so do the platforms browsers run on.
      out.set(new Uint8Array(value.buffer, value.byteOffset, value.byteLength), span[0]);
      written.add(name);
    });
  });
  const missing = [...values.keys()].filter((n) => !written.has(n));
  if (missing.length > 0) throw new Error(`the state file has no initializer for: ${missing.join(', ')}`);
  // Appended fields of a message merge into it: repeated metadata_props (14).
  const encoder = new TextEncoder();
  const tail = [];
  for (const [key, value] of metadata) {
    const k = encoder.encode(key);
    const v = encoder.encode(value);
    const entry = [0x0a, ...varint(k.length), ...k, 0x12, ...varint(v.length), ...v];
    tail.push(0x72, ...varint(entry.length), ...entry);
  }
  const file = new Uint8Array(out.length + tail.length);
  file.set(out);
  file.set(tail, out.length);
  return file;
}
