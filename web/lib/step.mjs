// Drives a training step compiled by `ldam-onnx compile` in any JavaScript ONNX
// Runtime: onnxruntime-web (WASM, WebGPU) in a browser or under Node, or
// onnxruntime-node. It needs only the `ort` module object and the bytes of the
// two files, so it runs wherever they run (no Node-only API is used).
//
//   import * as ort from 'onnxruntime-web';        // or 'onnxruntime-node'
//   import { createStep } from './step.mjs';
//   const trainer = await createStep(ort, stepBytes, companionBytes);
//   const { loss, logits } = await trainer.step({ input, labels, epoch, lr });
//   trainer.state;       // Map: state name -> ort.Tensor, after the last step
//   await trainer.release();
//
// createStep(ort, stepBytes, companionBytes, sessionOptions?) -> Promise<Trainer>
//   stepBytes, companionBytes: Uint8Array (or ArrayBuffer) of the step file and
//     of the initial-state file its metadata `ldam_onnx.train.initial_state`
//     names (a path relative to the step file; `companionName(stepBytes)` reads
//     it, so a caller knows which file to fetch).
//   sessionOptions: passed to both InferenceSession.create calls.
// Trainer
//   .step({input, labels, epoch, lr}) -> Promise<{loss: number, logits: ort.Tensor}>
//       input: an ort.Tensor (float32, the model's data input, e.g. [N, 1, 28, 28]);
//       labels: N class indices (any array of numbers or bigints, or a
//       BigInt64Array); epoch: integer (0-based, decides deferred re-weighting);
//       lr: number. Runs one SGD step and makes every output `S.next` the state S.
//   .state: Map<string, ort.Tensor>, the current value of every state tensor;
//       the next step reads it, so replacing entries sets the state (resuming).
//       State in device memory (WebGPU with preferredOutputLocation 'gpu-buffer')
//       is disposed when a step replaces it: download what you keep first.
//   .stateNames: string[], in the step's order
//   .inputName, .labelsName, .epochName, .lrName, .lossName, .logitsName: string
//   .metadata: Map<string, string>, the step's metadata_props
//   .release() -> Promise<void>: releases the session
//
// The contract it relies on (README, "The training-step contract"):
// `metadata_props["ldam_onnx.train.state"]` is a JSON list of the state names S;
// the step has an input S and an output `S.next` for each; the initial values
// are the outputs of the companion file, which takes no input and returns one
// output per state tensor, named as it.

const STATE_KEY = 'ldam_onnx.train.state';
const INITIAL_STATE_KEY = 'ldam_onnx.train.initial_state';

/// The metadata_props of an ONNX model (ModelProto field 14, key 1, value 2),
/// read from its protobuf bytes without decoding the graph.
export function readMetadata(bytes) {
  const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const text = new TextDecoder();
  const fields = (begin, end, visit) => {
    let at = begin;
    const varint = () => {
      let value = 0;
      let scale = 1;
      for (;;) {
        if (at >= end) throw new Error('truncated ONNX protobuf');
        const byte = data[at++];
        value += (byte & 0x7f) * scale;
        if (byte < 0x80) return value;
        scale *= 128;
      }
    };
    while (at < end) {
      const key = varint();
      const field = Math.floor(key / 8);
      const wire = key % 8;
      if (wire === 0) varint();
      else if (wire === 1) at += 8;
      else if (wire === 5) at += 4;
      else if (wire === 2) {
        const length = varint();
        if (at + length > end) throw new Error('truncated ONNX protobuf');
        visit(field, at, at + length);
        at += length;
      } else throw new Error(`unsupported protobuf wire type ${wire}`);
    }
  };
  const metadata = new Map();
  fields(0, data.length, (field, begin, end) => {
    if (field !== 14) return;
    let key = '';
    let value = '';
    fields(begin, end, (f, b, e) => {
      if (f === 1) key = text.decode(data.subarray(b, e));
      if (f === 2) value = text.decode(data.subarray(b, e));
    });
    metadata.set(key, value);
  });
  return metadata;
}

