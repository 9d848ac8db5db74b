// Runs a compiled training step in onnxruntime-web (WASM) or onnxruntime-node under
// Node, through web/lib/step.mjs, and writes what tests/js_runtimes.rs compares with
// native ONNX Runtime.
//
//   node tests/js/run_step.mjs --runtime web|node --npm DIR --step STEP.onnx \
//       --batch BATCH.json --anchors DIR --out DIR
//
// --npm: the folder whose node_modules holds tests/js/package.json's packages.
// --batch: {"input_dims": [N, ...], "steps": [{"epoch", "lr", "input": FILE
//   (float32 little-endian, beside BATCH.json), "labels": [...]}, ...]}.
// --anchors: state-K.bin for every step K > 0: native ONNX Runtime's state before
//   step K (float32 little-endian, the step's state order).
//
// Two runs over the batch's steps:
// - chain: from the companion's initial state, each step's S.next fed back as S
//   (as a trainer runs it); writes the losses;
// - anchored: step K from native's state before it (the companion's for K = 0),
//   so each step is compared alone; writes the losses and OUT/anchored-K.bin, the
//   state after step K.
// OUT/result.json: {"version", "chain_losses", "anchored_losses", "state": [{"name",
// "dims", "offset", "length"}]} (offsets and lengths in elements).

import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { createStep, companionName } from '../../web/lib/step.mjs';

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) throw new Error(`bad argument '${argv[i]}'`);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  for (const required of ['runtime', 'npm', 'step', 'batch', 'anchors', 'out']) {
    if (!(required in args)) throw new Error(`--${required} is required`);
  }
  return args;
}

function loadRuntime(runtime, npmDir) {
  const packageName = { web: 'onnxruntime-web', node: 'onnxruntime-node' }[runtime];
  if (!packageName) throw new Error(`--runtime must be web or node, not '${runtime}'`);
  const require = createRequire(join(resolve(npmDir), 'package.json'));
  const ort = require(packageName);
  if (runtime === 'web') {
    // One WASM thread: no worker threads to start or to leave running.
    ort.env.wasm.numThreads = 1;
  }
  return { ort, version: `${packageName} ${ort.env.versions?.[runtime] ?? 'unknown'}` };
}

const floats = (buffer) => new Float32Array(buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength));

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { ort, version } = loadRuntime(args.runtime, args.npm);
  const stepBytes = readFileSync(args.step);
  const companion = companionName(stepBytes);
  const companionBytes = companion === null ? null : readFileSync(join(dirname(args.step), companion));
  const trainer = await createStep(ort, stepBytes, companionBytes);
  const initial = new Map(trainer.state);

  const batch = JSON.parse(readFileSync(args.batch, 'utf8'));
  const inputs = batch.steps.map(
    (step) => new ort.Tensor('float32', floats(readFileSync(join(dirname(args.batch), step.input))), batch.input_dims));
  const run = async (k) => {
    const { epoch, lr, labels } = batch.steps[k];
    return (await trainer.step({ input: inputs[k], labels, epoch, lr })).loss;
  };

  const layout = [];
  let length = 0;
  for (const name of trainer.stateNames) {
    const dims = initial.get(name).dims.map(Number);
    const size = dims.reduce((a, b) => a * b, 1);
    layout.push({ name, dims, offset: length, length: size });
    length += size;
  }

  const chainLosses = [];
  for (const k of batch.steps.keys()) chainLosses.push(await run(k));

  mkdirSync(args.out, { recursive: true });
  const anchoredLosses = [];
  for (const k of batch.steps.keys()) {
    if (k === 0) {
      for (const [name, tensor] of initial) trainer.state.set(name, tensor);
    } else {
      const values = floats(readFileSync(join(args.anchors, `state-${k}.bin`)));
      if (values.length !== length) throw new Error(`state-${k}.bin holds ${values.length} values, not ${length}`);
      for (const slot of layout) {
        const part = values.slice(slot.offset, slot.offset + slot.length);
        trainer.state.set(slot.name, new ort.Tensor('float32', part, slot.dims));
      }
    }
    anchoredLosses.push(await run(k));
    const after = new Float32Array(length);
    for (const slot of layout) after.set(trainer.state.get(slot.name).data, slot.offset);
    writeFileSync(join(args.out, `anchored-${k}.bin`), Buffer.from(after.buffer));
  }
  await trainer.release();
  const result = { version, chain_losses: chainLosses, anchored_losses: anchoredLosses, state: layout };
  writeFileSync(join(args.out, 'result.json'), JSON.stringify(result));
}

main().catch((error) => {
  console.error(`run_step.mjs: ${error.stack ?? error}`);
  process.exit(1);
});
