// The browser trainer: loads a compiled step, its state file and an exported
// dataset, trains with onnxruntime-web (WASM, or WebGPU where the browser has
// it), draws the curves and per-class accuracy, and offers the trained state.
//
// Address parameters (all optional):
//   step=URL, data=URL   files to load (the state file is named by the step)
//   backend=wasm|webgpu, batch=B, lr=LR, epochs=E, order=shuffle|sequential, seed=S
//   threads=T            WASM threads (default: all cores; 1 with autorun)
//   autorun=N            train N steps at once (order strided unless given),
//                        evaluate, then write #result and set body[data-done]
// Batch k of epoch e holds examples order_e[k*B .. (k+1)*B) of the training
// split, where order_e is the file order (sequential), example (k * 7919) mod
// N_train at position k (strided), or a seeded shuffle (shuffle); an
// epoch has floor(N_train / B) steps, and the step's `epoch` input is e.

import * as ort from './node_modules/onnxruntime-web/dist/ort.min.mjs';
import { createStep, companionName, readMetadata } from './lib/step.mjs';
import { readDataset, batchInput, batchLabels } from './data.mjs';
import { drawCurves, drawClasses, drawnPixels } from './plot.mjs';
import { writeStateFile } from './state-file.mjs';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const autorun = params.has('autorun') ? Number(params.get('autorun')) : null;

const files = { step: null, companion: null, data: null, stepName: 'model.train.onnx' };
let data = null;
let trainer = null;
let stopping = false;
const history = { losses: [], trainAcc: [], testAcc: [], classAcc: null };

function status(text) {
  $('status').textContent = text;
}

function setting(id, fallback) {
  const value = params.get(id);
  if (value !== null) $(id).value = value;
  return $(id).value ?? fallback;
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

/// Sorts out picked files: the dataset by its magic, the step by its state
/// metadata, the state file as the rest.
async function fromPicked(list) {
  const onnx = [];
  for (const file of list) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    if (new TextDecoder().decode(bytes.subarray(0, 8)) === 'LDAMDATA') files.data = bytes;
    else onnx.push({ name: file.name, bytes });
  }
  for (const { name, bytes } of onnx) {
    if (readMetadata(bytes).has('ldam_onnx.train.state')) {
      files.step = bytes;
      files.stepName = name;
    } else files.companion = bytes;
  }
}

async function prepare() {
  if (!files.step || !files.companion || !files.data) {
    const missing = ['step', 'companion', 'data'].filter((k) => !files[k]);
    status(`waiting for files: ${missing.join(', ').replace('companion', 'state file')}`);
    return false;
  }
  data = readDataset(files.data);
  const backend = $('backend').value;
  const threads = params.get('threads') ?? (autorun !== null ? '1' : null);
  if (threads !== null) ort.env.wasm.numThreads = Number(threads);
  if (trainer) await trainer.release();
  trainer = await createStep(ort, files.step, files.companion, { executionProviders: [backend] });
  history.losses = [];
  history.trainAcc = [];
  history.testAcc = [];
  history.classAcc = null;
  $('loaded').textContent =
    `${files.stepName}: ${trainer.stateNames.length} state tensors; data: ${data.train.count} train, ` +
    `${data.test.count} test, ${data.classes} classes of ${data.shape.join('x')}`;
  status(`ready (${backend}). ${data.description}`);
  $('train').disabled = false;
  $('download').disabled = true;
  redraw();
  return true;
}

function order(epoch, kind, seed) {
  const n = data.train.count;
  const indices = Array.from({ length: n }, (_, i) => i);
  if (kind === 'sequential') return indices;
  if (kind === 'strided') {
    // Position k holds example (k * 7919) mod n: a fixed permutation that mixes
    // the classes of a file stored class after class (7919 is prime).
    if (n % 7919 === 0) throw new Error('strided order needs a training set size not divisible by 7919');
    return indices.map((k) => (k * 7919) % n);
  }
  // mulberry32, seeded by (seed, epoch): the same order for the same settings.
  let s = (Math.imul(seed | 0, 0x9e3779b1) ^ (epoch + 1)) >>> 0;
  const random = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [indices[i], indices[j]] = [indices[j], indices[i]];
  }
  return indices;
}

