import { describe, expect, it } from 'vitest';
import { compileGraph, DTYPE_BF16, DTYPE_F32, opKind } from '../../backends/cuda/compile.js';
import type { CudaAddon, NativeConfig, NativeModel, NativeNcclGroup, NativeStepOutput } from '../../backends/cuda/native.js';
import { CudaRanksBackend } from '../../backends/tensor-parallel/cuda-ranks.js';
import type { ForwardBatch, KvBudget } from '../../src/engine/backend.js';
import { kvBytesPerToken } from '../../src/engine/kv-capacity.js';
import { bytesPerElement } from '../../src/model/dtype.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { buildLlamaGraph } from '../../src/model/graph.js';
import { shardLlama } from '../../src/model/shard.js';
import type { WeightSource } from '../../src/model/weights.js';
import { greedySampling, pagedBatch } from '../support/paged-batch.js';
import { tinyVariant } from '../support/reference-runs.js';

/**
 * The host side of tensor-parallel cuda ranks, which needs no GPU: what each rank's graph holds
 * once compiled for the addon, and what CudaRanksBackend asks of the addon (through a recording
 * stand-in for CudaModel and NcclGroup): which GPU each rank is on, that a rank joins its group
 * before its graph is configured, that it gets only its slices of the weights, and that a step
 * goes to the group once. The GPU side is test/backends/cuda-ranks.test.ts.
 */

// 1001 ids split 501 / 500 over 2 ranks and 251 / 250 / 250 / 250 over 4.
const config = tinyVariant({ vocabSize: 1001, numKvHeads: 2, tieWordEmbeddings: false });

type Event = { device: number; what: string; args?: unknown[] };

/** A CudaAddon that records calls and moves no data; each device reports its own free memory. */
function recordingAddon(freeBytes: (device: number) => number) {
  const events: Event[] = [];
  const configs = new Map<number, NativeConfig>();
  const steps: { batch: ForwardBatch; ranks: number }[] = [];
  class FakeModel implements NativeModel {
    constructor(
      readonly device: number,
      readonly graphCapture: boolean,
    ) {
      events.push({ device, what: 'create', args: [graphCapture] });
    }
    configure(c: NativeConfig) {
      configs.set(this.device, c);
      events.push({ device: this.device, what: 'configure' });
    }
    setWeight(id: number, bytes: Uint8Array, dtype: number, rowOffset = 0) {
      events.push({ device: this.device, what: 'setWeight', args: [id, bytes.byteLength, dtype, rowOffset] });
    }
    dummyWeight(id: number, key: number, halfRange: number, offset: number, rowOffset = 0, rows = -1) {
      events.push({ device: this.device, what: 'dummyWeight', args: [id, key, rowOffset, rows] });
    }
    dummyWeightWindow(id: number, key: number, halfRange: number, offset: number, rowOffset: number, rows: number, sourceCols: number, rowStart: number, colStart: number) {
      events.push({ device: this.device, what: 'dummyWeightWindow', args: [id, key, rowOffset, rows, sourceCols, rowStart, colStart] });
    }
    readWeight(): Float32Array {
      throw new Error('not recorded');
    }
    readActivation(): Float32Array {
      throw new Error('not recorded');
    }
    writeActivation() {}
    allocateKv(numPages: number, pageSize: number) {
      events.push({ device: this.device, what: 'allocateKv', args: [numPages, pageSize] });
    }
    memory() {
      return { freeBytes: freeBytes(this.device), totalBytes: 80 * 2 ** 30 };
    }
    forward(): Promise<NativeStepOutput> {
      throw new Error('a rank model is never stepped on its own');
    }
    description() {
      return `fake GPU ${this.device}`;
    }
    graphsCaptured() {
      return 0;
    }
    close() {
      events.push({ device: this.device, what: 'close' });
    }
  }
  class FakeGroup implements NativeNcclGroup {
    private readonly models: FakeModel[] = [];
    constructor(readonly devices: Int32Array) {
      events.push({ device: -1, what: 'group', args: [...devices] });
    }
    attach(model: NativeModel, rank: number) {
      const m = model as FakeModel;
      expect(m.device, `rank ${rank}'s model`).toBe(this.devices[rank]);
      this.models[rank] = m;
      events.push({ device: m.device, what: 'attach', args: [rank] });
    }
    async forward(batch: object): Promise<NativeStepOutput> {
      steps.push({ batch: batch as ForwardBatch, ranks: this.models.filter(Boolean).length });
      const S = (batch as ForwardBatch).kvLens.length;
      return { tokens: Int32Array.from({ length: S }, (_, s) => 100 + s), logprobs: null, topK: 0 };
    }
    description() {
      return `fake NCCL, ${this.devices.length} ranks`;
    }
    close() {
      events.push({ device: -1, what: 'group close' });
    }
  }
  const addon: CudaAddon = {
    probe: () => ({ count: 8, errorCode: 0, message: '', devices: [] }),
    CudaModel: FakeModel,
    NcclGroup: FakeGroup,
  };
  return { addon, events, configs, steps };
}

