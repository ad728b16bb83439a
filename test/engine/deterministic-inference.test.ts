import { describe, expect, it } from 'vitest';
import { createBackend } from '../../backends/index.js';
import { LlmEngine } from '../../src/engine/engine.js';
import { OptionError } from '../../src/errors.js';
import type { SamplingParams } from '../../src/engine/types.js';
import { collect, model, prompt, quiet } from '../support/engine-fixtures.js';
import { InstantBackend } from '../support/instant-backend.js';

/** One seeded request's tokens and log-probs, alone and then among requests of other lengths. */
async function aloneAndLoaded(deterministicInference: boolean, params: Partial<SamplingParams>) {
  const engine = await LlmEngine.create(model, await createBackend('cpu'), { maxTotalTokens: 8192, logger: quiet, deterministicInference });
  const p = prompt('The quick brown fox jumps');
  const run = async () => {
    const [sample] = await collect(engine.generate({ promptTokenIds: p, params: { ...params, logprobs: 0, ignoreEos: true } }));
    return { tokens: sample!.tokenIds, logprobs: sample!.deltas.map((d) => d.logprobs![0]!.logprob) };
  };
  const alone = await run();
  const others = [1, 2, 3].map((i) =>
    collect(engine.generate({ promptTokenIds: prompt('x '.repeat(7 * i)), params: { temperature: 1, maxNewTokens: 5 + i, ignoreEos: true } })),
  );
  const [loaded] = await Promise.all([run(), ...others]);
  await engine.close();
  return { alone, loaded };
}

describe('--enable-deterministic-inference (item 17)', () => {
  it('cpu: a seeded request computes bit-identical log-probs alone and batched with others', async () => {
    // Without the flag the cpu backend's logits move in the last bits with the batch's row count.
    const { alone, loaded } = await aloneAndLoaded(true, { temperature: 0.8, topP: 0.95, seed: 7, maxNewTokens: 6 });
    expect(loaded.tokens).toEqual(alone.tokens);
    expect(loaded.logprobs).toEqual(alone.logprobs);
  }, 120_000);

  it('is refused on backends not verified deterministic, naming the flag', async () => {
    for (const name of ['webgpu', 'cuda']) {
      const backend = Object.assign(new InstantBackend(), { name });
      const created = LlmEngine.create(model, backend, { deterministicInference: true, logger: quiet });
      await expect(created).rejects.toThrow(OptionError);
      await expect(LlmEngine.create(model, Object.assign(new InstantBackend(), { name }), { deterministicInference: true, logger: quiet })).rejects.toThrow(
        new RegExp(`not supported on the ${name} backend`),
      );
    }
  });
});
