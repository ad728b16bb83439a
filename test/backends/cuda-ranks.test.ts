import { afterAll, describe, expect, it } from 'vitest';
import { CudaBackend, stepOutputOf } from '../../backends/cuda/cuda-backend.js';
import type { NativeNcclGroup } from '../../backends/cuda/native.js';
import { CudaRanksBackend } from '../../backends/tensor-parallel/cuda-ranks.js';
import type { Backend, ForwardBatch, StepOutput } from '../../src/engine/backend.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { toFloat32 } from '../../src/model/dtype.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { buildLlamaGraph, type GraphOp, type LlamaGraph } from '../../src/model/graph.js';
import { shardLlama } from '../../src/model/shard.js';
import { ShardedWeights } from '../../src/model/sharded-weights.js';
import { cudaForTests } from '../support/cuda-harness.js';
import { tinyVariant } from '../support/reference-runs.js';
import { SingleSequence } from '../support/single-sequence.js';

/**
 * Tensor-parallel cuda ranks on real GPUs. On one GPU: a one-rank NCCL communicator runs a graph
 * with every collective of a rank's graph (all_reduce after the embedding, o_proj and down_proj;
 * all_gather of the logits) and must give exactly what the plain graph gives, eager and replayed
 * from captured CUDA graphs; rank slices of dummy weights generated on the device equal the
 * host's. On two or more GPUs: tp 2 and 4 against tp 1. The host side is
 * test/backends/tensor-parallel-cuda-ranks.test.ts.
 */
const { addon, gpu, skipReason } = cudaForTests();
const gpuCount = addon && gpu ? addon.probe().count : 0;
const withGroup = !!gpu && !!addon?.NcclGroup;
const groupSkip = !gpu ? skipReason : addon?.NcclGroup ? '' : 'skipped: the addon predates NcclGroup (rebuild: node scripts/build-native.mjs)';
const prompt = [5, 17, 250, 3, 999, 42, 7];
const open: { close(): unknown }[] = [];
afterAll(async () => {
  for (const o of open.reverse()) await o.close();
});

/** The plain graph with a one-rank copy of every collective shard.ts inserts (each the identity at one rank). */
function withCollectives(graph: LlamaGraph, vocab: number): LlamaGraph {
  const ops: GraphOp[] = [];
  const layerStart: number[] = [];
  graph.ops.forEach((op, i) => {
    if (graph.layerStart.includes(i)) layerStart.push(ops.length);
    if (op.op === 'embedding') ops.push({ ...op, vocabStart: 0 }, { op: 'all_reduce', x: op.out });
    else if (op.op === 'linear' && op.weight === graph.lmHead) ops.push({ ...op, out: 'logits_part' }, { op: 'all_gather', x: 'logits_part', out: op.out, parts: [vocab] });
    else if (op.op === 'linear' && /(o_proj|down_proj)\.weight$/.test(op.weight)) ops.push(op, { op: 'all_reduce', x: op.out });
    else ops.push(op);
  });
  while (layerStart.length < graph.layerStart.length) layerStart.push(ops.length);
  return { ...graph, ops, layerStart, activations: { ...graph.activations, logits_part: { rows: 'seqs', cols: vocab } } };
}

/** A rank backend stepped through its group, as CudaRanksBackend steps them. */
function grouped(rank: CudaBackend, group: NativeNcclGroup): Backend {
  return {
    name: 'cuda',
    description: rank.description,
    load: async () => {},
    kvCapacity: () => 0,
    allocateKvCache: (spec) => rank.allocateKvCache(spec),
    forward: async (batch: ForwardBatch): Promise<StepOutput> => stepOutputOf(await group.forward(await rank.prepareStep(batch))),
    close: async () => {},
  };
}

async function greedy(backend: Backend, count = 12) {
  await backend.allocateKvCache({ numPages: 64, pageSize: 1 });
  return new SingleSequence(backend, 0).greedy(prompt, count);
}

