import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CudaBackend } from '../../backends/cuda/cuda-backend.js';
import type { CudaAddon, NativeModel } from '../../backends/cuda/native.js';
import { RefBackend } from '../../backends/ref/ref-backend.js';
import { createWebGpuBackend } from '../../backends/webgpu/index.js';
import { dequantizedDType } from '../../src/cli/backend-flags.js';
import type { Backend } from '../../src/engine/backend.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { bf16ToF32, toFloat32 } from '../../src/model/dtype.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { openModel, type LoadedModel } from '../../src/model/load.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { cudaForTests, roundBf16 } from '../support/cuda-harness.js';
import { writeGguf, type GgufDType } from '../support/gguf-writer.js';
import { tinyVariant } from '../support/reference-runs.js';
import { SingleSequence } from '../support/single-sequence.js';
import { openGpuForTests } from '../support/webgpu-harness.js';
import { sentencePieceVocabulary } from '../support/sentencepiece-vocabulary.js';

// GGUF files on the GPU backends: each gets the file's matrices dequantized to BF16 (what
// `--backend webgpu|cuda` asks of the loader), Q/K rows in Hugging Face order.

// A small SentencePiece vocabulary keeps the embedding (and the test) small.
const tokenizer = sentencePieceVocabulary(Tokenizer.llama3(), 3000);
const small = { vocabSize: tokenizer.tokens.length, bosTokenId: tokenizer.bos, eosTokenIds: [tokenizer.eos] };
/** K-quant rows are blocks of 256: a hidden size of 256. */
const kQuantConfig = tinyVariant({ ...small, hiddenSize: 256, intermediateSize: 512, headDim: 64, numHeads: 4, numKvHeads: 2 });
const files: { dtype: GgufDType; config: LlamaConfig }[] = [
  { dtype: 'q8_0', config: tinyVariant({ ...small, numHeads: 4, numKvHeads: 2, tieWordEmbeddings: false }) },
  { dtype: 'q4_k', config: kQuantConfig },
];
const promptOf = (model: LoadedModel) => model.tokenizer.encode('The quick brown fox jumps over the lazy dog');

let dir: string;
const open: { close(): Promise<void> }[] = [];
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-gguf-gpu-'));
});
afterAll(async () => {
  for (const o of open) await o.close();
  rmSync(dir, { recursive: true, force: true });
});

const written = new Map<GgufDType, string>();

/** The file (written once per type), opened as the CLI opens it for `backend`. */
async function gguf(dtype: GgufDType, config: LlamaConfig, backend: 'webgpu' | 'cuda' | 'ref'): Promise<{ file: string; model: LoadedModel }> {
  let file = written.get(dtype);
  if (file === undefined) {
    file = join(dir, `${dtype}.gguf`);
    await writeGguf(file, { config, tokenizer, weights: new DummyWeights(config, 3) }, { dtype });
    written.set(dtype, file);
  }
  const model = await openModel({ modelPath: file, dequantizeTo: dequantizedDType({ backend } as Parameters<typeof dequantizedDType>[0]) });
  open.push({ close: () => model.weights.close() });
  return { file, model };
}

async function loaded(backend: Backend, model: LoadedModel, tokens: number): Promise<Backend> {
  open.push(backend);
  await backend.load({ config: model.config, graph: model.graph, weights: model.weights });
  await backend.allocateKvCache({ numPages: tokens, pageSize: 1 });
  return backend;
}

const probe = await openGpuForTests();
probe?.destroy();

describe.skipIf(probe === null)('GGUF on webgpu', () => {
  it.each(files)('$dtype: weights dequantized to bf16; greedy tokens equal ref on the same file', async ({ dtype, config }) => {
    const { model } = await gguf(dtype, config, 'webgpu');
    expect(model.config.dtype).toBe('bf16');
    expect(model.weights.info('model.layers.0.self_attn.q_proj.weight')!.dtype).toBe('bf16');
    const count = 12;
    const prompt = promptOf(model);
    const gpu = await new SingleSequence(await loaded(await createWebGpuBackend(), model, prompt.length + count), 0).greedy(prompt, count);
    const ref = await new SingleSequence(await loaded(new RefBackend(), model, prompt.length + count), 0).greedy(prompt, count);
    expect(new Set(ref.tokens).size).toBeGreaterThan(3);
    expect(gpu.tokens).toEqual(ref.tokens);
    gpu.logprobs.forEach((l, i) => expect(l).toBeCloseTo(ref.logprobs[i]!, 2));
  }, 600_000);
});

