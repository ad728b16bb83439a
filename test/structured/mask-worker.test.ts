import { afterAll, describe, expect, it } from 'vitest';
import { createBackend } from '../../backends/index.js';
import { LlmEngine } from '../../src/engine/engine.js';
import type { GrammarSpec } from '../../src/engine/types.js';
import { GrammarCompiler } from '../../src/grammar/grammar-compiler.js';
import { MaskWorker } from '../../src/grammar/mask-worker.js';
import { grammarVocabulary } from '../../src/grammar/tokenizer-info.js';
import { loadModel } from '../../src/model/load.js';

const model = loadModel({ modelPath: 'tiny' });
const spec: GrammarSpec = {
  type: 'json_schema',
  schema: JSON.stringify({ type: 'object', properties: { city: { enum: ['Paris', 'Oslo'] }, n: { type: 'integer', minimum: 0, maximum: 99 } }, required: ['city', 'n'] }),
  param: 'test',
};
const vocab = grammarVocabulary(model.tokenizer, model.config.vocabSize);
const compilerReady = GrammarCompiler.fromVocabulary(vocab, model.stopTokenIds);
const workerReady = MaskWorker.start(vocab, model.stopTokenIds);
afterAll(async () => {
  (await compilerReady).dispose();
  await (await workerReady).close();
});

const ids = (text: string) => model.tokenizer.encode(text, false);

describe('mask worker: its copy of a matcher follows the engine thread\'s, rollbacks included', () => {
  it('after accepts and a rollback, the worker\'s masks equal the engine thread\'s', async () => {
    const compiler = await compilerReady;
    const worker = await workerReady;
    const matcher = await compiler.matcher(await compiler.compile(spec), model.stopTokenIds);
    await worker.add(1, spec, model.stopTokenIds);
    const words = compiler.maskWords;
    const mine = new Int32Array(words);
    const check = async () => {
      const bits = worker.maskWords(2 * words);
      bits.fill(0);
      await worker.fill([{ id: 1, journal: matcher.takeJournal(), row: 1 }], words);
      await matcher.fillMask(mine, 0);
      expect(Array.from(bits.subarray(words))).toEqual(Array.from(mine));
      expect(bits.subarray(0, words).every((w) => w === 0)).toBe(true); // only its row is written
    };
    await check(); // the start
    for (const id of ids('{"city": ')) expect(matcher.accept(id)).toBe(true);
    const paris = ids('"Paris", "n": 1');
    for (const id of paris) expect(matcher.accept(id)).toBe(true);
    await check();
    // Take back `"Paris", "n": 1` and go another way: a copy that missed the rollback would refuse "Oslo".
    matcher.rollback(paris.length);
    for (const id of ids('"Oslo", "n": 42')) expect(matcher.accept(id)).toBe(true);
    await check();
    matcher.dispose();
  });

  it('a copy out of step is reported, not used: the row allows every token and the fill rejects', async () => {
    const worker = await workerReady;
    await worker.add(2, spec, model.stopTokenIds);
    const words = Math.ceil(model.config.vocabSize / 32);
    const bits = worker.maskWords(words);
    bits.fill(0);
    await expect(worker.fill([{ id: 2, journal: ids('no json'), row: 0 }], words)).rejects.toThrow(/not in step/);
    expect(bits.every((w) => w === -1)).toBe(true);
  });

  it('an engine gives the same seeded output with masks from the worker and from its own thread', async () => {
    const outputs: string[] = [];
    for (const maskWorker of [true, false]) {
      const engine = await LlmEngine.create(model, await createBackend('cpu'), { maxTotalTokens: 4096, maskWorker, logger: { warn: () => {} } });
      let text = '';
      for await (const d of engine.generate({ promptTokenIds: ids('JSON:'), params: { maxNewTokens: 40, temperature: 1, seed: 7, grammar: spec } })) text += d.text;
      await engine.close();
      outputs.push(text);
    }
    expect(outputs[0]).toBe(outputs[1]);
    const parsed = JSON.parse(outputs[0]!);
    expect(['Paris', 'Oslo']).toContain(parsed.city);
    expect(Number.isInteger(parsed.n)).toBe(true);
  });
});
