import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RefBackend } from '../../backends/ref/ref-backend.js';
import { LlmEngine } from '../../src/engine/engine.js';
import { resolveRequest } from '../../src/engine/params.js';
import { defaultMaxTokens, samplingDefaultsFrom } from '../../src/engine/request-parameters.js';
import type { ForwardBatch } from '../../src/engine/backend.js';
import { UserError } from '../../src/errors.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { loadModel, openModel } from '../../src/model/load.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { writeGguf } from '../support/gguf-writer.js';
import { HookedBackend } from '../support/hooked-backend.js';
import { tinyVariant } from '../support/reference-runs.js';
import { writeSafetensorsCheckpoint } from '../support/safetensors-writer.js';
import { spawnSluice, waitForServing } from '../support/sluice-process.js';
import { startTestServer } from '../support/test-server.js';

const config = tinyVariant({ dtype: 'f32' });
let dir: string;
let checkpoint: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-gen-defaults-'));
  checkpoint = join(dir, 'checkpoint');
  await writeSafetensorsCheckpoint(checkpoint, { config, weights: new DummyWeights(config, 2) }, { dtype: 'f32' });
  writeFileSync(join(checkpoint, 'generation_config.json'), JSON.stringify({ do_sample: true, temperature: 0.6, top_p: 0.9, top_k: 40, eos_token_id: [128001, 128009] }));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('generation_config.json defaults', () => {
  it('fill the sampling parameters a request leaves unset; a request value wins', () => {
    const defaults = { temperature: 0.6, topP: 0.9, topK: 40 };
    const unset = resolveRequest({ promptTokenIds: [1], params: {} }, 1000, 100, defaults);
    expect(unset).toMatchObject({ temperature: 0.6, topP: 0.9, topK: 40, minP: 0, repetitionPenalty: 1 });
    const given = resolveRequest({ promptTokenIds: [1], params: { temperature: 0, topK: 0 } }, 1000, 100, defaults);
    expect(given).toMatchObject({ temperature: 0, topP: 0.9, topK: 0 });
  });

  it('are read with the model folder; eos ids join the stop tokens; a bad value names the file', async () => {
    const model = loadModel({ modelPath: checkpoint });
    expect(model.samplingDefaults).toEqual({ temperature: 0.6, topP: 0.9, topK: 40 });
    expect(model.stopTokenIds).toEqual(expect.arrayContaining([128001, 128009]));
    const bad = join(dir, 'bad');
    await writeSafetensorsCheckpoint(bad, { config, weights: new DummyWeights(config, 2) }, { dtype: 'f32' });
    writeFileSync(join(bad, 'generation_config.json'), JSON.stringify({ top_p: 1.5 }));
    expect(() => loadModel({ modelPath: bad })).toThrow(new UserError(`${join(bad, 'generation_config.json')}: top_p must be a number in (0, 1], got 1.5`));
  });

  it('reach the sampler of a request that names none', async () => {
    const model = loadModel({ modelPath: checkpoint });
    const seen: ForwardBatch[] = [];
    const engine = await LlmEngine.create(model, new HookedBackend(new RefBackend(), (batch) => void seen.push(batch)), {
      maxTotalTokens: 256,
      logger: { warn: () => {} },
    });
    try {
      for await (const _ of engine.generate({ promptTokenIds: [128000, 791], params: { maxNewTokens: 2, seed: 1 } }));
      expect(seen.length).toBeGreaterThan(0);
      expect(seen[0]!.sampling.temperature[0]).toBeCloseTo(0.6, 6);
      expect(seen[0]!.sampling.topP[0]).toBeCloseTo(0.9, 6);
      expect(seen[0]!.sampling.topK[0]).toBe(40);
    } finally {
      await engine.close();
    }
  });
});

