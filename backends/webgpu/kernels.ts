import { foldWorkgroups, type GpuContext } from './gpu.js';
import type { DeviceMatrix } from './weights.js';
import { BackendError } from '../../src/errors.js';

/** The per-step values the shaders read from the shared `step` uniform (shaders/common.wgsl). */
export interface StepShape {
  numTokens: number;
  numSeqs: number;
  /** Attention splits over the KV length (1: no split). */
  numSplits: number;
  splitSize: number;
  numPenalties: number;
  /** Top log-probs columns in the output (the largest k asked). */
  topLogprobs: number;
  /** Sequences with an allowed-token mask this step (structured output); 0 or absent: none. */
  maskedSeqs?: number;
  /** logit_bias / min_tokens entries this step; 0 or absent: none. */
  numBiases?: number;
}

export const stepUniformBytes = 32;

export function encodeStep(shape: StepShape): Uint32Array {
  return Uint32Array.of(shape.numTokens, shape.numSeqs, shape.numSplits, shape.splitSize, shape.numPenalties, shape.topLogprobs, shape.maskedSeqs ?? 0, shape.numBiases ?? 0);
}

export type Rows = 'tokens' | 'seqs';
const rowsKind = (rows: Rows) => (rows === 'tokens' ? 0 : 1);
const rowCount = (shape: StepShape, rows: Rows) => (rows === 'tokens' ? shape.numTokens : shape.numSeqs);

/** One compute dispatch with everything bound; `workgroups` sizes it for a step (null: skip). */
export interface Dispatch {
  label: string;
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  workgroups(shape: StepShape): [number, number] | null;
}

/** Decode-sized batches use the matrix-vector kernel; larger ones the tiled matmul. */
export const MATVEC_MAX_ROWS = 8;
const MATMUL_TILE = 64;

function elementwise(count: number, perWorkgroup = 256): [number, number] | null {
  return count > 0 ? foldWorkgroups(Math.ceil(count / perWorkgroup)) : null;
}

function dispatch(ctx: GpuContext, label: string, shader: string, buffers: GPUBuffer[], workgroups: Dispatch['workgroups'], constants?: Record<string, number>): Dispatch {
  const pipeline = ctx.pipeline(shader, constants);
  return { label, pipeline, bindGroup: ctx.bindGroup(pipeline, buffers, label), workgroups };
}

export function embedding(ctx: GpuContext, step: GPUBuffer, table: DeviceMatrix, tokenIds: GPUBuffer, out: GPUBuffer): Dispatch[] {
  return table.chunks.map((chunk) => {
    const params = ctx.uniform('embedding params', [table.cols, chunk.rowStart, chunk.rowCount, 0]);
    return dispatch(ctx, 'embedding', 'embedding', [step, params, chunk.buffer, tokenIds, out], (s) => elementwise(s.numTokens * table.cols));
  });
}

export interface RmsnormArgs {
  x: GPUBuffer;
  /** Added into x first (x is updated in place); null for a plain rmsnorm. */
  residual: GPUBuffer | null;
  weight: GPUBuffer;
  out: GPUBuffer;
  cols: number;
  rows: Rows;
  eps: number;
  /** Bound in place of the residual when there is none. */
  placeholder: GPUBuffer;
}

export function rmsnorm(ctx: GpuContext, step: GPUBuffer, a: RmsnormArgs): Dispatch {
  const params = ctx.uniform('rmsnorm params', [a.cols, rowsKind(a.rows), a.eps, 0], [2]);
  const label = a.residual ? 'add_rmsnorm' : 'rmsnorm';
  return dispatch(
    ctx,
    label,
    'rmsnorm',
    [step, params, a.x, a.residual ?? a.placeholder, a.weight, a.out],
    (s) => (rowCount(s, a.rows) > 0 ? foldWorkgroups(rowCount(s, a.rows)) : null),
    { HAS_RESIDUAL: a.residual ? 1 : 0 },
  );
}

export function add(ctx: GpuContext, step: GPUBuffer, x: GPUBuffer, y: GPUBuffer, cols: number, rows: Rows): Dispatch {
  const params = ctx.uniform('add params', [cols, rowsKind(rows), 0, 0]);
  return dispatch(ctx, 'add', 'add', [step, params, x, y], (s) => elementwise(rowCount(s, rows) * cols));
}

