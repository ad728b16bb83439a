import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { BlockArena, BlockPool, SegmentArenas, blockBytes, sharedBlocks } from '../../backends/cpu/block-pool.js';
import { create } from '../../backends/cpu/index.js';
import type { QuantizedBlocks } from '../../backends/cpu/ggml-blocks.js';
import { quantizeMatrix } from '../../backends/cpu/linear-weights.js';
import { DataType, externalInitializerBytes, OnnxGraphBuilder } from '../../backends/cpu/onnx-builder.js';
import { buildSegmentModel } from '../../backends/cpu/segment-graph.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { buildLlamaGraph } from '../../src/model/graph.js';
import { presets } from '../../src/model/presets.js';
import { SingleSequence } from '../support/single-sequence.js';

// Loading without copies: the cpu backend's weights go to ORT as external data pointing into the
// buffers the block pool wrote them in, never serialized into the model's protobuf bytes.

const { onnx } = onnxProto as unknown as { onnx: typeof OnnxTypes };
const External = onnx.TensorProto.DataLocation.EXTERNAL;

/** Big enough that every projection passes externalInitializerBytes, one layer, a small vocabulary. */
const config: LlamaConfig = { ...presets.tiny!, hiddenSize: 256, intermediateSize: 512, numLayers: 1, numHeads: 4, numKvHeads: 2, headDim: 64, vocabSize: 512, tieWordEmbeddings: false, dtype: 'bf16' };

function externalOf(tensor: OnnxTypes.ITensorProto): Record<string, string> {
  return Object.fromEntries((tensor.externalData ?? []).map((e) => [e.key!, e.value!]));
}