describe('generation_config.json max_new_tokens (vLLM: the default max_tokens)', () => {
  it('is read as maxNewTokens; max_length is not read (vLLM ignores it); a bad value names the file', () => {
    expect(samplingDefaultsFrom({ max_new_tokens: 5, max_length: 20, temperature: 0.5 }, 'g.json')).toEqual({ maxNewTokens: 5, temperature: 0.5 });
    expect(() => samplingDefaultsFrom({ max_new_tokens: -1 }, 'g.json')).toThrow(new UserError('g.json: max_new_tokens must be an integer >= 0, got -1'));
  });

  it('a chat request without max_tokens gets it, capped by the context left; /v1/completions keeps 16; a request value wins', async () => {
    expect(defaultMaxTokens.chat(100, 10, 5)).toBe(5);
    expect(defaultMaxTokens.chat(100, 97, 5)).toBe(3);
    expect(defaultMaxTokens.chat(100, 10)).toBe(90);
    const tiny = loadModel({ modelPath: 'tiny' });
    const server = await startTestServer({ instant: true, engineThread: 'main', model: { ...tiny, samplingDefaults: { maxNewTokens: 5 } } });
    const post = async (route: string, body: object) => {
      const response = await fetch(`${server.url}${route}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: tiny.name, ...body }) });
      expect(response.status).toBe(200);
      return (await response.json()) as { usage: { completion_tokens: number }; choices: { finish_reason: string }[] };
    };
    try {
      const messages = [{ role: 'user', content: 'hello' }];
      const unset = await post('/v1/chat/completions', { messages });
      expect(unset.usage.completion_tokens).toBe(5);
      expect(unset.choices[0]!.finish_reason).toBe('length');
      expect((await post('/v1/chat/completions', { messages, max_tokens: 7 })).usage.completion_tokens).toBe(7);
      expect((await post('/v1/chat/completions', { messages, max_completion_tokens: 8 })).usage.completion_tokens).toBe(8);
      expect((await post('/v1/completions', { prompt: 'hello' })).usage.completion_tokens).toBe(defaultMaxTokens.completions);
    } finally {
      await server.shutdown(1000);
    }
  });
});

describe('a model folder whose tokenizer does not fit its vocabulary', () => {
  it('fails in one line naming both files', async () => {
    const small = tinyVariant({ dtype: 'f32', vocabSize: 1000 });
    const folder = join(dir, 'small-vocab');
    await writeSafetensorsCheckpoint(folder, { config: small, weights: new DummyWeights(small, 2) }, { dtype: 'f32' });
    expect(() => loadModel({ modelPath: folder })).toThrow(
      new UserError(`${join(folder, 'tokenizer.json')}: the tokenizer has 128256 tokens but ${join(folder, 'config.json')} says vocab_size 1000`),
    );
  });
});

describe('--chat-template', () => {
  it('replaces the tokenizer template, from a file or inline; a missing file or a broken template is one line', async () => {
    const file = join(dir, 'template.jinja');
    writeFileSync(file, '{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}');
    const model = await openModel({ modelPath: 'tiny', chatTemplate: file });
    expect(model.tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }])).toBe('<user>hi\n<assistant>');
    // The shared Llama 3 tokenizer keeps its own template.
    expect(Tokenizer.llama3().applyChatTemplate([{ role: 'user', content: 'hi' }])).toContain('<|start_header_id|>user');
    const inline = await openModel({ modelPath: 'tiny', chatTemplate: '{{ messages[0].content }}!' });
    expect(inline.tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }])).toBe('hi!');
    await expect(openModel({ modelPath: 'tiny', chatTemplate: join(dir, 'missing.jinja') })).rejects.toThrow(/chatTemplate .*missing.jinja: no such file/);
    writeFileSync(join(dir, 'broken.jinja'), '{% for m in messages %}');
    await expect(openModel({ modelPath: 'tiny', chatTemplate: join(dir, 'broken.jinja') })).rejects.toThrow(/broken.jinja: chat template does not parse/);
  });
});

describe('sluice serve with a GGUF file', () => {
  // In an engine thread: it loads the same file again, so GGUF must work there too.
  it('serves it under --served-model-name, chatting through --chat-template, the engine in its own thread', async () => {
    const file = join(dir, 'model.gguf');
    await writeGguf(file, { config, tokenizer: Tokenizer.llama3(), weights: new DummyWeights(config, 2) }, { dtype: 'q8_0' });
    const template = join(dir, 'plain.jinja');
    writeFileSync(template, '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:');
    const server = spawnSluice(['serve', '--model-path', file, '--backend', 'ref', '--port', '0', '--served-model-name', 'my-model', '--chat-template', template, '--engine-thread', 'worker']);
    try {
      const url = await waitForServing(server, 120_000);
      const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
      expect(models.data.map((m) => m.id)).toEqual(['my-model']);
      const chat = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ model: 'my-model', messages: [{ role: 'user', content: 'hello there' }], max_tokens: 3, temperature: 0 }),
      });
      expect(chat.status).toBe(200);
      const body = (await chat.json()) as { model: string; usage: { prompt_tokens: number } };
      expect(body.model).toBe('my-model');
      expect(body.usage.prompt_tokens).toBe(Tokenizer.llama3().encode('user: hello there\nassistant:', false).length);
      expect(server.stderr()).toMatch(/loading .*model.gguf/);
    } finally {
      server.child.kill('SIGTERM');
      await server.exited;
    }
  });
});