export function siluMul(ctx: GpuContext, step: GPUBuffer, gate: GPUBuffer, up: GPUBuffer, out: GPUBuffer, cols: number, rows: Rows): Dispatch {
  const params = ctx.uniform('silu_mul params', [cols, rowsKind(rows), 0, 0]);
  return dispatch(ctx, 'silu_mul', 'silu_mul', [step, params, gate, up, out], (s) => elementwise(rowCount(s, rows) * cols));
}

export function gatherLast(ctx: GpuContext, step: GPUBuffer, x: GPUBuffer, meta: GPUBuffer, out: GPUBuffer, cols: number): Dispatch {
  const params = ctx.uniform('gather_last params', [cols, 0, 0, 0]);
  return dispatch(ctx, 'gather_last', 'gather_last', [step, params, x, meta, out], (s) => elementwise(s.numSeqs * cols));
}

/**
 * out = x @ weight^T, one pair of dispatches per weight chunk (each writes its own columns):
 * the matrix-vector kernel for up to MATVEC_MAX_ROWS rows, the tiled one above.
 */
export function linear(ctx: GpuContext, step: GPUBuffer, x: GPUBuffer, weight: DeviceMatrix, out: GPUBuffer, rows: Rows, label = 'linear'): Dispatch[] {
  const result: Dispatch[] = [];
  const threadsPerOutput = matvecThreadsPerOutput(ctx, weight.cols);
  const outputsPerWorkgroup = 256 / threadsPerOutput;
  for (const chunk of weight.chunks) {
    const params = ctx.uniform('linear params', [weight.cols, weight.rows, chunk.rowStart, chunk.rowCount, rowsKind(rows), 0, 0, 0]);
    const buffers = [step, params, x, chunk.buffer, out];
    result.push(
      dispatch(
        ctx,
        label,
        weight.cols % 4 === 0 ? 'matvec4' : 'matvec',
        buffers,
        (s) => {
          const n = rowCount(s, rows);
          return n > 0 && n <= MATVEC_MAX_ROWS ? foldWorkgroups(Math.ceil(chunk.rowCount / outputsPerWorkgroup)) : null;
        },
        { THREADS_PER_OUTPUT: threadsPerOutput },
      ),
      dispatch(ctx, label, 'matmul', buffers, (s) => {
        const n = rowCount(s, rows);
        return n > MATVEC_MAX_ROWS ? [Math.ceil(chunk.rowCount / MATMUL_TILE), Math.ceil(n / MATMUL_TILE)] : null;
      }),
    );
  }
  return result;
}

/**
 * Threads sharing one output feature in the matrix-vector kernel. A CPU-emulated adapter pays
 * per workgroup and gains nothing from coalescing: one thread per feature. A GPU wants
 * coalesced reads of each weight row: about one thread per 32 inputs, up to a full workgroup.
 */
export function matvecThreadsPerOutput(ctx: GpuContext, inFeatures: number): number {
  if (ctx.isSoftware) return 1;
  let threads = 1;
  while (threads < 256 && threads * 32 < inFeatures) threads *= 2;
  return threads;
}

export interface HeadShape {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
}

export function rope(ctx: GpuContext, step: GPUBuffer, q: GPUBuffer, k: GPUBuffer, positions: GPUBuffer, invFreq: GPUBuffer, h: HeadShape): Dispatch {
  const params = ctx.uniform('rope params', [h.numHeads, h.numKvHeads, h.headDim, 0]);
  return dispatch(ctx, 'rope', 'rope', [step, params, q, k, positions, invFreq], (s) =>
    elementwise(s.numTokens * (h.numHeads + h.numKvHeads) * (h.headDim / 2)),
  );
}

export interface AttentionArgs {
  q: GPUBuffer;
  k: GPUBuffer;
  v: GPUBuffer;
  kCache: GPUBuffer;
  vCache: GPUBuffer;
  slotMapping: GPUBuffer;
  /** tokenSeq[T] | queryStart[S + 1] | kvLens[S] | pageTableStart[S + 1], packed each step. */
  meta: GPUBuffer;
  pageTable: GPUBuffer;
  /** Per-split partial results when the KV length is split. */
  partials: GPUBuffer;
  out: GPUBuffer;
  pageSize: number;
}

export const MAX_HEAD_DIM = 256;

