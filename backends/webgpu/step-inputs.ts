import type { ForwardBatch } from '../../src/engine/backend.js';
import { seqSamplingBytes } from './kernels.js';

/** The host arrays a step uploads, packed in the layouts the shaders read. */
export interface PackedStep {
  tokenIds: Int32Array;
  positions: Int32Array;
  slotMapping: Int32Array;
  /** tokenSeq[T] | queryStart[S + 1] | kvLens[S] | pageTableStart[S + 1] */
  meta: Int32Array;
  pageTable: Int32Array;
  /** struct SeqSampling per sequence (shaders/sample.wgsl). */
  seqSampling: ArrayBuffer;
  /** (sequence, token id, output count) per penalized token. */
  penaltyEntries: Int32Array;
  /** (repetition, frequency, presence, unused) per sequence. */
  seqPenalties: Float32Array;
  /** Largest log-probs count asked: -1 none, 0 only the sampled token's. */
  maxLogprobs: number;
}

/** Checks a batch against the model and the cache, and packs it. Errors name the offending field. */
export function packStep(batch: ForwardBatch, vocab: number, numSlots: number, numPages: number): PackedStep {
  const numTokens = batch.tokenIds.length;
  const numSeqs = batch.kvLens.length;
  if (batch.positions.length !== numTokens || batch.slotMapping.length !== numTokens) {
    throw new Error('webgpu: ForwardBatch positions and slotMapping must have one entry per token');
  }
  if (batch.queryStart.length !== numSeqs + 1 || batch.pageTableStart.length !== numSeqs + 1) {
    throw new Error('webgpu: ForwardBatch queryStart and pageTableStart must have S + 1 entries');
  }
  if (batch.queryStart[0] !== 0 || batch.queryStart[numSeqs] !== numTokens) {
    throw new Error('webgpu: ForwardBatch queryStart must run from 0 to the token count');
  }
  for (const id of batch.tokenIds) if (id < 0 || id >= vocab) throw new Error(`webgpu: token id ${id} is outside the vocabulary (${vocab})`);
  for (const slot of batch.slotMapping) if (slot < 0 || slot >= numSlots) throw new Error(`webgpu: KV slot ${slot} is outside the cache (${numSlots} slots)`);
  for (const page of batch.pageTable) if (page < 0 || page >= numPages) throw new Error(`webgpu: page ${page} is outside the cache (${numPages} pages)`);

  const meta = new Int32Array(numTokens + 3 * numSeqs + 2);
  for (let s = 0; s < numSeqs; s++) {
    const first = batch.queryStart[s]!;
    const count = batch.queryStart[s + 1]! - first;
    if (count < 1 || batch.kvLens[s]! < count) throw new Error(`webgpu: sequence ${s} has ${count} new tokens and a KV length of ${batch.kvLens[s]}`);
    meta.fill(s, first, first + count);
  }
  meta.set(batch.queryStart, numTokens);
  meta.set(batch.kvLens, numTokens + numSeqs + 1);
  meta.set(batch.pageTableStart, numTokens + 2 * numSeqs + 1);

  const sp = batch.sampling;
  const seqSampling = new ArrayBuffer(numSeqs * seqSamplingBytes);
  const f32 = new Float32Array(seqSampling);
  const i32 = new Int32Array(seqSampling);
  let maxLogprobs = -1;
  for (let s = 0; s < numSeqs; s++) {
    const o = (s * seqSamplingBytes) / 4;
    f32[o] = sp.temperature[s]!;
    f32[o + 1] = sp.topP[s]!;
    i32[o + 2] = sp.topK[s]!;
    f32[o + 3] = sp.minP[s]!;
    f32[o + 4] = sp.random[s]!;
    i32[o + 5] = sp.logprobs[s]!;
    maxLogprobs = Math.max(maxLogprobs, sp.logprobs[s]!);
  }

  const p = sp.penalties;
  let penaltyEntries = new Int32Array(0);
  const seqPenalties = new Float32Array(4 * numSeqs);
  if (p) {
    const count = p.tokenStart[numSeqs]! - p.tokenStart[0]!;
    penaltyEntries = new Int32Array(3 * count);
    let e = 0;
    for (let s = 0; s < numSeqs; s++) {
      seqPenalties[4 * s] = p.repetition[s]!;
      seqPenalties[4 * s + 1] = p.frequency[s]!;
      seqPenalties[4 * s + 2] = p.presence[s]!;
      for (let i = p.tokenStart[s]!; i < p.tokenStart[s + 1]!; i++) {
        const id = p.tokenIds[i]!;
        if (id < 0 || id >= vocab) throw new Error(`webgpu: penalized token id ${id} is outside the vocabulary (${vocab})`);
        penaltyEntries[e++] = s;
        penaltyEntries[e++] = id;
        penaltyEntries[e++] = p.outputCounts[i]!;
      }
    }
  }
  return {
    tokenIds: batch.tokenIds,
    positions: batch.positions,
    slotMapping: batch.slotMapping,
    meta,
    pageTable: batch.pageTable,
    seqSampling,
    penaltyEntries,
    seqPenalties,
    maxLogprobs,
  };
}
