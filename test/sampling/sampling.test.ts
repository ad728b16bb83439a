import { describe, expect, it } from 'vitest';
import type { SamplingBatch } from '../../src/engine/backend.js';
import { Rng } from '../../src/model/rng.js';
import { sampleLogits, topK } from '../../backends/shared/host-sampler.js';

function batch(overrides: Partial<SamplingBatch>, numSeqs = 1): SamplingBatch {
  return {
    temperature: new Float32Array(numSeqs).fill(1),
    topP: new Float32Array(numSeqs).fill(1),
    topK: new Int32Array(numSeqs),
    minP: new Float32Array(numSeqs),
    random: new Float32Array(numSeqs),
    logprobs: new Int32Array(numSeqs).fill(-1),
    penalties: null,
    ...overrides,
  };
}

/** Frequencies of sampled ids over many uniform draws. */
function histogram(logits: number[], overrides: Partial<SamplingBatch>, draws = 4000): Map<number, number> {
  const counts = new Map<number, number>();
  const rng = new Rng(7);
  for (let i = 0; i < draws; i++) {
    const out = sampleLogits(Float32Array.from(logits), logits.length, batch({ ...overrides, random: Float32Array.of(rng.next()) }));
    counts.set(out.tokens[0]!, (counts.get(out.tokens[0]!) ?? 0) + 1);
  }
  return counts;
}

describe('sampling rule', () => {
  it('greedy takes the argmax and the lowest id on ties', () => {
    const out = sampleLogits(Float32Array.of(0.5, 2, 2, -1), 4, batch({ temperature: Float32Array.of(0) }));
    expect(out.tokens[0]).toBe(1);
  });

  it('samples in proportion to softmax(logits / temperature)', () => {
    const logits = [Math.log(0.5), Math.log(0.3), Math.log(0.2)];
    const counts = histogram(logits, {});
    expect(counts.get(0)! / 4000).toBeCloseTo(0.5, 1);
    expect(counts.get(1)! / 4000).toBeCloseTo(0.3, 1);
    expect(counts.get(2)! / 4000).toBeCloseTo(0.2, 1);
  });

  it('top-k, top-p and min-p keep only the tokens they should', () => {
    const logits = [Math.log(0.4), Math.log(0.3), Math.log(0.2), Math.log(0.1)];
    expect([...histogram(logits, { topK: Int32Array.of(2) }).keys()].sort()).toEqual([0, 1]);
    // cumulative 0.4, 0.7, 0.9: top_p 0.65 keeps the first two
    expect([...histogram(logits, { topP: Float32Array.of(0.65) }).keys()].sort()).toEqual([0, 1]);
    // min_p 0.6 keeps tokens with p >= 0.24
    expect([...histogram(logits, { minP: Float32Array.of(0.6) }).keys()].sort()).toEqual([0, 1]);
  });

  it('the same draw gives the same token whatever the other rows hold', () => {
    const row = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i));
    const alone = sampleLogits(row.slice(), 50, batch({ random: Float32Array.of(0.37) }));
    const other = Float32Array.from({ length: 50 }, (_, i) => Math.cos(i * 3));
    const both = new Float32Array(100);
    both.set(other, 0);
    both.set(row, 50);
    const batched = sampleLogits(both, 50, batch({ random: Float32Array.of(0.9, 0.37) }, 2));
    expect(batched.tokens[1]).toBe(alone.tokens[0]);
  });

  it('penalties change the logits as the OpenAI and HF definitions say', () => {
    const logits = Float32Array.of(2, -2, 1, 0);
    const out = sampleLogits(logits, 4, {
      ...batch({ temperature: Float32Array.of(0), logprobs: Int32Array.of(0) }),
      penalties: {
        repetition: Float32Array.of(2),
        frequency: Float32Array.of(0.5),
        presence: Float32Array.of(0.25),
        tokenStart: Int32Array.of(0, 2),
        tokenIds: Int32Array.of(0, 1),
        outputCounts: Int32Array.of(2, 0),
      },
    });
    // token 0: 2 / 2 - 0.5 * 2 - 0.25 = -0.25; token 1 (prompt only): -2 * 2 = -4
    expect(logits[0]).toBeCloseTo(-0.25, 6);
    expect(logits[1]).toBeCloseTo(-4, 6);
    expect(out.tokens[0]).toBe(2);
  });

  it('log-probs are log_softmax before temperature, with the top k best first', () => {
    const logits = [1, 3, 2, 0];
    const out = sampleLogits(
      Float32Array.from(logits),
      4,
      batch({ temperature: Float32Array.of(0.5), logprobs: Int32Array.of(2), random: Float32Array.of(0) }),
    );
    const lse = Math.log(logits.reduce((a, x) => a + Math.exp(x), 0));
    expect(out.tokens[0]).toBe(1);
    expect(out.logprobs![0]).toBeCloseTo(3 - lse, 5);
    expect(Array.from(out.topLogprobs!.ids)).toEqual([1, 2]);
    expect(out.topLogprobs!.logprobs[1]).toBeCloseTo(2 - lse, 5);
  });

  it('topK breaks ties by the lower id', () => {
    expect(Array.from(topK(Float32Array.of(1, 5, 5, 3, 5), 3).ids)).toEqual([1, 2, 4]);
  });

  it('top-k, small (insertion) or large (partial selection), picks what sorting the whole vocabulary picks', () => {
    const rng = new Rng(11);
    const vocab = 3000;
    // Coarse values: many ties, which the rule breaks by the lower id.
    const logits = Float32Array.from({ length: vocab }, () => Math.round(rng.next() * 40) / 8);
    const sorted = Array.from({ length: vocab }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
    for (const k of [1, 5, 64, 65, 500]) {
      for (const random of [0, 0.2, 0.55, 0.999]) {
        for (const topP of [1, 0.5]) {
          const temperature = 0.7;
          const kept = sorted.slice(0, k);
          const weights = kept.map((id) => Math.exp((logits[id]! - logits[kept[0]!]!) / temperature));
          const total = weights.reduce((a, w) => a + w, 0);
          let keep = kept.length;
          for (let i = 0, mass = 0; i < kept.length; i++) if ((mass += weights[i]!) >= topP * total) { keep = i + 1; break; }
          const keptTotal = weights.slice(0, keep).reduce((a, w) => a + w, 0);
          let want = kept[keep - 1]!;
          for (let i = 0, mass = 0; i < keep; i++) if ((mass += weights[i]!) > random * keptTotal) { want = kept[i]!; break; }
          const out = sampleLogits(logits.slice(), vocab, batch({ temperature: Float32Array.of(temperature), topK: Int32Array.of(k), topP: Float32Array.of(topP), random: Float32Array.of(random) }));
          expect({ k, random, topP, token: out.tokens[0] }).toEqual({ k, random, topP, token: want });
        }
      }
    }
  });
});