/** DummyWeights without device recipes, counting the bytes each tensor gives out. */
class CountingSource implements WeightSource {
  readonly random = true;
  readonly description = 'counted dummy weights';
  readonly bytesRead = new Map<string, number>();
  constructor(private readonly inner: DummyWeights) {}
  info(name: string) {
    return this.inner.info(name);
  }
  async read(name: string) {
    return this.count(name, await this.inner.read(name));
  }
  async readRange(name: string, byteOffset: number, byteLength: number) {
    return this.count(name, await this.inner.readRange(name, byteOffset, byteLength));
  }
  private count(name: string, bytes: Uint8Array) {
    this.bytesRead.set(name, (this.bytesRead.get(name) ?? 0) + bytes.byteLength);
    return bytes;
  }
  async close() {}
}

const budget: KvBudget = { memFractionStatic: 0.9, maxTotalTokens: null, minTokens: 16 };

describe('a tensor-parallel rank graph compiled for the cuda addon', () => {
  it('keeps the collectives, sends the partial logits as f32 and gives each rank its vocabulary start', () => {
    for (const shard of shardLlama(config, 2)) {
      const compiled = compileGraph(shard.graph, (name) => shardShape(shard.slices, name));
      const kinds = Array.from({ length: compiled.ops.length / 6 }, (_, i) => compiled.ops[i * 6]!);
      // After the embedding, after each layer's o_proj and down_proj; one gather of the logits.
      expect(kinds.filter((k) => k === opKind.all_reduce).length).toBe(1 + 2 * config.numLayers);
      expect(kinds.filter((k) => k === opKind.all_gather).length).toBe(1);
      const act = (name: string) => compiled.activations.find((a) => a.name === name)!;
      expect(act('logits_part')).toMatchObject({ dtype: DTYPE_F32, cols: shard.rank === 0 ? 501 : 500 });
      expect(act('x').dtype).toBe(DTYPE_F32);
      expect(act('o').dtype).toBe(DTYPE_BF16);
      const embedding = kinds.indexOf(opKind.embedding) * 6;
      expect(compiled.ops[embedding + 4], 'the embedding op carries the rank vocabStart').toBe(shard.rank === 0 ? 0 : 501);
    }
    // The plain graph's embedding reads the whole table.
    const plain = compileGraph(buildLlamaGraph(config), (name) => wholeWeights.info(name)?.shape);
    expect(plain.ops[4]).toBe(-1);
  });

  it('refuses an all_gather whose parts are not the even split the addon lays out', () => {
    const shard = shardLlama(config, 2)[0]!;
    const graph = { ...shard.graph, ops: shard.graph.ops.map((op) => (op.op === 'all_gather' ? { ...op, parts: [401, 600] } : op)) };
    expect(() => compileGraph(graph, (name) => shardShape(shard.slices, name))).toThrow(/must split its 1001 columns evenly over 2 ranks/);
  });
});

const wholeWeights = new DummyWeights(config, 0, 'bf16');

function shardShape(slices: ReturnType<typeof shardLlama>[number]['slices'], name: string): number[] | undefined {
  const shape = wholeWeights.info(name)?.shape;
  const slice = slices.get(name);
  if (!shape || !slice) return shape;
  const out = [...shape];
  out[slice.dim] = slice.end - slice.start;
  return out;
}

