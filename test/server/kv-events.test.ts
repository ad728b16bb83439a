import { afterEach, describe, expect, it } from 'vitest';
import type { LlmEngine } from '../../src/engine/engine.js';
import type { RunningServer } from '../../src/server/index.js';
import { blockPrefixes, KvEventSubscriber, replayBatches } from '../support/kv-event-subscriber.js';
import { SeededRandom } from '../../src/bench/seeded-random.js';
import { json, startTestServer, waitFor } from '../support/test-server.js';

let server: RunningServer | null = null;
let subscriber: KvEventSubscriber | null = null;

afterEach(async () => {
  await subscriber?.close();
  await server?.shutdown(5000);
  subscriber = null;
  server = null;
});

async function start(pageSize: number, blockSize: number, maxTotalTokens: number): Promise<{ server: RunningServer; subscriber: KvEventSubscriber }> {
  // On the main thread whatever SLUICE_TEST_ENGINE_THREAD says: the test reads the engine's radix cache directly.
  server = await startTestServer({ instant: true, kvEvents: { endpoint: 'tcp://127.0.0.1:*', blockSize }, engine: { pageSize, maxTotalTokens }, engineThread: 'main' });
  subscriber = new KvEventSubscriber(server.context.kvEvents!.endpoint);
  // A PUB socket drops what it sends before the subscription arrives: flush (which always
  // publishes AllBlocksCleared) until one gets through, so nothing after it is missed.
  const sub = subscriber;
  await waitFor(async () => {
    await fetch(`${server!.url}/flush_cache`, { method: 'POST' });
    await new Promise((resolve) => setTimeout(resolve, 30));
    return sub.batches > 0;
  }, 'the subscription to reach the publisher');
  return { server, subscriber };
}

/** Waits until every published batch has arrived. */
async function caughtUp(server: RunningServer, subscriber: KvEventSubscriber): Promise<void> {
  await waitFor(async () => subscriber.lastSequence === server.context.kvEvents!.published - 1n, 'the last KV event batch');
}

function engineOf(server: RunningServer): LlmEngine {
  return server.context.engine as unknown as LlmEngine;
}

