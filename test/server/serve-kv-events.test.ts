import { describe, expect, it } from 'vitest';
import { KvEventSubscriber, replayBatches } from '../support/kv-event-subscriber.js';
import { freePort, spawnSluice, waitForServing } from '../support/sluice-process.js';
import { json, waitFor } from '../support/test-server.js';

describe('sluice serve --kv-events-endpoint', () => {
  it('connects its PUB socket to a bound subscriber (llm-d layout), topic kv@<host>:<port>@<model>, blocks of --kv-events-block-size; replays on --kv-events-replay-endpoint', async () => {
    const kvEndpoint = `tcp://127.0.0.1:${await freePort()}`;
    const replayEndpoint = `tcp://127.0.0.1:${await freePort()}`;
    const subscriber = await KvEventSubscriber.bound(kvEndpoint);
    const port = await freePort();
    const server = spawnSluice([
      'serve',
      '--model-path', 'tiny',
      '--backend', 'ref',
      '--port', String(port),
      '--max-total-tokens', '4096',
      '--served-model-name', 'tiny-served',
      '--kv-events-endpoint', kvEndpoint,
      '--kv-events-block-size', '4',
      '--kv-events-replay-endpoint', replayEndpoint,
      '--kv-events-buffer-steps', '100',
    ]);
    try {
      const url = await waitForServing(server, 60_000);
      expect(server.stderr()).toMatch(new RegExp(`KV events: ZeroMQ PUB on ${kvEndpoint}, topic kv@127\\.0\\.0\\.1:${port}@tiny-served, blocks of 4 tokens; replay on ${replayEndpoint} \\(last 100 batches\\)`));
      const info = await json(fetch(`${url}/server_info`));
      expect(info.kv_events_config).toEqual({ publisher: 'zmq', endpoint: kvEndpoint, topic: `kv@127.0.0.1:${port}@tiny-served`, blockSize: 4, replayEndpoint, bufferSteps: 100 });
      await waitFor(async () => {
        await fetch(`${url}/flush_cache`, { method: 'POST' });
        await new Promise((resolve) => setTimeout(resolve, 50));
        return subscriber.batches > 0;
      }, 'the first event batch');
      const prompt = [3000, 3001, 3002, 3003, 3004, 3005, 3006, 3007, 3008, 3009];
      await json(fetch(`${url}/generate`, { method: 'POST', body: JSON.stringify({ input_ids: prompt, sampling_params: { max_new_tokens: 1, temperature: 0 } }) }));
      await waitFor(async () => subscriber.blocks.size === 2, 'two stored blocks');
      expect([...subscriber.prefixes()].sort()).toEqual([prompt.slice(0, 4).join(','), prompt.slice(0, 8).join(',')].sort());
      expect([...subscriber.topics]).toEqual([`kv@127.0.0.1:${port}@tiny-served`]);
      // A late subscriber catches up from the replay socket: the same blocks from the batches alone.
      const replay = await replayBatches(replayEndpoint, 0n, 'dealer');
      expect(replay.ended).toBe(true);
      expect(BigInt(replay.batches.length)).toBe(subscriber.lastSequence + 1n);
      const late = new KvEventSubscriber(kvEndpoint);
      try {
        for (const batch of replay.batches) late.applyBatch(batch.payload);
        expect(late.prefixes()).toEqual(subscriber.prefixes());
      } finally {
        await late.close();
      }
      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(0);
    } finally {
      if (server.child.exitCode === null) server.child.kill('SIGKILL');
      await subscriber.close();
    }
  });

  it("takes vLLM's --kv-events-config JSON: events on the endpoint and topic it names; refused beside the single flags", async () => {
    const kvEndpoint = `tcp://127.0.0.1:${await freePort()}`;
    const subscriber = await KvEventSubscriber.bound(kvEndpoint);
    const port = await freePort();
    const config = { enable_kv_cache_events: true, publisher: 'zmq', endpoint: kvEndpoint, topic: 'kv@pod-7@tiny', hwm: 1000 };
    const server = spawnSluice(['serve', '--model-path', 'tiny', '--backend', 'ref', '--port', String(port), '--max-total-tokens', '4096', '--kv-events-block-size', '4', '--kv-events-config', JSON.stringify(config)]);
    try {
      const url = await waitForServing(server, 60_000);
      expect(server.stderr()).toContain(`KV events: ZeroMQ PUB on ${kvEndpoint}, topic kv@pod-7@tiny, blocks of 4 tokens`);
      await waitFor(async () => {
        await fetch(`${url}/flush_cache`, { method: 'POST' });
        await new Promise((resolve) => setTimeout(resolve, 50));
        return subscriber.batches > 0;
      }, 'the first event batch');
      const prompt = [3100, 3101, 3102, 3103, 3104];
      await json(fetch(`${url}/generate`, { method: 'POST', body: JSON.stringify({ input_ids: prompt, sampling_params: { max_new_tokens: 1, temperature: 0 } }) }));
      await waitFor(async () => subscriber.blocks.size === 1, 'one stored block');
      expect([...subscriber.topics]).toEqual(['kv@pod-7@tiny']);
      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(0);
    } finally {
      if (server.child.exitCode === null) server.child.kill('SIGKILL');
      await subscriber.close();
    }
    const both = spawnSluice(['serve', '--model-path', 'tiny', '--kv-events-endpoint', 'tcp://127.0.0.1:1', '--kv-events-config', '{"enable_kv_cache_events": true}']);
    expect(await both.exited).toBe(1);
    expect(both.stderr()).toMatch(/give --kv-events-config or the --kv-events-endpoint\/-topic\/-replay-endpoint flags, not both/);
  });

  it('refuses a non-positive block size, and a topic or replay endpoint without an endpoint', async () => {
    const badSize = spawnSluice(['serve', '--model-path', 'tiny', '--kv-events-endpoint', 'tcp://127.0.0.1:1', '--kv-events-block-size', '0']);
    expect(await badSize.exited).toBe(1);
    expect(badSize.stderr()).toMatch(/--kv-events-block-size 0: give a positive number of tokens/);
    const topicOnly = spawnSluice(['serve', '--model-path', 'tiny', '--kv-events-topic', 'kv@x@y']);
    expect(await topicOnly.exited).toBe(1);
    expect(topicOnly.stderr()).toMatch(/--kv-events-topic needs --kv-events-endpoint/);
    const replayOnly = spawnSluice(['serve', '--model-path', 'tiny', '--kv-events-replay-endpoint', 'tcp://*:5558']);
    expect(await replayOnly.exited).toBe(1);
    expect(replayOnly.stderr()).toMatch(/--kv-events-replay-endpoint needs --kv-events-endpoint/);
  });
});
