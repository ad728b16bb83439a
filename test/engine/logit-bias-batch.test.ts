import { describe, expect, it } from 'vitest';
import type { ForwardBatch, LogitBiasBatch } from '../../src/engine/backend.js';
import { LlmEngine } from '../../src/engine/engine.js';
import { collect, model, quiet } from '../support/engine-fixtures.js';
import { HookedBackend } from '../support/hooked-backend.js';
import { InstantBackend } from '../support/instant-backend.js';

// What SamplingBatch.logitBias carries each step: nothing when no sampled row has a bias;
// otherwise each sampled row's logit_bias, plus its stop ids at -inf while it has generated
// fewer than min_tokens tokens (the tiny preset's EOS ids: 128001, 128008, 128009).

const eos = [128001, 128008, 128009];

function rowOf(bias: LogitBiasBatch, s: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = bias.rowStart[s]!; i < bias.rowStart[s + 1]!; i++) out.push([bias.tokenIds[i]!, bias.bias[i]!]);
  return out.sort((a, b) => a[0] - b[0]);
}

describe('SamplingBatch.logitBias as the engine builds it', () => {
  it('absent for unbiased steps; per sampled row: logit_bias, and the stop ids banned until min_tokens', async () => {
    const steps: (LogitBiasBatch | null)[] = [];
    const seqsPerStep: number[] = [];
    const engine = await LlmEngine.create(
      model,
      new HookedBackend(new InstantBackend(), (batch: ForwardBatch) => {
        steps.push(batch.sampling.logitBias ?? null);
        seqsPerStep.push(batch.kvLens.length);
      }),
      { maxTotalTokens: 4096, logger: quiet },
    );
    try {
      await collect(engine.generate({ promptTokenIds: [2000, 2001, 2002], params: { maxNewTokens: 3, temperature: 0 } }));
      expect(steps.every((b) => b === null)).toBe(true);

      steps.length = 0;
      const [biased] = await collect(
        engine.generate({ promptTokenIds: [2000, 2001, 2003], params: { maxNewTokens: 4, temperature: 0, logitBias: [[7, 2.5], [eos[0]!, 1]], minTokens: 2, stopTokenIds: [900] } }),
      );
      expect(biased!.tokenIds).toHaveLength(4);
      expect(steps).toHaveLength(4);
      const banned = [...eos, 900].map((id): [number, number] => [id, -Infinity]);
      // Tokens 1 and 2 are sampled with fewer than 2 generated: stop ids banned (EOS 128001's bias replaced by the ban).
      expect(rowOf(steps[0]!, 0)).toEqual([[7, 2.5], ...banned].sort((a, b) => a[0] - b[0]));
      expect(rowOf(steps[1]!, 0)).toEqual([[7, 2.5], ...banned].sort((a, b) => a[0] - b[0]));
      expect(rowOf(steps[2]!, 0)).toEqual([[7, 2.5], [eos[0]!, 1]]);
      expect(rowOf(steps[3]!, 0)).toEqual([[7, 2.5], [eos[0]!, 1]]);
    } finally {
      await engine.close();
    }
  });

  it('a prefill chunk that samples nothing carries no entries, beside a biased decode', async () => {
    let mixed: LogitBiasBatch | null = null;
    const engine = await LlmEngine.create(
      model,
      new HookedBackend(new InstantBackend(), (batch: ForwardBatch) => {
        if (batch.kvLens.length === 2 && batch.sampling.logitBias) mixed ??= batch.sampling.logitBias;
      }),
      { maxTotalTokens: 8192, chunkedPrefillSize: 64, logger: quiet },
    );
    try {
      // Submitted together: the short prompt samples (and decodes) while the long one is still prefilled in chunks of 64.
      const long = Array.from({ length: 400 }, (_, i) => 3000 + i);
      await Promise.all([
        collect(engine.generate({ promptTokenIds: [2000, 2001], params: { maxNewTokens: 40, temperature: 0, ignoreEos: true, logitBias: [[11, -3]] } })),
        collect(engine.generate({ promptTokenIds: long, params: { maxNewTokens: 1, temperature: 0, logitBias: [[12, 4]] } })),
      ]);
      expect(mixed).not.toBeNull();
      const rows = [rowOf(mixed!, 0), rowOf(mixed!, 1)];
      expect(rows).toContainEqual([[11, -3]]);
      expect(rows).toContainEqual([]);
    } finally {
      await engine.close();
    }
  });
});