function argmaxHits(logits, labels) {
  const values = logits.data;
  const classes = values.length / labels.length;
  let hits = 0;
  const predictions = labels.map((label, k) => {
    let best = 0;
    for (let c = 1; c < classes; c++) if (values[k * classes + c] > values[k * classes + best]) best = c;
    if (best === label) hits++;
    return best;
  });
  return { hits, predictions };
}

/// Test accuracy, overall and per class: the step run on test batches with the
/// state put back afterwards, so nothing is learnt from the test set.
async function evaluate(batch, epoch) {
  const kept = new Map(trainer.state);
  const correct = new Array(data.classes).fill(0);
  const total = new Array(data.classes).fill(0);
  try {
    for (let begin = 0; begin < data.test.count; begin += batch) {
      const indices = [];
      for (let i = begin; i < Math.min(begin + batch, data.test.count); i++) indices.push(i);
      const labels = batchLabels(data.test, indices);
      const input = new ort.Tensor('float32', batchInput(data, data.test, indices), [indices.length, ...data.shape]);
      const { logits } = await trainer.step({ input, labels, epoch, lr: 0 });
      const { predictions } = argmaxHits(logits, labels);
      labels.forEach((label, k) => {
        total[label]++;
        if (predictions[k] === label) correct[label]++;
      });
      for (const [name, value] of kept) trainer.state.set(name, value);
    }
  } finally {
    for (const [name, value] of kept) trainer.state.set(name, value);
  }
  history.classAcc = correct.map((c, k) => (total[k] > 0 ? c / total[k] : null));
  return correct.reduce((a, b) => a + b, 0) / Math.max(1, data.test.count);
}

let drawPending = false;
function redraw(totalSteps = 0) {
  if (drawPending) return;
  drawPending = true;
  const draw = () => {
    drawPending = false;
    drawCurves($('curves'), history, totalSteps);
    if (data) {
      const rows = data.classCounts
        .map((count, c) => ({ name: data.classNames[c], count, accuracy: history.classAcc ? history.classAcc[c] : null }))
        .sort((a, b) => b.count - a.count);
      drawClasses($('classes'), rows);
    }
    $('losses').textContent = JSON.stringify(history.losses);
  };
  if (autorun !== null) draw(); // headless runs draw at once
  else requestAnimationFrame(draw);
}

async function train(stepLimit) {
  const batch = Number($('batch').value);
  const lr = Number($('lr').value);
  const epochs = Number($('epochs').value);
  const kind = $('order').value;
  const seed = Number(params.get('seed') ?? 0);
  const perEpoch = Math.floor(data.train.count / batch);
  if (!(perEpoch >= 1)) throw new Error(`batch ${batch} is larger than the ${data.train.count} training examples`);
  const steps = stepLimit ?? perEpoch * epochs;
  const first = history.losses.length;
  let epochOrder = null;
  let hits = 0;
  let seen = 0;
  stopping = false;
  $('train').disabled = true;
  $('stop').disabled = false;
  for (let i = first; i < first + steps && !stopping; i++) {
    const epoch = Math.floor(i / perEpoch);
    const position = i % perEpoch;
    if (position === 0 || epochOrder === null) {
      epochOrder = order(epoch, kind, seed);
      hits = 0;
      seen = 0;
    }
    const indices = epochOrder.slice(position * batch, (position + 1) * batch);
    const labels = batchLabels(data.train, indices);
    const input = new ort.Tensor('float32', batchInput(data, data.train, indices), [batch, ...data.shape]);
    const { loss, logits } = await trainer.step({ input, labels, epoch, lr });
    history.losses.push(loss);
    hits += argmaxHits(logits, labels).hits;
    seen += labels.length;
    history.trainAcc.push([i, hits / seen]);
    if (position === perEpoch - 1) history.testAcc.push([i, await evaluate(batch, epoch)]);
    status(`epoch ${epoch + 1}, step ${position + 1}/${perEpoch}: loss ${loss.toFixed(4)}, ` +
      `running train accuracy ${(100 * hits / seen).toFixed(1)}%`);
    redraw(first + steps);
  }
  const last = history.losses.length - 1;
  if (history.testAcc.length === 0 || history.testAcc[history.testAcc.length - 1][0] !== last) {
    history.testAcc.push([last, await evaluate(batch, Math.floor(last / perEpoch))]);
  }
  redraw(first + steps);
  const test = history.testAcc[history.testAcc.length - 1][1];
  status(`${stopping ? 'stopped' : 'done'} after ${history.losses.length} steps: test accuracy ${(100 * test).toFixed(1)}%`);
  $('train').disabled = false;
  $('stop').disabled = true;
  $('download').disabled = false;
  return { batch, lr, kind };
}

