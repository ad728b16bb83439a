import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { createBackend } from '../../backends/index.js';
import type { ForwardBatch } from '../../src/engine/backend.js';
import { LlmEngine } from '../../src/engine/engine.js';
import type { GenerateDelta } from '../../src/engine/types.js';
import { loadModel } from '../../src/model/load.js';
import { schemaSuite } from './schemas.js';

const model = loadModel({ modelPath: 'tiny' });

async function run(disableRegexJumpForward: boolean, schema: object): Promise<{ deltas: GenerateDelta[]; forced: number }> {
  const engine = await LlmEngine.create(model, await createBackend('ref'), { maxTotalTokens: 4096, disableRegexJumpForward, logger: { warn: () => {} } });
  const deltas: GenerateDelta[] = [];
  const grammar = { type: 'json_schema' as const, schema: JSON.stringify(schema), param: 'test' };
  for await (const d of engine.generate({ promptTokenIds: model.tokenizer.encode('JSON:'), params: { maxNewTokens: 120, temperature: 0, grammar } })) deltas.push(d);
  const forced = engine.constraints.stats.forcedTokens;
  await engine.close();
  return { deltas, forced };
}

describe('jump-forward: tokens the grammar forces are appended without a decode step', () => {
  const schema = schemaSuite.order!;

  it('appends forced keys and punctuation to the sampled token\'s delta; the output still validates and the text matches the tokens', async () => {
    const on = await run(false, schema);
    const off = await run(true, schema);
    expect(on.forced).toBeGreaterThan(5);
    expect(off.forced).toBe(0);
    expect(on.deltas.some((d) => d.tokenIds.length > 1)).toBe(true);
    expect(off.deltas.every((d) => d.tokenIds.length <= 1)).toBe(true);
    for (const { deltas } of [on, off]) {
      const text = deltas.map((d) => d.text).join('');
      const ids = deltas.flatMap((d) => d.tokenIds);
      expect(deltas.at(-1)!.finishReason).toBe('stop');
      expect(model.tokenizer.decode(ids)).toBe(text);
      expect(deltas.at(-1)!.usage!.completionTokens).toBe(ids.length);
      expect(new Ajv({ strict: false }).compile(schema)(JSON.parse(text)), text).toBe(true);
    }
    // Fewer deltas: each delta is one model step.
    expect(on.deltas.length).toBeLessThan(off.deltas.length);
  });
});

describe('jump-forward before the first sampled token', () => {
  it('streams the text the grammar forces at the start before any model step, and prefills it with the prompt', async () => {
    const counting = await createBackend('ref');
    const firstBatches: number[] = [];
    let steps = 0;
    const forward = counting.forward.bind(counting);
    counting.forward = (batch: ForwardBatch) => {
      if (steps++ === 0) firstBatches.push(batch.tokenIds.length);
      return forward(batch);
    };
    const engine = await LlmEngine.create(model, counting, { maxTotalTokens: 4096, logger: { warn: () => {} } });
    const prompt = model.tokenizer.encode('JSON:');
    const schema = schemaSuite.flat!;
    const grammar = { type: 'json_schema' as const, schema: JSON.stringify(schema), param: 'test' };
    const deltas: { delta: GenerateDelta; stepsBefore: number }[] = [];
    for await (const delta of engine.generate({ promptTokenIds: prompt, params: { maxNewTokens: 60, temperature: 0, grammar } })) deltas.push({ delta, stepsBefore: steps });
    await engine.close();
    const first = deltas[0]!;
    // `{"name": "` is the only way the object can start (compact JSON, name is the first key).
    expect(first.stepsBefore).toBe(0);
    expect(first.delta.text).toBe('{"name": "');
    expect(firstBatches[0]).toBe(prompt.length + first.delta.tokenIds.length);
    const ids = deltas.flatMap(({ delta }) => delta.tokenIds);
    const text = deltas.map(({ delta }) => delta.text).join('');
    expect(model.tokenizer.decode(ids)).toBe(text);
    expect(deltas.at(-1)!.delta.usage!.completionTokens).toBe(ids.length);
    expect(new Ajv({ strict: false }).compile(schema)(JSON.parse(text)), text).toBe(true);
  });
});
