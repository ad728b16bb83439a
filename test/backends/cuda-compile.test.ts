import { describe, expect, it } from 'vitest';
import { compileGraph, DTYPE_BF16, DTYPE_F32, nativeConfig, opKind } from '../../backends/cuda/compile.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { buildLlamaGraph, type LlamaGraph } from '../../src/model/graph.js';
import { presets } from '../../src/model/presets.js';
import { ropeInverseFrequencies } from '../../src/model/rope.js';

function compilePreset(name: string) {
  const config = presets[name]!;
  const graph = buildLlamaGraph(config);
  const weights = new DummyWeights(config);
  return { config, graph, compiled: compileGraph(graph, (n) => weights.info(n)?.shape) };
}

describe('cuda graph compilation (no GPU needed)', () => {
  it('keeps the residual stream and logits in f32 and everything else in bf16', () => {
    const { compiled } = compilePreset('small');
    const dtype = Object.fromEntries(compiled.activations.map((a) => [a.name, a.dtype]));
    expect(dtype.x).toBe(DTYPE_F32);
    expect(dtype.last).toBe(DTYPE_F32);
    expect(dtype.logits).toBe(DTYPE_F32);
    for (const name of ['h', 'q', 'k', 'v', 'attn', 'o', 'gate', 'up', 'act', 'mlp', 'last_norm']) expect(dtype[name]).toBe(DTYPE_BF16);
  });

  it('encodes every op with its buffers, weights and layer', () => {
    const { graph, compiled } = compilePreset('llama-3.2-1b');
    expect(compiled.ops.length).toBe(graph.ops.length * 6);
    const bufferId = (n: string) => compiled.activations.findIndex((a) => a.name === n);
    const weightId = (n: string) => compiled.weights.findIndex((w) => w.name === n);
    graph.ops.forEach((op, i) => {
      const row = Array.from(compiled.ops.subarray(i * 6, i * 6 + 6));
      expect(row[0]).toBe(opKind[op.op]);
      if (op.op === 'attention') expect(row).toEqual([opKind.attention, bufferId(op.q), bufferId(op.k), bufferId(op.out), bufferId(op.v), op.layer]);
      if (op.op === 'linear') expect(row).toEqual([opKind.linear, bufferId(op.x), weightId(op.weight), bufferId(op.out), -1, -1]);
      if (op.op === 'add_rmsnorm') expect(row[4]).toBe(bufferId(op.residual));
    });
    // Tied embeddings: the lm-head reuses the embedding table, listed once.
    expect(compiled.weights.filter((w) => w.name === 'model.embed_tokens.weight')).toHaveLength(1);
  });

  it('lists each weight once with its [rows, cols] shape (norms as [n, 1])', () => {
    const { config, compiled } = compilePreset('llama-3.1-8b');
    const byName = Object.fromEntries(compiled.weights.map((w) => [w.name, [w.rows, w.cols]]));
    expect(byName['model.layers.3.mlp.down_proj.weight']).toEqual([config.hiddenSize, config.intermediateSize]);
    expect(byName['model.layers.0.self_attn.k_proj.weight']).toEqual([config.numKvHeads * config.headDim, config.hiddenSize]);
    expect(byName['model.norm.weight']).toEqual([config.hiddenSize, 1]);
    expect(byName['lm_head.weight']).toEqual([config.vocabSize, config.hiddenSize]);
    expect(compiled.weights).toHaveLength(2 + 9 * config.numLayers + 1);
  });

  it('builds the configure() tables the addon parses', () => {
    const { config, compiled } = compilePreset('tiny');
    const native = nativeConfig(config, compiled, ropeInverseFrequencies(config));
    expect(native.invFreq).toHaveLength(config.headDim / 2);
    expect(native.activations).toHaveLength(compiled.activations.length * 5);
    expect(native.weights).toHaveLength(compiled.weights.length * 2);
    const logits = compiled.activations.findIndex((a) => a.name === 'logits');
    expect(Array.from(native.activations.subarray(logits * 5, logits * 5 + 5))).toEqual([0, config.vocabSize, DTYPE_F32, -1, 0]);
  });

  it('fuses q/k/v and gate/up into one GEMM each: weights stacked by rows, outputs as column views', () => {
    const config = presets['llama-3.1-8b']!;
    const graph = buildLlamaGraph(config);
    const weights = new DummyWeights(config);
    const shape = (n: string) => weights.info(n)?.shape;
    const plain = compileGraph(graph, shape);
    const fused = compileGraph(graph, shape, { fuseProjections: true });
    // Per layer: three linears become one, two become one.
    expect(fused.ops.length / 6).toBe(graph.ops.length - 3 * config.numLayers);
    const act = (name: string) => fused.activations.find((a) => a.name === name)!;
    const qkv = fused.activations.findIndex((a) => a.name === 'q+k+v');
    const [qCols, kvCols] = [config.numHeads * config.headDim, config.numKvHeads * config.headDim];
    expect(act('q+k+v').cols).toBe(qCols + 2 * kvCols);
    expect([act('q'), act('k'), act('v')].map((a) => [a.viewOf, a.colOffset])).toEqual([[qkv, 0], [qkv, qCols], [qkv, qCols + kvCols]]);
    expect(act('gate').colOffset).toBe(0);
    expect(act('up').colOffset).toBe(config.intermediateSize);
    const w = fused.weights.find((x) => x.name === 'fused(model.layers.5.mlp.gate_proj.weight+model.layers.5.mlp.up_proj.weight)')!;
    expect([w.rows, w.cols]).toEqual([2 * config.intermediateSize, config.hiddenSize]);
    expect(w.parts).toEqual([
      { name: 'model.layers.5.mlp.gate_proj.weight', rows: config.intermediateSize },
      { name: 'model.layers.5.mlp.up_proj.weight', rows: config.intermediateSize },
    ]);
    // Every checkpoint tensor is still loaded exactly once, whole or as a part.
    const loaded = fused.weights.flatMap((x) => (x.parts ?? [x]).map((p) => p.name)).sort();
    expect(loaded).toEqual(plain.weights.map((x) => x.name).sort());
    expect(plain.activations.every((a) => a.viewOf === -1)).toBe(true);
  });

  it('compiles unfused when a view would reach an op that cannot take a row stride', () => {
    const { graph } = compilePreset('tiny');
    const weights = new DummyWeights(presets.tiny!);
    const shape = (n: string) => weights.info(n)?.shape;
    const readsQ: LlamaGraph = { ...graph, ops: [...graph.ops.slice(0, -1), { op: 'rmsnorm', x: 'q', weight: 'model.norm.weight', out: 'h' }, graph.ops.at(-1)!] };
    const compiled = compileGraph(readsQ, shape, { fuseProjections: true });
    expect(compiled.activations.some((a) => a.viewOf >= 0)).toBe(false);
    expect(compiled.ops.length / 6).toBe(readsQ.ops.length);
  });

  it('rejects graphs the kernels cannot run, naming the problem', () => {
    const { graph } = compilePreset('tiny');
    const weights = new DummyWeights(presets.tiny!);
    const shape = (n: string) => weights.info(n)?.shape;
    const badAdd: LlamaGraph = { ...graph, ops: [...graph.ops, { op: 'add', x: 'h', y: 'mlp' }] };
    expect(() => compileGraph(badAdd, shape)).toThrow(/accumulates into "h"/);
    const unknown: LlamaGraph = { ...graph, ops: [{ op: 'silu_mul', gate: 'gate', up: 'nope', out: 'act' }] };
    expect(() => compileGraph(unknown, shape)).toThrow(/unknown activation "nope"/);
    const missing: LlamaGraph = { ...graph, ops: [{ op: 'linear', x: 'h', weight: 'no.such.weight', out: 'q' }] };
    expect(() => compileGraph(missing, shape)).toThrow(/no\.such\.weight/);
  });
});