/** Writes the step's K and V into the cache, attends (split over the KV length when asked), merges the splits. */
export function attention(ctx: GpuContext, step: GPUBuffer, a: AttentionArgs, h: HeadShape): Dispatch[] {
  if (h.headDim > MAX_HEAD_DIM) throw new BackendError('webgpu', `head_dim ${h.headDim} is over the attention kernel's ${MAX_HEAD_DIM}`);
  const kvCols = h.numKvHeads * h.headDim;
  const writeParams = ctx.uniform('kv_write params', [kvCols, 0, 0, 0]);
  const attnParams = ctx.uniform('attention params', [h.numHeads, h.numKvHeads, h.headDim, a.pageSize, 1 / Math.sqrt(h.headDim), 0, 0, 0], [4]);
  const combineParams = ctx.uniform('attention_combine params', [h.numHeads, h.headDim, 0, 0]);
  return [
    dispatch(ctx, 'kv_write', 'kv_write', [step, writeParams, a.k, a.v, a.slotMapping, a.kCache, a.vCache], (s) => elementwise(s.numTokens * kvCols)),
    dispatch(ctx, 'attention', 'attention', [step, attnParams, a.q, a.kCache, a.vCache, a.meta, a.pageTable, a.out, a.partials], (s) =>
      s.numTokens > 0 ? foldWorkgroups(s.numTokens * h.numHeads * s.numSplits) : null,
    ),
    dispatch(ctx, 'attention_combine', 'attention_combine', [step, combineParams, a.partials, a.out], (s) =>
      s.numSplits > 1 ? elementwise(s.numTokens * h.numHeads * h.headDim) : null,
    ),
  ];
}

export function penalties(ctx: GpuContext, step: GPUBuffer, logits: GPUBuffer, entries: GPUBuffer, seqPenalties: GPUBuffer, vocab: number): Dispatch {
  const params = ctx.uniform('penalties params', [vocab, 0, 0, 0]);
  return dispatch(ctx, 'penalties', 'penalties', [step, params, logits, entries, seqPenalties], (s) => elementwise(s.numPenalties));
}

/** Adds each (sequence, token id, bias bits) entry's bias to its logit (skipped when the step has none). */
export function logitBias(ctx: GpuContext, step: GPUBuffer, logits: GPUBuffer, entries: GPUBuffer, vocab: number): Dispatch {
  const params = ctx.uniform('logit_bias params', [vocab, 0, 0, 0]);
  return dispatch(ctx, 'logit_bias', 'logit_bias', [step, params, logits, entries], (s) => elementwise(s.numBiases ?? 0));
}

/** Bytes of one sequence's sampling settings (struct SeqSampling in shaders/sample.wgsl). */
export const seqSamplingBytes = 32;

export function sample(ctx: GpuContext, step: GPUBuffer, logits: GPUBuffer, seqSampling: GPUBuffer, out: GPUBuffer, vocab: number): Dispatch {
  const idBits = Math.max(1, Math.ceil(Math.log2(vocab)));
  const params = ctx.uniform('sample params', [vocab, idBits, 0, 0]);
  return dispatch(ctx, 'sample', 'sample', [step, params, logits, seqSampling, out], (s) => (s.numSeqs > 0 ? foldWorkgroups(s.numSeqs) : null));
}

/** 32-bit words of one sequence's allowed-token mask. */
export function maskWords(vocab: number): number {
  return Math.ceil(vocab / 32);
}

/** -inf into the logits of ids a constrained sequence's mask leaves out (skipped when no sequence has one). */
export function tokenMask(ctx: GpuContext, step: GPUBuffer, logits: GPUBuffer, seqSampling: GPUBuffer, bits: GPUBuffer, vocab: number): Dispatch {
  const words = maskWords(vocab);
  const params = ctx.uniform('token_mask params', [vocab, words, 0xff800000, 0]);
  return dispatch(ctx, 'token_mask', 'token_mask', [step, params, logits, seqSampling, bits], (s) => (s.maskedSeqs ? elementwise(s.numSeqs * words) : null));
}

/** Words of the sample output for a step: tokens, log-probs, top ids, top log-probs. */
export function sampleOutputWords(numSeqs: number, topLogprobs: number): number {
  return 2 * numSeqs + 2 * numSeqs * topLogprobs;
}
