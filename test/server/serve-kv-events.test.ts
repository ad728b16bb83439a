import { describe, expect, it } from 'vitest';
import { KvEventSubscriber } from '../support/kv-event-subscriber.js';
import { freePort, spawnSluice, waitForServing } from '../support/sluice-process.js';
import { json, waitFor } from '../support/test-server.js';

describe('sluice serve --kv-events-endpoint', () => {
  it('connects its PUB socket to a bound subscriber (llm-d layout), topic kv@<host>:<port>@<model>, blocks of --kv-events-block-size', async () => {
    const kvEndpoint = `tcp://127.0.0.1:${await freePort()}`;
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
    ]);
    try {
      const url = await waitForServing(server, 60_000);
      expect(server.stderr()).toMatch(new RegExp(`KV events: ZeroMQ PUB on ${kvEndpoint}, topic kv@127\\.0\\.0\\.1:${port}@tiny-served, blocks of 4 tokens`));
      const info = await json(fetch(`${url}/server_info`));
      expect(info.kv_events_config).toEqual({ publisher: 'zmq', endpoint: kvEndpoint, topic: `kv@127.0.0.1:${port}@tiny-served`, blockSize: 4 });
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
      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(0);
    } finally {
      if (server.child.exitCode === null) server.child.kill('SIGKILL');
      await subscriber.close();
    }
  });

  it('refuses a non-positive block size and a topic without an endpoint', async () => {
    const badSize = spawnSluice(['serve', '--model-path', 'tiny', '--kv-events-endpoint', 'tcp://127.0.0.1:1', '--kv-events-block-size', '0']);
    expect(await badSize.exited).toBe(1);
    expect(badSize.stderr()).toMatch(/--kv-events-block-size 0: give a positive number of tokens/);
    const topicOnly = spawnSluice(['serve', '--model-path', 'tiny', '--kv-events-topic', 'kv@x@y']);
    expect(await topicOnly.exited).toBe(1);
    expect(topicOnly.stderr()).toMatch(/--kv-events-topic needs --kv-events-endpoint/);
  });
});
