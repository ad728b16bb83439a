import type { ForwardBatch, LogitBiasBatch } from '../../src/engine/backend.js';
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
  /** (sequence, token id, bias as f32 bits) per logit_bias / min_tokens entry. */
  biasEntries: Int32Array;
  /** Largest log-probs count asked: -1 none, 0 only the sampled token's. */
  maxLogprobs: number;
  /** Sequences with an allowed-token mask (their rows are in batch.sampling.tokenMask). */
  maskedSeqs: number;
}

function packBiases(bias: LogitBiasBatch | null | undefined, numSeqs: number): Int32Array {
  if (!bias) return new Int32Array(0);
  const first = bias.rowStart[0]!;
  const entries = new Int32Array(3 * (bias.rowStart[numSeqs]! - first));
  const bits = new Int32Array(bias.bias.buffer, bias.bias.byteOffset, bias.bias.length);
  let e = 0;
  for (let s = 0; s < numSeqs; s++) {
    for (let i = bias.rowStart[s]!; i < bias.rowStart[s + 1]!; i++) {
      entries[e++] = s;
      entries[e++] = bias.tokenIds[i]!;
      entries[e++] = bits[i]!;
    }
  }
  return entries;
}

/** Packs a batch that validateForwardBatch (src/engine/forward-batch.ts) accepted. */
export function packStep(batch: ForwardBatch): PackedStep {
  const numTokens = batch.tokenIds.length;
  const numSeqs = batch.kvLens.length;

  const meta = new Int32Array(numTokens + 3 * numSeqs + 2);
  for (let s = 0; s < numSeqs; s++) {
    const first = batch.queryStart[s]!;
    const count = batch.queryStart[s + 1]! - first;
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
  let maskedSeqs = 0;
  for (let s = 0; s < numSeqs; s++) {
    const o = (s * seqSamplingBytes) / 4;
    f32[o] = sp.temperature[s]!;
    f32[o + 1] = sp.topP[s]!;
    i32[o + 2] = sp.topK[s]!;
    f32[o + 3] = sp.minP[s]!;
    f32[o + 4] = sp.random[s]!;
    i32[o + 5] = sp.logprobs[s]!;
    i32[o + 6] = sp.tokenMask ? sp.tokenMask.rowOf[s]! : -1;
    if (i32[o + 6]! >= 0) maskedSeqs++;
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
        penaltyEntries[e++] = s;
        penaltyEntries[e++] = p.tokenIds[i]!;
        penaltyEntries[e++] = p.outputCounts[i]!;
      }
    }
  }
  return {
    biasEntries: packBiases(sp.logitBias, numSeqs),
    tokenIds: batch.tokenIds,
    positions: batch.positions,
    slotMapping: batch.slotMapping,
    meta,
    pageTable: batch.pageTable,
    seqSampling,
    penaltyEntries,
    seqPenalties,
    maxLogprobs,
    maskedSeqs,
  };
}
