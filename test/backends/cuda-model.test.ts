import { afterAll, describe, expect, it } from 'vitest';
import type { Backend, ForwardBatch } from '../../src/engine/backend.js';
import { CudaBackend } from '../../backends/cuda/cuda-backend.js';
import { RefBackend } from '../../backends/ref/ref-backend.js';
import { kvBytesPerToken } from '../../src/engine/kv-capacity.js';
import { toFloat32 } from '../../src/model/dtype.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { buildLlamaGraph } from '../../src/model/graph.js';
import { greedySampling, pagedBatch } from '../support/paged-batch.js';
import { presets } from '../../src/model/presets.js';
import { SingleSequence } from '../support/single-sequence.js';
import { randomData } from '../support/random-data.js';
import { maskBatch, randomAllowedSets } from '../support/token-masks.js';
import { cudaForTests } from '../support/cuda-harness.js';
import { cudaVariants, withVariant } from '../../backends/cuda/variants.js';

const { addon, gpu, skipReason } = cudaForTests();
const seed = Number(process.env.SLUICE_TEST_SEED ?? Date.now() % 1_000_000);
const open: Backend[] = [];
/**
 * bf16 weights, activations and KV against an f32 reference: log-probs agree to about 0.1, and
 * only tokens whose reference log-probs are that close to the best may be picked instead.
 */
const nearTie = 0.15;
afterAll(async () => {
  for (const b of open) await b.close();
});

/** A preset with bf16 dummy weights: the values the device generates, so both backends see the same model. */
function spec(preset: string) {
  const config = presets[preset]!;
  return { config, graph: buildLlamaGraph(config), weights: new DummyWeights(config, 0, 'bf16') };
}

async function cuda(preset: string, graphCapture = true) {
  const b = new CudaBackend(addon!, { graphCapture });
  open.push(b);
  await b.load(spec(preset));
  return b;
}

async function reference(preset: string) {
  const b = new RefBackend();
  open.push(b);
  await b.load(spec(preset));
  return b;
}

