import type { SamplingBatch } from '../../src/engine/backend.js';

/**
 * The most logits a host backend holds at once (64 MiB: 130 rows of a 128K vocabulary). Its LM
 * head runs over the rows that need logits this many rows at a time, so a step of 2048
 * sequences does not materialize 2048 x vocab floats (1 GiB at 128K).
 */
export const defaultLogitsChunkBytes = 64 * 2 ** 20;

/** Rows of `vocab` f32 logits that fit in `bytes` (at least one). */
export function logitsRowsPerChunk(vocab: number, bytes = defaultLogitsChunkBytes): number {
  return Math.max(1, Math.floor(bytes / (4 * vocab)));
}

/** The sequences whose token the step uses (SamplingBatch.sampled; every sequence when absent), in order. */
export function sampledSeqs(sampling: SamplingBatch, numSeqs: number): Int32Array {
  const sampled = sampling.sampled;
  if (!sampled) return Int32Array.from({ length: numSeqs }, (_, s) => s);
  const seqs = new Int32Array(numSeqs);
  let n = 0;
  for (let s = 0; s < numSeqs; s++) if (sampled[s]) seqs[n++] = s;
  return seqs.subarray(0, n);
}

/** Consecutive views of `rows`, each at most `size` long. */
export function* chunksOf(rows: Int32Array, size: number): Generator<Int32Array> {
  for (let i = 0; i < rows.length; i += size) yield rows.subarray(i, i + size);
}