/** A CudaAddon whose model records what the backend uploads: the host half of a CUDA load, no GPU needed. */
function recordingAddon(): { addon: CudaAddon; uploads: Map<number, { bytes: Uint8Array; dtype: number; rowOffset: number }[]> } {
  const uploads = new Map<number, { bytes: Uint8Array; dtype: number; rowOffset: number }[]>();
  const unused = () => {
    throw new Error('not used by load()');
  };
  const model: Partial<NativeModel> = {
    configure: () => {},
    setWeight: (id, bytes, dtype, rowOffset = 0) => {
      uploads.set(id, [...(uploads.get(id) ?? []), { bytes: bytes.slice(), dtype, rowOffset }]);
    },
    dummyWeight: unused,
    close: () => {},
  };
  const addon = { CudaModel: class { constructor() { return model; } } } as unknown as CudaAddon;
  return { addon, uploads };
}

describe('GGUF on cuda: the host side of the upload (no GPU needed)', () => {
  it.each(files)('$dtype: every weight goes up as bf16 (norms f32), row by row the f32 dequantization rounded to bf16', async ({ dtype, config }) => {
    const { model } = await gguf(dtype, config, 'cuda');
    const { model: f32 } = await gguf(dtype, config, 'ref');
    const { addon, uploads } = recordingAddon();
    const backend = new CudaBackend(addon, {});
    await backend.load({ config: model.config, graph: model.graph, weights: model.weights });
    const compiled = backend.compiledGraph!;
    expect(compiled.weights.length).toBeGreaterThan(4);
    expect(compiled.weights.some((w) => (w.parts?.length ?? 0) > 1)).toBe(true);
    for (const [id, weight] of compiled.weights.entries()) {
      const parts = weight.parts ?? [{ name: weight.name, rows: weight.rows }];
      const got = uploads.get(id)!;
      expect(got.map((u) => u.rowOffset), weight.name).toEqual(parts.map((_, i) => parts.slice(0, i).reduce((n, p) => n + p.rows, 0)));
      for (const [i, part] of parts.entries()) {
        const isMatrix = model.weights.info(part.name)!.shape.length === 2;
        expect(got[i]!.dtype, part.name).toBe(isMatrix ? 1 : 0);
        const sent = isMatrix ? Float32Array.from(new Uint16Array(got[i]!.bytes.buffer), bf16ToF32) : toFloat32(got[i]!.bytes, 'f32');
        const want = toFloat32(await f32.weights.read(part.name), 'f32');
        expect(sent.length, part.name).toBe(want.length);
        expect(Buffer.from(sent.buffer).equals(Buffer.from((isMatrix ? roundBf16(want) : want).buffer)), part.name).toBe(true);
      }
    }
    await backend.close();
  }, 600_000);
});

const { addon, gpu, skipReason } = cudaForTests();

describe.skipIf(!gpu)(`GGUF on cuda ${gpu ? `on ${gpu}` : skipReason}`, () => {
  // bf16 activations against ref's f32 on the same bf16 weights: only near ties may part.
  const nearTie = 0.15;
  it.each(files)('$dtype: teacher-forced greedy picks agree with ref on the same file', async ({ dtype, config }) => {
    const { model } = await gguf(dtype, config, 'cuda');
    const steps = 24;
    const prompt = promptOf(model);
    const a = new SingleSequence(await loaded(new CudaBackend(addon!, { graphCapture: true }), model, prompt.length + steps), 5);
    const b = new SingleSequence(await loaded(new RefBackend(), model, prompt.length + steps), 5);
    let [x, y] = [await a.step(prompt), await b.step(prompt)];
    let exact = 0;
    for (let i = 0; i < steps; i++) {
      const mine = x.tokens[0]!;
      const best = y.tokens[0]!;
      if (mine === best) exact++;
      else {
        const rank = Array.from(y.topLogprobs!.ids).indexOf(mine);
        expect(rank, `step ${i}: token ${mine} is not in ref's top 5`).toBeGreaterThanOrEqual(0);
        expect(y.topLogprobs!.logprobs[0]! - y.topLogprobs!.logprobs[rank]!).toBeLessThan(nearTie);
      }
      [x, y] = [await a.step([best]), await b.step([best])];
    }
    expect(exact).toBeGreaterThanOrEqual(Math.floor(steps * 0.75));
  }, 600_000);
});
