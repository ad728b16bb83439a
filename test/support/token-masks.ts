import type { SamplingBatch, TokenMaskBatch } from '../../src/engine/backend.js';
import { randomData } from './random-data.js';

/** Allowed-token sets for mask tests: a single id, a few, about half, every id, and unconstrained (null). */
export function randomAllowedSets(vocab: number, seed: number): (Set<number> | null)[] {
  const random = randomData(seed);
  const some = (count: number) => {
    const set = new Set<number>();
    while (set.size < count) set.add(random.int(0, vocab - 1));
    return set;
  };
  const half = new Set<number>();
  for (let id = 0; id < vocab; id++) if (random.next() < 0.5) half.add(id);
  return [some(1), some(3), some(25), half, new Set(Array.from({ length: vocab }, (_, i) => i)), null];
}

/** The mask batch of those sets, one row per constrained sequence, already ready. */
export function maskBatch(sets: (Set<number> | null)[], vocab: number): TokenMaskBatch {
  const words = Math.ceil(vocab / 32);
  const rowOf = new Int32Array(sets.length).fill(-1);
  let rows = 0;
  for (let s = 0; s < sets.length; s++) if (sets[s]) rowOf[s] = rows++;
  const bits = new Int32Array(rows * words);
  for (let s = 0; s < sets.length; s++) {
    for (const id of sets[s] ?? []) bits[rowOf[s]! * words + (id >> 5)]! |= 1 << (id & 31);
  }
  return { rowOf, words, bits, ready: Promise.resolve() };
}

/** The plain way to constrain: each disallowed logit set to -inf, one id at a time. */
export function maskPlainly(logits: Float32Array, vocab: number, sets: (Set<number> | null)[]): Float32Array {
  const out = logits.slice();
  sets.forEach((set, s) => {
    if (set) for (let id = 0; id < vocab; id++) if (!set.has(id)) out[s * vocab + id] = -Infinity;
  });
  return out;
}

/** Sampling settings for mask tests: greedy and sampled rows, log-probs on some. */
export function maskSampling(numSeqs: number, seed: number, topLogprobs: number): SamplingBatch {
  const random = randomData(seed);
  return {
    temperature: Float32Array.from({ length: numSeqs }, (_, s) => (s % 2 === 0 ? 0 : 0.8)),
    topP: Float32Array.from({ length: numSeqs }, (_, s) => (s % 3 === 1 ? 0.9 : 1)),
    topK: Int32Array.from({ length: numSeqs }, (_, s) => (s % 4 === 3 ? 10 : 0)),
    minP: new Float32Array(numSeqs),
    random: Float32Array.from({ length: numSeqs }, () => random.next()),
    logprobs: Int32Array.from({ length: numSeqs }, (_, s) => [0, topLogprobs, -1][s % 3]!),
    penalties: null,
  };
}

/** Logits with exact ties, some of them among the allowed ids. */
export function tiedLogits(numSeqs: number, vocab: number, seed: number, sets: (Set<number> | null)[]): Float32Array {
  const random = randomData(seed);
  const logits = random.uniform(numSeqs * vocab, 4);
  sets.forEach((set, s) => {
    const ids = [...(set ?? [])].slice(0, 3);
    for (const id of ids) logits[s * vocab + id] = 2.5;
    logits[s * vocab + ((ids[0] ?? 0) + 1) % vocab] = 9; // the row's best id, often disallowed
  });
  return logits;
}