describe.skipIf(!withGroup)(`cuda ranks, one GPU ${withGroup ? `on ${gpu}` : groupSkip}`, () => {
  const config = tinyVariant({ vocabSize: 1001, tieWordEmbeddings: false });
  const weights = () => new DummyWeights(config, 3, 'bf16');

  for (const graphCapture of [false, true]) {
    it(`a one-rank NCCL group runs every collective and equals the plain graph (${graphCapture ? 'decode steps replayed from CUDA graphs' : 'eager'})`, async () => {
      const plain = new CudaBackend(addon!, { graphCapture });
      open.push(plain);
      await plain.load({ config, graph: buildLlamaGraph(config), weights: weights() });
      const want = await greedy(plain);

      const group = new addon!.NcclGroup!(Int32Array.of(0));
      const rank = new CudaBackend(addon!, { graphCapture });
      open.push(rank, group);
      group.attach(rank.native, 0);
      expect(group.description()).toMatch(/^NCCL \d+\.\d+\.\d+ from .*, 1 rank on GPU 0$/);
      await rank.load({ config, graph: withCollectives(buildLlamaGraph(config), config.vocabSize), weights: weights() });
      const got = await greedy(grouped(rank, group));
      expect(got.tokens).toEqual(want.tokens);
      expect(got.logprobs).toEqual(want.logprobs);
      if (graphCapture) expect(rank.native.graphsCaptured()).toBeGreaterThan(0);
    });
  }

  it("generates a rank's slices of dummy weights on the device equal to the host's slices", async () => {
    const [, second] = shardLlama(config, 2);
    // The embedding and lm-head slices need a rank graph's vocabulary split; every other slice loads into a plain graph of the rank's shapes.
    const slices = new Map([...second!.slices].filter(([name]) => !/embed_tokens|lm_head/.test(name)));
    const sharded = new ShardedWeights(weights(), slices, 1);
    const rankConfig: LlamaConfig = { ...second!.config };
    const backend = new CudaBackend(addon!, { graphCapture: false });
    open.push(backend);
    await backend.load({ config: rankConfig, graph: buildLlamaGraph(rankConfig), weights: sharded });
    // Every weight, fused ones part by part: sliced ones from windows, the norms whole.
    for (const [id, weight] of backend.compiledGraph!.weights.entries()) {
      const parts = await Promise.all((weight.parts ?? [{ name: weight.name }]).map(async (p) => [...toFloat32(await sharded.read(p.name), 'bf16')]));
      expect([...backend.native.readWeight(id)], weight.name).toEqual(parts.flat());
    }
  });
});

describe.skipIf(gpuCount < 2 || !withGroup)(
  `cuda ranks on several GPUs ${gpuCount >= 2 && withGroup ? `(${gpuCount} x ${gpu})` : gpuCount < 2 && gpu ? `(skipped: ${gpuCount} GPU here, parity needs 2 or more)` : groupSkip}`,
  () => {
    // Uneven vocabulary splits; KV heads split at tp 2 and replicated at tp 4.
    const config = tinyVariant({ vocabSize: 1001, numKvHeads: 2, tieWordEmbeddings: false });
    const weights = () => new DummyWeights(config, 9, 'bf16');
    for (const tp of [2, 4]) {
      it.skipIf(tp > gpuCount)(`tp ${tp} equals tp 1 (greedy tokens; log-probs within bf16 partial-sum rounding)`, async () => {
        const single = new CudaBackend(addon!, { graphCapture: true });
        open.push(single);
        await single.load({ config, graph: buildLlamaGraph(config), weights: weights() });
        const want = await greedy(single, 16);
        const ranks = new CudaRanksBackend(addon!, Array.from({ length: tp }, (_, r) => r), { graphCapture: true });
        open.push(ranks);
        await ranks.load({ config, graph: buildLlamaGraph(config), weights: weights() });
        const got = await greedy(ranks, 16);
        // o_proj and down_proj partial sums are rounded to bf16 before the all-reduce adds them.
        expect(got.tokens).toEqual(want.tokens);
        got.logprobs.forEach((lp, i) => expect(Math.abs(lp - want.logprobs[i]!), `token ${i}`).toBeLessThan(0.05));
      });
    }
  },
);
