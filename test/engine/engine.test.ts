import { describe, expect, it } from 'vitest';
import { RefBackend } from '../../backends/ref/ref-backend.js';
import { ContextLengthError, EngineDeadError, EngineDrainingError, EngineOverloadedError, InvalidRequestError } from '../../src/engine/errors.js';
import { LlmEngine } from '../../src/engine/engine.js';
import { collect, createEngine, directGreedy, generateOne, model, prompt, quiet } from '../support/engine-fixtures.js';
import { HookedBackend } from '../support/hooked-backend.js';

const greedy = { temperature: 0 };

describe('LlmEngine on the ref backend (tiny)', () => {
  it('gives a request the same greedy output alone and batched with requests of other lengths', async () => {
    const a = prompt('Hello, my name is');
    const b = prompt('The quick brown fox jumps over the lazy dog because');
    const c = prompt('1 2 3');
    const oracle = await directGreedy(a, 10);
    const engine = await createEngine();
    const alone = await generateOne(engine, a, { ...greedy, maxNewTokens: 10 });
    expect(alone.tokenIds).toEqual(oracle.tokens);
    expect(alone.finishReason).toBe('length');
    const [withOthers] = await Promise.all([
      generateOne(engine, a, { ...greedy, maxNewTokens: 10 }),
      generateOne(engine, b, { ...greedy, maxNewTokens: 4 }),
      generateOne(engine, c, { ...greedy, maxNewTokens: 7 }),
    ]);
    expect(withOthers!.tokenIds).toEqual(oracle.tokens);
    await engine.close();
  });

  it('reuses a warm prefix cache with the same output as cold, and counts the reused tokens', async () => {
    const shared = prompt('Once upon a time in a land far away there lived');
    const longer = [...shared, ...prompt(' a dragon who').slice(1)];
    const cold = await createEngine({ disableRadixCache: true });
    const coldLonger = await generateOne(cold, longer, { ...greedy, maxNewTokens: 6 });
    await cold.close();

    const engine = await createEngine();
    const first = await generateOne(engine, shared, { ...greedy, maxNewTokens: 6 });
    expect(first.deltas.at(-1)!.usage!.cachedTokens).toBe(0);
    expect(engine.stats().prefixCacheHitTokens).toBe(0);
    const again = await generateOne(engine, shared, { ...greedy, maxNewTokens: 6 });
    expect(again.tokenIds).toEqual(first.tokenIds);
    expect(again.deltas.at(-1)!.usage!.cachedTokens).toBe(shared.length - 1);
    const warmLonger = await generateOne(engine, longer, { ...greedy, maxNewTokens: 6 });
    expect(warmLonger.tokenIds).toEqual(coldLonger.tokenIds);
    expect(warmLonger.deltas.at(-1)!.usage!.cachedTokens).toBe(shared.length);
    expect(engine.stats().prefixCacheHitTokens).toBe(2 * shared.length - 1);
    await engine.close();
  });

  for (const pageSize of [1, 4]) {
    it(`completes every request when the KV pool cannot hold them all (page size ${pageSize})`, async () => {
      const prompts = ['Hi', 'The sky is', 'Numbers: 1, 2,'].map(prompt);
      const warnings: string[] = [];
      const logger = { warn: (message: string) => warnings.push(message) };
      const engine = await createEngine({ maxTotalTokens: 64, pageSize, disableRadixCache: true, logger });
      const alone = [];
      for (const p of prompts) alone.push(await generateOne(engine, p, { ...greedy, maxNewTokens: 36, ignoreEos: true }));
      const together = await Promise.all(prompts.map((p) => generateOne(engine, p, { ...greedy, maxNewTokens: 36, ignoreEos: true })));
      expect(together.map((s) => s.tokenIds)).toEqual(alone.map((s) => s.tokenIds));
      expect(together.map((s) => s.text)).toEqual(alone.map((s) => s.text));
      const stats = engine.stats();
      expect(stats.retractions).toBeGreaterThan(0);
      expect(warnings.filter((w) => /retracted request/.test(w))).toHaveLength(stats.retractions);
      expect(stats.kvPagesUsed).toBe(0);
      expect(stats.kvPagesFree).toBe(stats.kvPagesTotal);
      expect(stats.runningRequests + stats.waitingRequests).toBe(0);
      await engine.close();
    });
  }

  it('frees everything when a request is aborted while queued, mid-prefill or mid-decode', async () => {
    let abortAtCall = -1;
    let abortId = '';
    const backend = new HookedBackend(new RefBackend(), (_batch, call) => {
      if (call === abortAtCall) engine.abort(abortId);
    });
    const engine = await createEngine({ maxRunningRequests: 1, chunkedPrefillSize: 4, disableRadixCache: true }, backend);
    const long = prompt('A long prompt that needs several chunks of four tokens to prefill completely');

    // Queued: B waits behind A (one running at most) and is aborted there.
    const a = engine.generate({ id: 'a', promptTokenIds: prompt('Hello'), params: { ...greedy, maxNewTokens: 8 } });
    const b = engine.generate({ id: 'b', promptTokenIds: long, params: { ...greedy, maxNewTokens: 8 } });
    expect(engine.stats().waitingRequests).toBe(2);
    const aDone = collect(a);
    engine.abort('b');
    const [bSample] = await collect(b);
    expect(bSample!.finishReason).toBe('abort');
    expect(bSample!.tokenIds).toEqual([]);
    expect((await aDone)[0]!.finishReason).toBe('length');
    expect(engine.stats().kvPagesUsed).toBe(0);

    // Mid-prefill: abort while the backend computes the second chunk.
    abortAtCall = backend.calls + 2;
    abortId = 'c';
    const [cSample] = await collect(engine.generate({ id: 'c', promptTokenIds: long, params: { ...greedy, maxNewTokens: 8 } }));
    expect(cSample!.finishReason).toBe('abort');
    expect(cSample!.tokenIds).toEqual([]);
    expect(engine.stats().kvPagesUsed).toBe(0);

    // Mid-decode: the consumer stops reading after two tokens.
    let seen = 0;
    for await (const delta of engine.generate({ id: 'd', promptTokenIds: long, params: { ...greedy, maxNewTokens: 30 } })) {
      expect(delta.finishReason).toBeNull();
      if (++seen === 2) break;
    }
    let stats = engine.stats();
    expect(stats.kvPagesUsed).toBe(0);
    expect(stats.runningRequests + stats.waitingRequests).toBe(0);

    // The engine is still healthy afterwards.
    const after = await generateOne(engine, long, { ...greedy, maxNewTokens: 3 });
    expect(after.finishReason).toBe('length');
    stats = engine.stats();
    expect(stats.kvPagesUsed).toBe(0);
    await engine.close();
  });

  it('keeps aborted KV only as evictable prefix cache when the radix cache is on', async () => {
    const engine = await createEngine();
    const stream = engine.generate({ id: 'x', promptTokenIds: prompt('Some words to cache here'), params: { ...greedy, maxNewTokens: 20 } });
    let seen = 0;
    for await (const _ of stream) if (++seen === 3) break;
    const stats = engine.stats();
    expect(stats.runningRequests).toBe(0);
    expect(stats.kvPagesUsed).toBe(0);
    expect(stats.kvPagesCached).toBe(stats.prefixCacheTokens);
    expect(stats.kvPagesCached).toBeGreaterThan(0);
    expect(engine.flushCache()).toBe(true);
    expect(engine.stats().kvPagesCached).toBe(0);
    expect(engine.stats().kvPagesFree).toBe(engine.stats().kvPagesTotal);
    await engine.close();
  });

  it('gives the same output with a long prompt prefilled in chunks as in one piece', async () => {
    const long = prompt('In the beginning the universe was created. This has made a lot of people very angry and been widely regarded as a bad move.');
    expect(long.length).toBeGreaterThan(20);
    const whole = await createEngine();
    const one = await generateOne(whole, long, { ...greedy, maxNewTokens: 6, logprobs: 0 });
    await whole.close();
    const chunked = await createEngine({ chunkedPrefillSize: 5 });
    const many = await generateOne(chunked, long, { ...greedy, maxNewTokens: 6, logprobs: 0 });
    await chunked.close();
    expect(many.tokenIds).toEqual(one.tokenIds);
    const lp = (s: typeof one) => s.deltas.map((d) => d.logprobs![0]!.logprob);
    lp(many).forEach((x, i) => expect(x).toBeCloseTo(lp(one)[i]!, 5));
  });

  it('makes seeded sampling reproducible whatever else is in the batch', async () => {
    const p = prompt('Tell me a story about');
    const sampled = { temperature: 0.9, topK: 40, topP: 0.95, maxNewTokens: 8, seed: 1234 };
    const engine = await createEngine();
    const alone = await generateOne(engine, p, sampled);
    const [batched] = await Promise.all([
      generateOne(engine, p, sampled),
      generateOne(engine, prompt('Another prompt of a different length entirely'), { temperature: 1, topK: 20, maxNewTokens: 5, seed: 1 }),
      generateOne(engine, prompt('x'), { ...greedy, maxNewTokens: 3 }),
    ]);
    expect(batched!.tokenIds).toEqual(alone.tokenIds);
    const otherSeed = await generateOne(engine, p, { ...sampled, seed: 99 });
    expect(otherSeed.tokenIds).not.toEqual(alone.tokenIds);
    await engine.close();
  });

  it('trims a stop string split across several tokens and never emits any of it', async () => {
    const p = prompt('The weather today is');
    const engine = await createEngine();
    const free = await generateOne(engine, p, { ...greedy, maxNewTokens: 12 });
    const pieces = free.deltas.map((d) => d.text);
    // A stop string made of the end of token 3, all of token 4 and the start of token 5.
    const i = pieces.findIndex((piece, k) => k >= 2 && piece.length >= 2 && (pieces[k + 1]?.length ?? 0) >= 1 && (pieces[k + 2]?.length ?? 0) >= 1);
    expect(i).toBeGreaterThanOrEqual(0);
    const stop = pieces[i]!.slice(-2) + pieces[i + 1]! + pieces[i + 2]!.slice(0, 1);
    const expected = free.text.slice(0, free.text.indexOf(stop));
    const stopped = await generateOne(engine, p, { ...greedy, maxNewTokens: 12, stop: ['never matches', stop] });
    expect(stopped.finishReason).toBe('stop');
    expect(stopped.matchedStop).toBe(stop);
    expect(stopped.text).toBe(expected);
    expect(stopped.text).not.toContain(stop);
    expect(stopped.deltas.at(-1)!.usage!.completionTokens).toBe(stopped.tokenIds.length);
    await engine.close();
  });

  it('stops at a stop token id without returning its text, and at max tokens with "length"', async () => {
    const p = prompt('The weather today is');
    const engine = await createEngine();
    const free = await generateOne(engine, p, { ...greedy, maxNewTokens: 6 });
    const stopId = free.tokenIds[2]!;
    const stopped = await generateOne(engine, p, { ...greedy, maxNewTokens: 6, stopTokenIds: [stopId] });
    const firstAt = free.tokenIds.indexOf(stopId);
    expect(stopped.tokenIds).toEqual(free.tokenIds.slice(0, firstAt + 1));
    expect(stopped.finishReason).toBe('stop');
    expect(stopped.matchedStop).toBe(stopId);
    expect(stopped.text).toBe(model.tokenizer.decode(free.tokenIds.slice(0, firstAt)));
    expect(free.finishReason).toBe('length');
    expect(free.tokenIds).toHaveLength(6);
    await engine.close();
  });

  it("stops at the model's EOS tokens unless ignore_eos", async () => {
    const p = prompt('The weather today is');
    const plain = await createEngine();
    const free = await generateOne(plain, p, { ...greedy, maxNewTokens: 6 });
    await plain.close();
    const eos = free.tokenIds[3]!;
    const engine = await LlmEngine.create({ ...model, stopTokenIds: [eos] }, new RefBackend(), { maxTotalTokens: 256, logger: quiet });
    const stopped = await generateOne(engine, p, { ...greedy, maxNewTokens: 6 });
    expect(stopped.finishReason).toBe('stop');
    expect(stopped.matchedStop).toBe(eos);
    expect(stopped.tokenIds).toEqual(free.tokenIds.slice(0, free.tokenIds.indexOf(eos) + 1));
    const ignored = await generateOne(engine, p, { ...greedy, maxNewTokens: 6, ignoreEos: true });
    expect(ignored.finishReason).toBe('length');
    expect(ignored.tokenIds).toEqual(free.tokenIds);
    await engine.close();
  });

  it('runs n samples on the shared prompt KV, each equal to a single sample with its seed', async () => {
    const p = prompt('My favourite colour is');
    const params = { temperature: 1, topK: 30, maxNewTokens: 5, seed: 10 };
    let computed = 0;
    const backend = new HookedBackend(new RefBackend(), (batch) => void (computed += batch.tokenIds.length));
    const engine = await createEngine({ disableRadixCache: true }, backend);
    const samples = await collect(engine.generate({ promptTokenIds: p, params: { ...params, n: 3 } }));
    expect(samples.map((s) => s.finishReason)).toEqual(['length', 'length', 'length']);
    // Samples 1 and 2 reused sample 0's prompt KV: each computed only the last prompt token, then 4 decodes.
    expect(computed).toBe(p.length + 2 * 1 + 3 * 4);
    // Sharing between samples is no prefix-cache hit.
    expect(engine.stats().prefixCacheHitTokens).toBe(0);
    expect(samples.map((s) => s.deltas.at(-1)!.usage!.cachedTokens)).toEqual([0, 0, 0]);
    for (let i = 0; i < 3; i++) {
      const single = await generateOne(engine, p, { ...params, seed: 10 + i });
      expect(samples[i]!.tokenIds).toEqual(single.tokenIds);
    }
    expect(engine.stats().kvPagesUsed).toBe(0);
    await engine.close();
  });

  it('returns log-probs of sampled tokens and the top alternatives', async () => {
    const p = prompt('Paris is the capital of');
    const oracle = await directGreedy(p, 4);
    const engine = await createEngine();
    const sample = await generateOne(engine, p, { ...greedy, maxNewTokens: 4, logprobs: 3 });
    expect(sample.tokenIds).toEqual(oracle.tokens);
    sample.deltas.forEach((d, i) => {
      const lp = d.logprobs![0]!;
      expect(lp.tokenId).toBe(d.tokenIds[0]);
      expect(lp.logprob).toBeCloseTo(oracle.logprobs[i]!, 4);
      expect(lp.top).toHaveLength(3);
      expect(lp.top[0]!.tokenId).toBe(lp.tokenId);
      expect(lp.top[0]!.logprob).toBeCloseTo(lp.logprob, 6);
      expect(lp.top[1]!.logprob).toBeLessThanOrEqual(lp.top[0]!.logprob);
    });
    const none = await generateOne(engine, p, { ...greedy, maxNewTokens: 2 });
    expect(none.deltas[0]!.logprobs).toBeNull();
    await engine.close();
  });

  it('rejects bad requests with named errors before queueing them', async () => {
    const engine = await createEngine({ maxTotalTokens: 256, maxQueuedRequests: 1 });
    expect(engine.contextLength).toBe(256);
    const tooLong = Array.from({ length: 250 }, () => 100);
    expect(() => engine.generate({ promptTokenIds: tooLong, params: { maxNewTokens: 10 } })).toThrow(ContextLengthError);
    expect(() => engine.generate({ promptTokenIds: tooLong, params: { maxNewTokens: 10 } })).toThrow(
      "This model's maximum context length is 256 tokens. However, you requested 260 tokens (250 in the messages, 10 in the completion). Please reduce the length of the messages or completion.",
    );
    const bad = (params: object, param: string) => {
      try {
        engine.generate({ promptTokenIds: [1, 2], params });
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(InvalidRequestError);
        expect((e as InvalidRequestError).param).toBe(param);
      }
    };
    bad({ temperature: -1 }, 'temperature');
    bad({ topP: 0 }, 'top_p');
    bad({ maxNewTokens: -1 }, 'max_tokens');
    bad({ n: 0 }, 'n');
    bad({ logprobs: 21 }, 'logprobs');
    bad({ stop: [''] }, 'stop');
    bad({ repetitionPenalty: 0 }, 'repetition_penalty');
    expect(() => engine.generate({ promptTokenIds: [], params: {} })).toThrow(InvalidRequestError);
    expect(() => engine.generate({ promptTokenIds: [model.config.vocabSize], params: {} })).toThrow(/prompt token id/);
    const first = engine.generate({ promptTokenIds: [1, 2], params: { maxNewTokens: 2 } });
    expect(() => engine.generate({ promptTokenIds: [1, 2], params: {} })).toThrow(EngineOverloadedError);
    await collect(first);
    await engine.close();
  });

  it('applies repetition, frequency and presence penalties as the sampling rule says', async () => {
    const p = prompt('again and again and again');
    const penalties = { repetitionPenalty: 1.3, frequencyPenalty: 0.5, presencePenalty: 0.4 };
    const engine = await createEngine();
    const sample = await generateOne(engine, p, { ...greedy, ...penalties, maxNewTokens: 6 });
    await engine.close();
    // The same rule applied step by step outside the engine.
    const { SingleSequence } = await import('../support/single-sequence.js');
    const backend = new RefBackend();
    await backend.load(model);
    await backend.allocateKvCache({ numPages: 64, pageSize: 1 });
    const sequence = new SingleSequence(backend);
    const counts = new Map<number, number>(p.map((id) => [id, 0]));
    const expected: number[] = [];
    let input = p;
    for (let i = 0; i < 6; i++) {
      const out = await sequence.step(input, {
        penalties: {
          repetition: Float32Array.of(penalties.repetitionPenalty),
          frequency: Float32Array.of(penalties.frequencyPenalty),
          presence: Float32Array.of(penalties.presencePenalty),
          tokenStart: Int32Array.of(0, counts.size),
          tokenIds: Int32Array.from(counts.keys()),
          outputCounts: Int32Array.from(counts.values()),
        },
      });
      const token = out.tokens[0]!;
      expected.push(token);
      counts.set(token, (counts.get(token) ?? 0) + 1);
      input = [token];
    }
    expect(sample.tokenIds).toEqual(expected);
    expect(sample.tokenIds).not.toEqual((await directGreedy(p, 6)).tokens);
  });

  it('drains: refuses new requests and resolves once in-flight ones finish', async () => {
    const engine = await createEngine();
    const stream = engine.generate({ promptTokenIds: prompt('Goodbye'), params: { ...greedy, maxNewTokens: 4 } });
    const samples = collect(stream);
    let drained = false;
    const draining = engine.drain().then(() => (drained = true));
    expect(() => engine.generate({ promptTokenIds: [1], params: {} })).toThrow(EngineDrainingError);
    expect(drained).toBe(false);
    await new Promise((resolve) => setTimeout(resolve, 0)); // let the first step start
    expect(engine.stats().runningRequests).toBe(1);
    expect(engine.flushCache()).toBe(false);
    await draining;
    expect((await samples)[0]!.finishReason).toBe('length');
    await engine.close();
  });

  it('marks itself dead and fails in-flight requests when the backend fails', async () => {
    const backend = new HookedBackend(new RefBackend(), (_batch, call) => {
      if (call === 3) throw new Error('device lost');
    });
    const engine = await createEngine({}, backend);
    const stream = engine.generate({ promptTokenIds: prompt('Hello'), params: { ...greedy, maxNewTokens: 10 } });
    await expect(collect(stream)).rejects.toThrow(EngineDeadError);
    expect(engine.stats().error).toBe('device lost');
    expect(() => engine.generate({ promptTokenIds: [1], params: {} })).toThrow(EngineDeadError);
    await engine.drain();
    await engine.close();
  });
});