/// The trained state in the state file's format, with the input normalisation
/// and the training class counts recorded (as `ldam-onnx train` records them).
async function trainedStateFile() {
  const values = new Map();
  for (const [name, tensor] of trainer.state) {
    values.set(name, tensor.location === 'cpu' || !tensor.location ? tensor.data : await tensor.getData());
  }
  const metadata = [['ldam_onnx.train_class_counts', data.classCounts.join(',')]];
  if (data.normalization) {
    const { mean, std } = data.normalization;
    metadata.push(['ldam_onnx.input_normalization', `${mean.join(',')}/${std.join(',')}`]);
  }
  metadata.push(['ldam_onnx.web.steps', String(history.losses.length)]);
  return writeStateFile(files.companion, values, metadata);
}
window.trainedStateFile = trainedStateFile;

async function download() {
  const bytes = await trainedStateFile();
  const link = document.createElement('a');
  link.href = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
  link.download = files.stepName.replace(/\.train\.onnx$|\.onnx$/, '') + '.trained.state.onnx';
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

async function main() {
  if (navigator.gpu) $('backend').add(new Option('WebGPU', 'webgpu'));
  for (const id of ['batch', 'lr', 'epochs']) setting(id);
  if (params.has('backend')) $('backend').value = params.get('backend');
  $('order').value = params.get('order') ?? (autorun !== null ? 'strided' : 'shuffle');
  $('files').addEventListener('change', async (e) => {
    try {
      await fromPicked(e.target.files);
      await prepare();
    } catch (err) {
      status(`error: ${err.message}`);
    }
  });
  $('backend').addEventListener('change', () => prepare().catch((err) => status(`error: ${err.message}`)));
  $('train').addEventListener('click', () => train(null).catch((err) => status(`error: ${err.message}`)));
  $('stop').addEventListener('click', () => (stopping = true));
  $('download').addEventListener('click', () => download().catch((err) => status(`error: ${err.message}`)));

  if (params.has('step')) {
    const stepUrl = new URL(params.get('step'), location.href);
    files.step = await fetchBytes(stepUrl);
    files.stepName = stepUrl.pathname.split('/').pop();
    const companion = companionName(files.step);
    if (companion === null) throw new Error('the step names no state file; compile it again with this version');
    files.companion = await fetchBytes(new URL(companion, stepUrl));
  }
  if (params.has('data')) files.data = await fetchBytes(new URL(params.get('data'), location.href));
  const ready = await prepare();
  if (ready && autorun !== null) {
    const run = await train(autorun);
    const pixels = drawnPixels($('curves'));
    $('result').textContent = JSON.stringify({
      losses: history.losses,
      steps: autorun,
      batch: run.batch,
      lr: run.lr,
      order: run.kind,
      backend: $('backend').value,
      curvePixels: pixels,
      testAccuracy: history.testAcc[history.testAcc.length - 1][1],
      classAccuracy: history.classAcc,
      ortVersion: ort.env.versions?.web ?? null,
    });
  }
}

main()
  .catch((err) => {
    status(`error: ${err.message}`);
    $('result').textContent = JSON.stringify({ error: err.message });
  })
  .finally(() => {
    if (autorun !== null) document.body.dataset.done = '1';
  });
