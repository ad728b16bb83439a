import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { createBackend } from '../../backends/index.js';
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
