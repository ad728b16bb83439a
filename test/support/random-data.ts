import { SeededRandom } from '../../src/bench/seeded-random.js';

/**
 * Random shapes, values and prompts for parity tests, drawn from the project's one seeded
 * generator (src/model/rng.ts through SeededRandom), so a failing case replays from its seed.
 */
export function randomData(seed: number) {
  const random = new SeededRandom(seed);
  const next = () => random.uniform();
  return {
    /** Uniform in [0, 1). */
    next,
    /** Uniform integer in [lo, hi] (both included). */
    int: (lo: number, hi: number) => random.integer(lo, hi),
    pick: <T>(xs: readonly T[]) => xs[random.integer(0, xs.length - 1)]!,
    /** `n` values uniform in [-scale, scale). */
    uniform: (n: number, scale = 1) => Float32Array.from({ length: n }, () => (next() * 2 - 1) * scale),
    normal: (n: number, std = 1) => Float32Array.from({ length: n }, () => std * random.normal()),
  };
}

/** A prompt of `length` token ids below `vocab`, different for each seed. */
export function promptOf(length: number, seed: number, vocab: number): number[] {
  const random = new SeededRandom(seed);
  return Array.from({ length }, () => random.integer(0, vocab - 1));
}