/// The companion file's name, relative to the step file, or null when the step
/// names none.
export function companionName(stepBytes) {
  return readMetadata(stepBytes).get(INITIAL_STATE_KEY) ?? null;
}

export async function createStep(ort, stepBytes, companionBytes, sessionOptions = {}) {
  const metadata = readMetadata(stepBytes);
  const stateList = metadata.get(STATE_KEY);
  if (stateList === undefined) {
    throw new Error(`not a training step: no metadata '${STATE_KEY}' (compile it with ldam-onnx compile)`);
  }
  const stateNames = JSON.parse(stateList);
  if (!metadata.has(INITIAL_STATE_KEY)) {
    throw new Error(
      `the step names no initial-state file (metadata '${INITIAL_STATE_KEY}'): its state lives in ` +
        'initializers, which JavaScript runtimes do not let a program feed back');
  }
  if (!companionBytes) throw new Error(`the initial-state file '${metadata.get(INITIAL_STATE_KEY)}' is needed`);
  const name = (key, fallback) => metadata.get(key) ?? fallback;
  const names = {
    labelsName: name('ldam_onnx.labels_input', 'labels'),
    epochName: name('ldam_onnx.epoch_input', 'epoch'),
    lrName: name('ldam_onnx.train.lr_input', 'lr'),
    lossName: name('ldam_onnx.loss_output', 'loss'),
    logitsName: name('ldam_onnx.logits_output', 'logits'),
  };
  const asBytes = (b) => (b instanceof Uint8Array ? b : new Uint8Array(b));

  // The initial state: the companion's outputs, one per state tensor.
  const companion = await ort.InferenceSession.create(asBytes(companionBytes), sessionOptions);
  let initial;
  try {
    initial = await companion.run({});
  } finally {
    await companion.release();
  }
  const missing = stateNames.filter((s) => !(s in initial));
  if (missing.length > 0) {
    throw new Error(`the initial-state file lacks state tensor(s): ${missing.join(', ')}`);
  }

  const session = await ort.InferenceSession.create(asBytes(stepBytes), sessionOptions);
  const fed = new Set([names.labelsName, names.epochName, names.lrName, ...stateNames]);
  const absent = [...fed].filter((n) => !session.inputNames.includes(n));
  if (absent.length > 0) {
    await session.release();
    throw new Error(`the runtime does not list these step inputs: ${absent.join(', ')}`);
  }
  const dataInputs = session.inputNames.filter((n) => !fed.has(n));
  if (dataInputs.length !== 1) {
    await session.release();
    throw new Error(`a step needs exactly one data input, this one has: ${dataInputs.join(', ') || 'none'}`);
  }

  const state = new Map(stateNames.map((s) => [s, initial[s]]));
  const fetches = [names.lossName, names.logitsName, ...stateNames.map((s) => `${s}.next`)];
  const read = async (tensor) => (tensor.location === 'cpu' ? tensor.data : tensor.getData());

  const inputName = dataInputs[0];
  return {
    ...names,
    inputName,
    stateNames,
    metadata,
    state,
    async step({ input, labels, epoch, lr }) {
      const feeds = Object.fromEntries(state);
      feeds[inputName] = input;
      const labelValues = BigInt64Array.from(labels, (v) => BigInt(v));
      feeds[names.labelsName] = new ort.Tensor('int64', labelValues, [labelValues.length]);
      feeds[names.epochName] = new ort.Tensor('int64', BigInt64Array.of(BigInt(epoch)), []);
      feeds[names.lrName] = new ort.Tensor('float32', Float32Array.of(lr), []);
      const outputs = await session.run(feeds, fetches);
      for (const s of stateNames) {
        const previous = state.get(s);
        state.set(s, outputs[`${s}.next`]);
        // State kept in device memory (sessionOptions.preferredOutputLocation)
        // is released once replaced; host arrays are left to the garbage collector.
        if (previous.location === 'gpu-buffer' || previous.location === 'ml-tensor') previous.dispose();
      }
      const loss = (await read(outputs[names.lossName]))[0];
      return { loss, logits: outputs[names.logitsName] };
    },
    async release() {
      await session.release();
    },
  };
}