describe('cpu backend weights as ORT external data', () => {
  it('keeps a large initializer in its own buffer (location, offset, length) and serializes small ones', () => {
    const b = new OnnxGraphBuilder();
    const buffer = new ArrayBuffer(2 * externalInitializerBytes + 64);
    const first = new Uint8Array(buffer, 0, externalInitializerBytes);
    const second = new Uint8Array(buffer, externalInitializerBytes + 64, externalInitializerBytes);
    b.initializer('first', DataType.UINT8, [first.length], first);
    b.initializer('second', DataType.UINT8, [second.length], second);
    b.initializer('small', DataType.FLOAT, [4], Float32Array.of(1, 2, 3, 4));
    const { bytes, externalData } = b.encode();
    expect(externalData).toHaveLength(1);
    expect(externalData[0]!.data.buffer).toBe(buffer);
    const tensors = onnx.ModelProto.decode(bytes).graph!.initializer!;
    const [a, c, small] = tensors;
    expect(a!.dataLocation).toBe(External);
    expect(externalOf(a!)).toEqual({ location: externalData[0]!.path, offset: '0', length: String(externalInitializerBytes) });
    expect(externalOf(c!)).toEqual({ location: externalData[0]!.path, offset: String(externalInitializerBytes + 64), length: String(externalInitializerBytes) });
    expect(small!.dataLocation ?? 0).toBe(0);
    expect(Array.from(new Float32Array(new Uint8Array(small!.rawData!).buffer))).toEqual([1, 2, 3, 4]);
    expect(bytes.byteLength).toBeLessThan(1024);
  });

  it('runs in ORT with the weights read from external data (a Gemm equals x @ W^T)', async () => {
    const rows = 96;
    const cols = 256; // 96 KiB of f32 weights: external
    const weights = Float32Array.from({ length: rows * cols }, (_, i) => ((i * 7919) % 201) / 100 - 1);
    const x = Float32Array.from({ length: 2 * cols }, (_, i) => ((i * 31) % 17) / 8 - 1);
    const b = new OnnxGraphBuilder();
    const input = b.input('x', DataType.FLOAT, [2, cols]);
    b.node('Gemm', [input, b.initializer('w', DataType.FLOAT, [rows, cols], weights)], { transB: 1 }, ['y']);
    b.output('y', DataType.FLOAT, [2, rows]);
    const { bytes, externalData } = b.encode();
    expect(externalData).toHaveLength(1);
    const session = await ort.InferenceSession.create(bytes, { externalData, logSeverityLevel: 3 });
    const y = (await session.run({ x: new ort.Tensor('float32', x, [2, cols]) })).y!.data as Float32Array;
    for (let r = 0; r < 2; r++) {
      for (let n = 0; n < rows; n++) {
        let sum = 0;
        for (let k = 0; k < cols; k++) sum += x[r * cols + k]! * weights[n * cols + k]!;
        expect(y[r * rows + n]).toBeCloseTo(sum, 3);
      }
    }
    await session.release();
  });

  it('quantizes stacked matrices side by side into one shared buffer, equal to quantizing each alone', async () => {
    const weights = new DummyWeights(config, 5, 'bf16');
    const names = ['q_proj', 'k_proj', 'v_proj'].map((p) => `model.layers.0.self_attn.${p}.weight`);
    const shapes = names.map((n) => weights.info(n)!.shape as [number, number]);
    const cols = shapes[0]![1];
    const into = sharedBlocks(shapes.reduce((n, [rows]) => n + rows, 0), cols);
    const pool = new BlockPool(2);
    try {
      let row = 0;
      for (const [i, name] of names.entries()) {
        const rows = shapes[i]![0];
        const at = { codes: into.codes.subarray(row * cols), scales: into.scales.subarray(row * (cols / 32)) };
        const written = await pool.quantize('q8_0', rows, cols, 'bf16', { recipe: weights.deviceRecipe(name)! }, at);
        expect(written.codes.buffer).toBe(into.codes.buffer);
        const alone = quantizeMatrix({ bytes: await weights.read(name), dtype: 'bf16', rows, cols }, 'q8_0');
        expect(Buffer.from(into.codes.subarray(row * cols, (row + rows) * cols)).equals(Buffer.from(alone.codes))).toBe(true);
        expect(Array.from(into.scales.subarray((row * cols) / 32, ((row + rows) * cols) / 32))).toEqual(Array.from(alone.scales));
        row += rows;
      }
    } finally {
      await pool.close();
    }
  });

  it('builds a q8 segment whose MatMulNBits weights are the very buffers the blocks were made in (no second copy)', async () => {
    const graph = buildLlamaGraph(config);
    const weights = new DummyWeights(config, 0, 'bf16');
    const made: QuantizedBlocks[] = [];
    const blocksOf = async (names: string[]) => {
      const shapes = names.map((n) => weights.info(n)!.shape as [number, number]);
      const blocks = sharedBlocks(shapes.reduce((n, [rows]) => n + rows, 0), shapes[0]![1]);
      made.push(blocks);
      return blocks;
    };
    const whole = { startOp: 1, endOp: graph.ops.length, firstLayer: 0, endLayer: 1, withHead: true };
    const { bytes, externalData } = await buildSegmentModel(config, graph, weights, whole, 'q8', blocksOf);
    const model = onnx.ModelProto.decode(bytes);
    const initializers = new Map(model.graph!.initializer!.map((t) => [t.name!, t]));
    const matmuls = model.graph!.node!.filter((n) => n.opType === 'MatMulNBits');
    expect(matmuls).toHaveLength(5); // qkv, o, gate_up, down, the lm-head
    expect(made).toHaveLength(5);
    for (const [i, node] of matmuls.entries()) {
      const [, codes, scales] = node.input!.map((name) => initializers.get(name)!);
      for (const [tensor, view] of [[codes!, made[i]!.codes], [scales!, made[i]!.scales]] as const) {
        // Scales of the smaller matrices fall under the threshold and are serialized (a few KiB).
        if (view.byteLength < externalInitializerBytes) {
          expect(tensor.rawData!.byteLength).toBe(view.byteLength);
          continue;
        }
        expect(tensor.dataLocation).toBe(External);
        const file = externalData.find((f) => f.path === externalOf(tensor).location)!;
        expect(file.data.buffer).toBe(view.buffer);
        expect(Number(externalOf(tensor).offset)).toBe(view.byteOffset);
        expect(Number(externalOf(tensor).length)).toBe(view.byteLength);
      }
    }
    const weightBytes = made.reduce((n, m) => n + m.codes.byteLength + m.scales.byteLength, 0);
    // Only the small scales and zero points are serialized here (all of them at an 8B model's sizes).
    expect(bytes.byteLength).toBeLessThan(weightBytes / 4);
  });

  it('hands out one segment\'s blocks at a time from one shared buffer, reused after reset', () => {
    const arena = new BlockArena(new SharedArrayBuffer(2 * (64 * 32 + 64 * 4)));
    const a = arena.take(64, 32);
    const b = arena.take(64, 32);
    expect(b.codes.buffer).toBe(a.codes.buffer);
    expect(b.codes.byteOffset).toBe(a.scales.byteOffset + a.scales.byteLength);
    expect(arena.take(1, 32).codes.buffer).not.toBe(a.codes.buffer); // full: fresh memory
    arena.reset();
    const c = arena.take(64, 32);
    expect(c.codes.buffer).toBe(a.codes.buffer);
    expect(c.codes.byteOffset).toBe(0);
  });

  it('alternates two halves of one buffer between segments; a larger last segment takes the whole buffer, first and alone', () => {
    const arenas = new SegmentArenas([blockBytes(64, 32), blockBytes(32, 32), blockBytes(64, 32), blockBytes(160, 32)]);
    const region = (index: number) => {
      const blocks = arenas.arenaFor(index).take(1, 32);
      arenas.arenaFor(index).reset();
      return { buffer: blocks.codes.buffer, offset: blocks.codes.byteOffset };
    };
    const [first, second, third, last] = [0, 1, 2, 3].map(region);
    expect(second!.buffer).toBe(first!.buffer);
    expect(second!.offset).toBe(blockBytes(64, 32)); // the second half starts after the largest of the other segments
    expect(third).toEqual(first);
    expect(last).toEqual({ buffer: first!.buffer, offset: 0 });
    expect(first!.buffer.byteLength).toBe(blockBytes(160, 32)); // max(two halves, the last segment)
    expect(arenas.order()).toEqual([3, 0, 1, 2]);
    expect([arenas.apart(0, 1), arenas.apart(1, 2), arenas.apart(0, 2), arenas.apart(3, 0), arenas.apart(2, 3)]).toEqual([true, true, false, false, false]);
    // The last segment's blocks fill the whole buffer without spilling into fresh memory.
    expect(arenas.arenaFor(3).take(160, 32).codes.buffer).toBe(first!.buffer);
    const small = new SegmentArenas([blockBytes(64, 32), blockBytes(64, 32)]);
    expect(small.order()).toEqual([0, 1]);
    expect(small.apart(0, 1)).toBe(true);
    expect(small.arenaFor(1).take(64, 32).codes.byteOffset).toBe(blockBytes(64, 32));
  });

  it('loads q8 layer by layer through the reused buffer with the same outputs as one segment', async () => {
    const layered = { ...config, numLayers: 3 };
    const run = async (segmentBytes: number) => {
      const cpu = await create({ threads: 2, segmentBytes, progress: false });
      await cpu.load({ config: layered, graph: buildLlamaGraph(layered), weights: new DummyWeights(layered, 4, 'bf16') });
      await cpu.allocateKvCache({ numPages: 16, pageSize: 1 });
      const out = await new SingleSequence(cpu, 3).greedy([11, 12, 13, 14], 6);
      await cpu.close();
      return out;
    };
    const whole = await run(2 ** 30);
    const perLayer = await run(1); // four sessions, each made from blocks that overwrite the previous one's
    expect(perLayer.tokens).toEqual(whole.tokens);
    expect(perLayer.logprobs).toEqual(whole.logprobs);
  });
});