describe('CudaRanksBackend through a recording addon', () => {
  it('puts rank r on its GPU, joins the group before configuring, and generates only each rank slice of dummy weights', async () => {
    const { addon, events, configs } = recordingAddon(() => 40 * 2 ** 30);
    const backend = new CudaRanksBackend(addon, [2, 3], { graphCapture: false });
    await backend.load({ config, graph: buildLlamaGraph(config), weights: new DummyWeights(config, 5, 'bf16') });
    expect(events[0]).toEqual({ device: -1, what: 'group', args: [2, 3] });
    for (const [rank, device] of [2, 3].entries()) {
      const mine = events.filter((e) => e.device === device).map((e) => e.what);
      expect(mine.slice(0, 3), `GPU ${device}`).toEqual(['create', 'attach', 'configure']);
      expect(events.find((e) => e.device === device && e.what === 'create')!.args).toEqual([false]);
      expect(events.find((e) => e.device === device && e.what === 'attach')!.args).toEqual([rank]);
      expect(mine.filter((w) => w === 'setWeight'), 'no weight is read on the host').toEqual([]);
      const c = configs.get(device)!;
      expect({ heads: c.numHeads, kvHeads: c.numKvHeads, inter: c.intermediateSize, vocab: c.vocabSize }).toEqual({ heads: 2, kvHeads: 1, inter: 80, vocab: 1001 });
    }
    // Rank 1's down_proj: columns 80..159 of the [64, 160] tensor; its lm-head rows 501..1000.
    const windows = events.filter((e) => e.device === 3 && e.what === 'dummyWeightWindow').map((e) => e.args!.slice(3) as number[]);
    expect(windows).toContainEqual([64, 160, 0, 80]);
    expect(windows).toContainEqual([500, 64, 501, 0]);
    expect(windows.every((w) => w[0]! > 0)).toBe(true);
    // Norms are replicated whole.
    expect(events.filter((e) => e.device === 3 && e.what === 'dummyWeight').length).toBe(2 * config.numLayers + 1);
    expect(backend.description).toMatch(/^cuda x 2 tensor-parallel ranks on GPUs 2, 3 .*fake NCCL, 2 ranks; per rank: 2 attention heads, 1 KV heads, intermediate 80; rank 0: fake GPU 2/);
    await backend.close();
    expect(events.slice(-3).map((e) => e.what)).toEqual(['close', 'close', 'group close']);
  });

  it('reads each slice of a checkpoint once, on its rank only', async () => {
    const { addon, events } = recordingAddon(() => 40 * 2 ** 30);
    const source = new CountingSource(new DummyWeights(config, 5, 'bf16'));
    const backend = new CudaRanksBackend(addon, [0, 1, 2, 3]);
    await backend.load({ config, graph: buildLlamaGraph(config), weights: source });
    const shards = shardLlama(config, 4);
    for (const name of ['lm_head.weight', 'model.layers.0.self_attn.o_proj.weight', 'model.layers.1.mlp.gate_proj.weight', 'model.embed_tokens.weight']) {
      const info = source.info(name)!;
      const whole = info.shape.reduce((a, b) => a * b, 1) * bytesPerElement[info.dtype];
      expect(source.bytesRead.get(name), `${name}: every slice read once, no more`).toBe(whole);
    }
    // KV heads replicated at tp 4 (2 KV heads): k_proj is read twice over, once per pair of ranks.
    const k = source.info('model.layers.0.self_attn.k_proj.weight')!;
    expect(source.bytesRead.get('model.layers.0.self_attn.k_proj.weight')).toBe(2 * k.shape[0]! * k.shape[1]! * 2);
    // What each rank got is what its slices hold.
    for (const shard of shards) {
      const device = shard.rank;
      const sent = events.filter((e) => e.device === device && e.what === 'setWeight').reduce((a, e) => a + (e.args![1] as number), 0);
      let expected = 0;
      const names = new Set(shard.graph.ops.flatMap((op) => ('weight' in op ? [op.weight] : 'table' in op ? [op.table] : [])));
      for (const name of names) expected += shardShape(shard.slices, name)!.reduce((a, b) => a * b, 1) * 2;
      expect(sent, `rank ${shard.rank}`).toBe(expected);
    }
    await backend.close();
  });

  it('sizes the KV pool by the GPU with the least room, and steps every rank through the group once', async () => {
    const free = (device: number) => (device === 1 ? 20 : 30) * 2 ** 30;
    const { addon, events, steps } = recordingAddon(free);
    const backend = new CudaRanksBackend(addon, [0, 1]);
    await backend.load({ config, graph: buildLlamaGraph(config), weights: new DummyWeights(config, 5, 'bf16') });
    const perRank = kvBytesPerToken(shardLlama(config, 2)[0]!.config, 2);
    expect(backend.kvCapacity(budget)).toBe(Math.floor((20 * 2 ** 30 - 80 * 2 ** 30 * (1 - budget.memFractionStatic)) / perRank));
    expect(backend.kvCapacity({ ...budget, maxTotalTokens: 4096 })).toBe(4096);
    await backend.allocateKvCache({ numPages: 16, pageSize: 4 });
    expect(events.filter((e) => e.what === 'allocateKv').map((e) => [e.device, ...e.args!])).toEqual([
      [0, 16, 4],
      [1, 16, 4],
    ]);
    const batch = pagedBatch(
      [
        { tokens: [1, 2, 3], cached: 0, pages: [0] },
        { tokens: [7], cached: 4, pages: [1, 2] },
      ],
      4,
      greedySampling(2),
    );
    const out = await backend.forward(batch);
    expect([...out.tokens]).toEqual([100, 101]);
    expect(steps).toHaveLength(1);
    expect(steps[0]!.ranks).toBe(2);
    expect(steps[0]!.batch.tokenIds).toBe(batch.tokenIds);
    // A bad batch is refused before any rank runs.
    await expect(backend.forward({ ...batch, kvLens: Int32Array.of(3, 99) })).rejects.toThrow();
    expect(steps).toHaveLength(1);
    await expect(backend.forward({ ...batch, promptLogprobs: { targets: new Int32Array(4).fill(-1), topK: 0 } })).rejects.toThrow(/prompt log-probs are not available on tensor-parallel cuda ranks/);
    expect(backend.supportsPromptLogprobs).toBe(false);
    await backend.close();
  });

  it('says the addon must be rebuilt when it has no NcclGroup', () => {
    const { addon } = recordingAddon(() => 0);
    expect(() => new CudaRanksBackend({ ...addon, NcclGroup: undefined }, [0, 1])).toThrow(/predates tensor-parallel ranks.*build-native/);
  });
});
