import { hash32 } from './hash32.js';

/**
 * A small seeded generator (splitmix32 stepping, lowbias32 output) for the per-request draws
 * that sampling consumes: one uniform number per generated token.
 */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = hash32(seed >>> 0) ^ 0x9e3779b9;
  }

  /** Uniform in [0, 1) with 24 bits of precision (what every backend can represent exactly in f32). */
  next(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    return (hash32(this.state) >>> 8) / 16777216;
  }

  static randomSeed(): number {
    return (Math.random() * 2 ** 32) >>> 0;
  }
}