/** Prompts sharing a few long prefixes, with random tails; random output lengths. */
async function randomWorkload(server: RunningServer, rng: SeededRandom, requests: number, concurrency: number): Promise<void> {
  const prefixes = Array.from({ length: 3 }, () => Array.from({ length: 24 + rng.integer(0, 40 - 1) }, () => 1000 + rng.integer(0, 3000 - 1)));
  let next = 0;
  const worker = async () => {
    while (next < requests) {
      next++;
      const prefix = prefixes[rng.integer(0, prefixes.length - 1)]!.slice(0, 8 + rng.integer(0, 56 - 1));
      const tail = Array.from({ length: 1 + rng.integer(0, 30 - 1) }, () => 1000 + rng.integer(0, 3000 - 1));
      const response = await fetch(`${server.url}/generate`, {
        method: 'POST',
        body: JSON.stringify({ input_ids: [...prefix, ...tail], sampling_params: { max_new_tokens: 1 + rng.integer(0, 12 - 1), temperature: 0, ignore_eos: true } }),
      });
      expect(response.status).toBe(200);
      await response.json();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

describe('KV-cache events over ZeroMQ (vLLM format)', () => {
  for (const [pageSize, blockSize] of [
    [1, 16],
    [4, 6],
    [16, 16],
    [16, 4],
  ] as const) {
    it(`rebuilt from the events alone, the block set equals the radix cache's (page size ${pageSize}, blocks of ${blockSize})`, async () => {
      const { server, subscriber } = await start(pageSize, blockSize, 640);
      const rng = new SeededRandom(pageSize * 100 + blockSize);
      const expected = () => blockPrefixes(engineOf(server).cachedPaths(), blockSize);

      await randomWorkload(server, rng, 40, 6);
      await caughtUp(server, subscriber);
      expect(subscriber.removed).toBeGreaterThan(0); // the small pool evicted
      expect(subscriber.prefixes()).toEqual(expected());
      expect(subscriber.blocks.size).toBeGreaterThan(0);

      expect((await fetch(`${server.url}/flush_cache`, { method: 'POST' })).status).toBe(200);
      await caughtUp(server, subscriber);
      expect(subscriber.blocks.size).toBe(0);
      expect(expected().size).toBe(0);

      await randomWorkload(server, rng, 40, 6);
      await caughtUp(server, subscriber);
      expect(subscriber.prefixes()).toEqual(expected());
      expect(subscriber.gaps).toBe(0);
      expect([...subscriber.topics]).toEqual(['kv@127.0.0.1@tiny']);
    });
  }

  it('BlockStored carries chained hashes, the parent hash, the block tokens and the block size', async () => {
    const { server, subscriber } = await start(1, 4, 4096);
    const prompt = Array.from({ length: 11 }, (_, i) => 2000 + i);
    await json(fetch(`${server.url}/generate`, { method: 'POST', body: JSON.stringify({ input_ids: prompt, sampling_params: { max_new_tokens: 1, temperature: 0 } }) }));
    await caughtUp(server, subscriber);
    // The finished request cached prompt + output (12 tokens, minus the last one never run) = 11 computed positions: 2 whole blocks.
    const prefixes = [...subscriber.prefixes()].sort((a, b) => a.length - b.length);
    expect(prefixes).toEqual([prompt.slice(0, 4).join(','), prompt.slice(0, 8).join(',')]);
    const second = [...subscriber.blocks.entries()].find(([, b]) => b.parent !== null)!;
    expect(subscriber.blocks.get(second[1].parent!)!.tokens).toEqual(prompt.slice(0, 4));
    expect(second[1].tokens).toEqual(prompt.slice(4, 8));
    // Sharing the first 6 tokens adds no block for them; a new branch stores only its own blocks.
    const stored = subscriber.stored;
    const branch = [...prompt.slice(0, 6), 3000, 3001, 3002, 3003, 3004];
    await json(fetch(`${server.url}/generate`, { method: 'POST', body: JSON.stringify({ input_ids: branch, sampling_params: { max_new_tokens: 1, temperature: 0 } }) }));
    await caughtUp(server, subscriber);
    expect(subscriber.stored - stored).toBe(1);
    expect(subscriber.prefixes()).toEqual(blockPrefixes(engineOf(server).cachedPaths(), 4));
  });

  describe('replay socket (vLLM replay_endpoint)', () => {
    const startWithReplay = async (bufferSteps?: number) => {
      server = await startTestServer({
        instant: true,
        kvEvents: { endpoint: 'tcp://127.0.0.1:*', blockSize: 4, replayEndpoint: 'tcp://127.0.0.1:*', bufferSteps },
        engine: { pageSize: 4, maxTotalTokens: 640 },
        engineThread: 'main',
      });
      return server;
    };

    it('a subscriber that missed every batch rebuilds the radix cache from a replay (DEALER client)', async () => {
      const server = await startWithReplay();
      const publisher = server.context.kvEvents!;
      const rng = new SeededRandom(7);
      await randomWorkload(server, rng, 30, 6);
      expect((await fetch(`${server.url}/flush_cache`, { method: 'POST' })).status).toBe(200);
      await randomWorkload(server, rng, 30, 6);
      const published = publisher.published;
      expect(published).toBeGreaterThan(10n);

      const { batches, ended } = await replayBatches(publisher.replayEndpoint!, 0n, 'dealer');
      expect(ended).toBe(true);
      expect(batches.map((b) => b.seq)).toEqual(Array.from({ length: Number(published) }, (_, i) => BigInt(i)));
      const rebuilt = new KvEventSubscriber(publisher.endpoint);
      subscriber = rebuilt;
      for (const batch of batches) rebuilt.applyBatch(batch.payload);
      expect(rebuilt.removed).toBeGreaterThan(0); // the small pool evicted
      expect(rebuilt.cleared).toBe(1);
      expect(rebuilt.prefixes()).toEqual(blockPrefixes(engineOf(server).cachedPaths(), 4));
      expect(rebuilt.blocks.size).toBeGreaterThan(0);

      // From a later sequence: only what follows it.
      const tail = await replayBatches(publisher.replayEndpoint!, published - 3n, 'dealer');
      expect(tail.batches.map((b) => b.seq)).toEqual([published - 3n, published - 2n, published - 1n]);
      expect(tail.batches.map((b) => b.payload)).toEqual(batches.slice(-3).map((b) => b.payload));
      // Past the end: just the end marker.
      expect(await replayBatches(publisher.replayEndpoint!, published + 5n, 'dealer')).toEqual({ batches: [], ended: true });
    });

    it('keeps only the latest --kv-events-buffer-steps batches; a REQ client gets the first one it asked for', async () => {
      const server = await startWithReplay(4);
      const publisher = server.context.kvEvents!;
      await randomWorkload(server, new SeededRandom(8), 12, 3);
      const published = publisher.published;
      expect(published).toBeGreaterThan(4n);
      const { batches } = await replayBatches(publisher.replayEndpoint!, 0n, 'dealer');
      expect(batches.map((b) => b.seq)).toEqual([published - 4n, published - 3n, published - 2n, published - 1n]);
      const first = await replayBatches(publisher.replayEndpoint!, published - 2n, 'req');
      expect(first.batches.map((b) => b.seq)).toEqual([published - 2n]);
      expect(first.batches[0]!.payload).toEqual(batches[2]!.payload);
    });
  });
});