describe.skipIf(!gpu)(`cuda backend, whole model (seed ${seed}) ${gpu ? `on ${gpu}` : skipReason}`, () => {
  const r = randomData(seed);

  it('generates dummy weights on the device bit-identical to the host generator', async () => {
    for (const preset of ['tiny', 'small']) {
      const b = await cuda(preset);
      const host = new DummyWeights(presets[preset]!, 0, 'bf16');
      const compiled = b.compiledGraph!;
      for (const name of ['model.embed_tokens.weight', 'model.layers.1.input_layernorm.weight', 'model.layers.0.mlp.down_proj.weight']) {
        const id = compiled.weights.findIndex((w) => w.name === name);
        const got = b.native.readWeight(id);
        const want = toFloat32(await host.read(name), 'bf16');
        expect(got.length).toBe(want.length);
        let mismatches = 0;
        for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) mismatches++;
        expect(mismatches, `${preset} ${name}`).toBe(0);
      }
    }
  });

  it('loads a fused q/k/v weight part by part, each part as the host generates it', async () => {
    const b = await cuda('tiny');
    const host = new DummyWeights(presets.tiny!, 0, 'bf16');
    const id = b.compiledGraph!.weights.findIndex((w) => w.parts?.length === 3);
    expect(id, 'the default compile fuses q/k/v').toBeGreaterThanOrEqual(0);
    const fused = b.compiledGraph!.weights[id]!;
    const want = (await Promise.all(fused.parts!.map(async (p) => toFloat32(await host.read(p.name), 'bf16')))).flatMap((x) => Array.from(x));
    const got = b.native.readWeight(id);
    expect(got.length).toBe(want.length);
    expect(got.filter((v, i) => v !== want[i]).length).toBe(0);
  });

  it('every path variant (fused or not, GEMV or not, either sampler) gives the same greedy steps on tiny', async () => {
    const prompt = Array.from({ length: 17 }, () => r.int(0, 127999));
    const names = Object.keys(cudaVariants);
    // The default path's steps; the other variants are teacher-forced along its tokens.
    let forced: number[] = [];
    let reference: Awaited<ReturnType<SingleSequence['step']>>[] = [];
    for (const name of names) {
      const b = await withVariant(cudaVariants[name]!, async () => cuda('tiny'));
      await b.allocateKvCache({ numPages: 64, pageSize: 1 });
      const seq = new SingleSequence(b, 5);
      const outs = [await seq.step(prompt)];
      for (let i = 0; i < 8; i++) outs.push(await seq.step([name === names[0] ? outs[i]!.tokens[0]! : forced[i]!]));
      if (name === names[0]) {
        reference = outs;
        forced = outs.map((o) => o.tokens[0]!);
        continue;
      }
      let exact = 0;
      outs.forEach((o, i) => {
        const want = reference[i]!;
        const rank = Array.from(want.topLogprobs!.ids).indexOf(o.tokens[0]!);
        expect(rank, `${name} step ${i}: token not in the default path's top 5`).toBeGreaterThanOrEqual(0);
        expect(want.topLogprobs!.logprobs[0]! - want.topLogprobs!.logprobs[rank]!, `${name} step ${i}`).toBeLessThan(0.05);
        if (rank === 0) {
          exact++;
          expect(Math.abs(o.logprobs![0]! - want.logprobs![0]!), `${name} step ${i} log-prob`).toBeLessThan(0.05);
        }
      });
      expect(exact, name).toBeGreaterThanOrEqual(7);
    }
  });

  for (const preset of ['tiny', 'small']) {
    it(`greedy decoding agrees with ref on ${preset} (teacher-forced, every step)`, async () => {
      const [gpuBackend, refBackend] = [await cuda(preset), await reference(preset)];
      await gpuBackend.allocateKvCache({ numPages: 256, pageSize: 1 });
      await refBackend.allocateKvCache({ numPages: 256, pageSize: 1 });
      const a = new SingleSequence(gpuBackend, 5);
      const b = new SingleSequence(refBackend, 5);
      const prompt = Array.from({ length: r.int(5, 60) }, () => r.int(0, 127999));
      let [x, y] = [await a.step(prompt), await b.step(prompt)];
      let exact = 0;
      const steps = 24;
      for (let i = 0; i < steps; i++) {
        const mine = x.tokens[0]!;
        const best = y.tokens[0]!;
        if (mine === best) {
          exact++;
          expect(Math.abs(x.logprobs![0]! - y.logprobs![0]!), `step ${i} log-prob`).toBeLessThan(nearTie);
        } else {
          // Only a near-tie may flip under bf16: the reference must rank our token close to its best.
          const rank = Array.from(y.topLogprobs!.ids).indexOf(mine);
          expect(rank, `step ${i}: token ${mine} is not in ref's top 5`).toBeGreaterThanOrEqual(0);
          expect(y.topLogprobs!.logprobs[0]! - y.topLogprobs!.logprobs[rank]!).toBeLessThan(nearTie);
        }
        [x, y] = [await a.step([best]), await b.step([best])];
      }
      expect(exact).toBeGreaterThanOrEqual(Math.floor(steps * 0.75));
    });
  }

  it('batched paged steps (prefill chunks, prefix reuse, decode in CUDA graphs) match ref', async () => {
    const preset = 'tiny';
    const pageSize = 4;
    const numPages = 200;
    const backends = [await cuda(preset, true), await cuda(preset, false), await reference(preset)];
    for (const b of backends) await b.allocateKvCache({ numPages, pageSize });
    // Three sequences; the third shares the first's first 8 tokens (two pages) as a prefix-cache hit.
    const prompts = [Array.from({ length: 13 }, () => r.int(0, 127999)), Array.from({ length: 6 }, () => r.int(0, 127999))];
    prompts.push([...prompts[0]!.slice(0, 8), ...Array.from({ length: 5 }, () => r.int(0, 127999))]);
    const pages = [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13], [0, 1, 20, 21, 22, 23, 24, 25]];
    const lengths = [0, 0, 8]; // the shared prefix is in the cache once sequence 0 is prefilled
    const tokens = prompts.map((p) => p.slice());
    const run = async (chunks: number[][]) => {
      const batch = buildBatch(chunks, lengths, pages, pageSize);
      const outs = await Promise.all(backends.map((b) => b.forward(batch)));
      chunks.forEach((c, s) => (lengths[s]! += c.length));
      return outs;
    };
    // Step 1: sequence 0 whole, sequence 1 in part; sequence 2 waits for its prefix.
    const first = await run([prompts[0]!, prompts[1]!.slice(0, 3)]);
    const next0 = first[2]!.tokens[0]!;
    tokens[0]!.push(next0);
    // Step 2: sequence 0 decodes, sequence 1 prefills its rest, sequence 2 its tokens beyond the shared prefix.
    let outs = await run([[next0], prompts[1]!.slice(3), prompts[2]!.slice(8)]);
    for (let step = 0; step < 10; step++) {
      const [graphs, eager, want] = outs as [Awaited<ReturnType<Backend['forward']>>, Awaited<ReturnType<Backend['forward']>>, Awaited<ReturnType<Backend['forward']>>];
      for (let s = 0; s < 3; s++) {
        const ranks = Array.from(want.topLogprobs!.ids.subarray(s * 5, s * 5 + 5));
        for (const got of [graphs, eager]) {
          const rank = ranks.indexOf(got.tokens[s]!);
          expect(rank, `step ${step} seq ${s}`).toBeGreaterThanOrEqual(0);
          expect(want.topLogprobs!.logprobs[s * 5]! - want.topLogprobs!.logprobs[s * 5 + rank]!).toBeLessThan(nearTie);
        }
      }
      const next = [0, 1, 2].map((s) => [want.tokens[s]!]);
      next.forEach((t, s) => tokens[s]!.push(t[0]!));
      outs = await run(next);
    }
    expect((backends[0] as CudaBackend).native.graphsCaptured()).toBeGreaterThan(0);

    function buildBatch(chunks: number[][], done: number[], table: number[][], size: number): ForwardBatch {
      const steps = chunks.flatMap((tokens, s) => (tokens.length > 0 ? [{ tokens, cached: done[s]!, pages: table[s]! }] : []));
      return pagedBatch(steps, size, greedySampling(steps.length, 5));
    }
  });

  it('token masks taken after the launch: masked steps (prefill, then decode in graphs and eagerly) match ref on tiny', async () => {
    const preset = 'tiny';
    const vocab = presets[preset]!.vocabSize;
    const backends = [await cuda(preset, true), await cuda(preset, false), await reference(preset)];
    for (const b of backends) await b.allocateKvCache({ numPages: 128, pageSize: 1 });
    const sets = randomAllowedSets(vocab, seed);
    const numSeqs = sets.length;
    const prompts = Array.from({ length: numSeqs }, () => Array.from({ length: r.int(2, 12) }, () => r.int(0, 127999)));
    const pages = prompts.map((_, s) => Array.from({ length: 20 }, (_, i) => s * 20 + i));
    const cached = new Array<number>(numSeqs).fill(0);
    let chunks = prompts;
    for (let step = 0; step < 6; step++) {
      const batchOf = () => pagedBatch(chunks.map((tokens, s) => ({ tokens, cached: cached[s]!, pages: pages[s]! })), 1, greedySampling(numSeqs, 5));
      // The cuda steps get masks that are filled only after the forward pass was launched.
      const outs = await Promise.all(
        backends.map(async (b) => {
          const batch = batchOf();
          if (!(b instanceof CudaBackend)) {
            batch.sampling.tokenMask = maskBatch(sets, vocab);
            return b.forward(batch);
          }
          const filled = maskBatch(sets, vocab);
          const bits = new Int32Array(filled.bits.length);
          let markReady!: () => void;
          batch.sampling.tokenMask = { ...filled, bits, ready: new Promise<void>((resolve) => (markReady = resolve)) };
          const out = b.forward(batch);
          setTimeout(() => {
            bits.set(filled.bits);
            markReady();
          }, 5);
          return out;
        }),
      );
      const want = outs[2]!;
      for (const got of outs.slice(0, 2)) {
        for (let s = 0; s < numSeqs; s++) {
          const token = got.tokens[s]!;
          if (sets[s]) expect(sets[s]!.has(token), `step ${step} seq ${s}: token ${token} is masked out`).toBe(true);
          const ranks = Array.from(want.topLogprobs!.ids.subarray(s * 5, s * 5 + 5));
          const rank = ranks.indexOf(token);
          expect(rank, `step ${step} seq ${s}: token ${token} not in ref's masked top 5`).toBeGreaterThanOrEqual(0);
          expect(want.topLogprobs!.logprobs[s * 5]! - want.topLogprobs!.logprobs[s * 5 + rank]!).toBeLessThan(nearTie);
        }
      }
      chunks.forEach((c, s) => (cached[s]! += c.length));
      chunks = Array.from({ length: numSeqs }, (_, s) => [want.tokens[s]!]);
    }
    expect((backends[0] as CudaBackend).native.graphsCaptured()).toBeGreaterThan(0);
  });

  it('sizes the KV pool from the memory fraction left after the weights, and honours a token count', async () => {
    const b = await cuda('small');
    const budget = { memFractionStatic: 0.9, maxTotalTokens: null, minTokens: 16 };
    const tokens = b.kvCapacity(budget);
    expect(tokens).toBeGreaterThan(1000);
    const more = b.kvCapacity({ ...budget, memFractionStatic: 0.95 });
    expect(more).toBeGreaterThan(tokens);
    expect(b.kvCapacity({ ...budget, maxTotalTokens: 5000 })).toBe(5000);
    expect(() => b.kvCapacity({ ...budget, memFractionStatic: 0.01 })).toThrow(/memFractionStatic 0.01 leaves no device memory/);
    await b.allocateKvCache({ numPages: 1000, pageSize: 16 });
    // The allocated cache (16,000 tokens) is no longer free. The drop is compared with a margin:
    // allocations round to the driver's granularity, and allocateKv also sizes the page table.
    const margin = Math.ceil((64 << 20) / kvBytesPerToken(presets.small!, 2));
    const dropped = tokens - b.kvCapacity(budget);
    expect(dropped).toBeGreaterThanOrEqual(16_000 - margin);
    expect(dropped).toBeLessThanOrEqual(16_000 + margin);
  });
});
