import type { LlamaConfig } from './config.js';
import { buildLlamaGraph, type Activation, type GraphOp, type LlamaGraph } from './graph.js';
import { UserError } from '../errors.js';

/**
 * Tensor parallelism as a pass over the plain Llama graph (as gpt-fast and nano-vllm do it):
 * each rank gets its own graph, config and weight slices, and the backends that run a rank's
 * graph need only two collectives (all_reduce, all_gather) beside their usual ops.
 *
 * - q/k/v and gate/up are column-parallel: a rank holds a band of output rows of the HF weight.
 * - o and down are row-parallel: a rank holds a band of input columns; an all_reduce sums the
 *   partial outputs.
 * - Attention heads split evenly; KV heads split too, or, with fewer KV heads than ranks, each
 *   rank holds the one KV head its query heads read (replicated over tp / numKvHeads ranks).
 * - The embedding table and the lm-head are split by vocabulary rows: the embedding writes zeros
 *   for ids outside the rank's range and an all_reduce completes it; the lm-head's partial
 *   logits are all_gathered into the full row before sampling, so every sampler stays as it is.
 */

/** A band of a 2-D HF weight [out, in]: rows (dim 0) or columns (dim 1) [start, end). */
export interface TensorSlice {
  dim: 0 | 1;
  start: number;
  end: number;
}

export interface RankShard {
  rank: number;
  tpSize: number;
  /** The rank's shapes: local head, KV head and intermediate counts; vocabSize stays the full vocabulary (the sampler's row). */
  config: LlamaConfig;
  graph: LlamaGraph;
  /** Weights a rank holds a slice of; any weight not listed is replicated whole. */
  slices: Map<string, TensorSlice>;
}

/** [start, end) of part `index` of `n` split in `parts` (the first n % parts parts one longer). */
export function splitRange(n: number, parts: number, index: number): [number, number] {
  const base = Math.floor(n / parts);
  const extra = n % parts;
  const start = index * base + Math.min(index, extra);
  return [start, start + base + (index < extra ? 1 : 0)];
}

/** Why this config cannot be split over tpSize ranks; null when it can. */
export function tpUnsupportedReason(config: LlamaConfig, tpSize: number): string | null {
  const { numHeads, numKvHeads } = config;
  if (numHeads % tpSize !== 0) return `${numHeads} attention heads do not split evenly over ${tpSize} ranks`;
  if (numKvHeads >= tpSize ? numKvHeads % tpSize !== 0 : tpSize % numKvHeads !== 0) {
    return `${numKvHeads} KV heads neither split evenly over ${tpSize} ranks nor replicate evenly on them`;
  }
  if (config.intermediateSize < tpSize || config.vocabSize < tpSize) return `the model is too small for ${tpSize} ranks`;
  return null;
}

export function shardLlama(config: LlamaConfig, tpSize: number): RankShard[] {
  if (!Number.isInteger(tpSize) || tpSize < 1) throw new UserError(`--tp-size ${tpSize}: give a positive whole number of ranks`);
  const reason = tpUnsupportedReason(config, tpSize);
  if (reason) throw new UserError(`--tp-size ${tpSize}: ${reason}`);
  return Array.from({ length: tpSize }, (_, rank) => shardRank(config, tpSize, rank));
}

const columnParallel = ['self_attn.q_proj.weight', 'self_attn.k_proj.weight', 'self_attn.v_proj.weight', 'mlp.gate_proj.weight', 'mlp.up_proj.weight'];
const rowParallel = ['self_attn.o_proj.weight', 'mlp.down_proj.weight'];

function shardRank(config: LlamaConfig, tpSize: number, rank: number): RankShard {
  const { numHeads, numKvHeads, headDim: hd } = config;
  const plain = buildLlamaGraph(config);
  if (tpSize === 1) return { rank, tpSize, config, graph: plain, slices: new Map() };

  const localHeads = numHeads / tpSize;
  const localKvHeads = Math.max(1, numKvHeads / tpSize);
  const firstKvHead = numKvHeads >= tpSize ? rank * localKvHeads : Math.floor((rank * numKvHeads) / tpSize);
  const [interStart, interEnd] = splitRange(config.intermediateSize, tpSize, rank);
  const [vocabStart, vocabEnd] = splitRange(config.vocabSize, tpSize, rank);
  const vocabParts = Array.from({ length: tpSize }, (_, r) => {
    const [s, e] = splitRange(config.vocabSize, tpSize, r);
    return e - s;
  });

  const rowsOf = (suffix: string): [number, number] => {
    if (suffix.includes('q_proj')) return [rank * localHeads * hd, (rank + 1) * localHeads * hd];
    if (suffix.includes('k_proj') || suffix.includes('v_proj')) return [firstKvHead * hd, (firstKvHead + localKvHeads) * hd];
    return [interStart, interEnd];
  };
  const slices = new Map<string, TensorSlice>();
  const ops: GraphOp[] = [];
  const layerStart: number[] = [];
  let nextLayer = 0;
  for (let i = 0; i < plain.ops.length; i++) {
    if (plain.layerStart[nextLayer] === i) {
      layerStart.push(ops.length);
      nextLayer++;
    }
    const op = plain.ops[i]!;
    if (op.op === 'embedding') {
      slices.set(op.table, { dim: 0, start: vocabStart, end: vocabEnd });
      ops.push({ ...op, vocabStart }, { op: 'all_reduce', x: op.out });
    } else if (op.op === 'linear' && op.weight === plain.lmHead) {
      slices.set(op.weight, { dim: 0, start: vocabStart, end: vocabEnd });
      ops.push({ ...op, out: 'logits_part' }, { op: 'all_gather', x: 'logits_part', out: op.out, parts: vocabParts });
    } else if (op.op === 'linear' && columnParallel.some((s) => op.weight.endsWith(s))) {
      const [start, end] = rowsOf(op.weight);
      slices.set(op.weight, { dim: 0, start, end });
      ops.push(op);
    } else if (op.op === 'linear' && rowParallel.some((s) => op.weight.endsWith(s))) {
      const [start, end] = op.weight.endsWith('o_proj.weight') ? [rank * localHeads * hd, (rank + 1) * localHeads * hd] : [interStart, interEnd];
      slices.set(op.weight, { dim: 1, start, end });
      ops.push(op, { op: 'all_reduce', x: op.out });
    } else {
      ops.push(op);
    }
  }
  while (nextLayer < plain.layerStart.length) {
    layerStart.push(ops.length);
    nextLayer++;
  }

  const localInter = interEnd - interStart;
  const activations: Record<string, Activation> = {
    ...plain.activations,
    q: { rows: 'tokens', cols: localHeads * hd },
    k: { rows: 'tokens', cols: localKvHeads * hd },
    v: { rows: 'tokens', cols: localKvHeads * hd },
    attn: { rows: 'tokens', cols: localHeads * hd },
    gate: { rows: 'tokens', cols: localInter },
    up: { rows: 'tokens', cols: localInter },
    act: { rows: 'tokens', cols: localInter },
    logits_part: { rows: 'seqs', cols: vocabEnd - vocabStart },
  };
  const rankConfig: LlamaConfig = { ...config, numHeads: localHeads, numKvHeads: localKvHeads, intermediateSize: localInter };
  return { rank, tpSize, config: rankConfig, graph: { activations, ops, lmHead: plain.lmHead, layerStart }, slices };
}
