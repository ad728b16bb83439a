import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/bench/seeded-random.js';
import type { RunningServer } from '../../src/server/index.js';
import { KvEventSubscriber } from '../support/kv-event-subscriber.js';
import { startTestServer, waitFor } from '../support/test-server.js';
import { longestCachedPrefix, roundRobin, routeGenerate, type Replica, type RoutingPolicy } from '../support/test-router.js';

// Three replicas on loopback, each with room for about a third of the shared prefixes.
const replicaCount = 3;
const blockSize = 16;
const prefixCount = 9;
const prefixLength = 256;
const kvTokensPerReplica = 1280;

let servers: RunningServer[] = [];
let replicas: Replica[] = [];

beforeAll(async () => {
  servers = await Promise.all(
    Array.from({ length: replicaCount }, () =>
      startTestServer({ instant: true, kvEvents: { endpoint: 'tcp://127.0.0.1:*', blockSize }, engine: { pageSize: 16, maxTotalTokens: kvTokensPerReplica } }),
    ),
  );
  replicas = servers.map((s) => ({ url: s.url, events: new KvEventSubscriber(s.context.kvEvents!.endpoint), up: true, inFlight: 0 }));
  // Each subscription must reach its publisher before the run: flush until an event gets through.
  for (const [i, replica] of replicas.entries()) {
    await waitFor(async () => {
      await fetch(`${servers[i]!.url}/flush_cache`, { method: 'POST' });
      await new Promise((resolve) => setTimeout(resolve, 30));
      return replica.events.batches > 0;
    }, 'a KV event subscription');
  }
});

afterAll(async () => {
  for (const replica of replicas) await replica.events.close();
  await Promise.all(servers.map((s) => s.shutdown(1000)));
});

interface RunResult {
  hitRate: number;
  failures: { replica: string; status: number | 'connection' }[];
  completed: number;
}

/** A prefix-heavy workload (shared system prompts, short distinct tails) through one policy. */
async function run(policy: RoutingPolicy, seed: number, requests: number, midRun?: () => Promise<void>): Promise<RunResult> {
  const rng = new SeededRandom(seed);
  const prefixRng = new SeededRandom(7);
  const prefixes = Array.from({ length: prefixCount }, () => Array.from({ length: prefixLength }, () => 1000 + prefixRng.integer(0, 20000)));
  const bodies = Array.from({ length: requests }, () => {
    const tail = Array.from({ length: rng.integer(4, 24) }, () => 1000 + rng.integer(0, 20000));
    return { input_ids: [...prefixes[rng.integer(0, prefixCount - 1)]!, ...tail], sampling_params: { max_new_tokens: rng.integer(8, 48), temperature: 0, ignore_eos: true } };
  });
  let cached = 0;
  let prompt = 0;
  let completed = 0;
  const failures: RunResult['failures'] = [];
  let next = 0;
  const worker = async () => {
    while (next < bodies.length) {
      const body = bodies[next++]!;
      if (midRun && next === Math.floor(bodies.length / 2)) await midRun();
      const result = await routeGenerate(replicas, policy, body);
      failures.push(...result.failures);
      expect(result.body.meta_info.finish_reason).toEqual({ type: 'length', length: body.sampling_params.max_new_tokens });
      expect(result.body.output_ids).toHaveLength(body.sampling_params.max_new_tokens);
      cached += result.body.meta_info.cached_tokens;
      prompt += result.body.meta_info.prompt_tokens;
      completed++;
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  return { hitRate: cached / prompt, failures, completed };
}

async function flushAll(): Promise<void> {
  for (const [i, replica] of replicas.entries()) {
    if (!replica.up) continue;
    await waitFor(async () => (await fetch(`${servers[i]!.url}/flush_cache`, { method: 'POST' })).status === 200, 'an idle replica');
  }
  await waitFor(async () => replicas.every((r) => !r.up || r.events.blocks.size === 0), 'the flushes to be published');
}

describe('several replicas behind a router that reads their KV events', () => {
  it('routing by longest cached prefix hits the cache more than round-robin; stopping a replica mid-run loses nothing', async () => {
    const roundRobinRun = await run(roundRobin(), 1, 180);
    await flushAll();
    const stopped = servers[2]!;
    const routedRun = await run(longestCachedPrefix(blockSize), 1, 180, async () => {
      // Abrupt stop: no drain time, so requests in flight there are cut off.
      void stopped.shutdown(0);
    });
    const load = await (await fetch(`${servers[0]!.url}/get_load`)).json();
    console.log(
      `prefix-cache hit rate, ${replicaCount} replicas, ${prefixCount} prefixes of ${prefixLength} tokens: ` +
        `round-robin ${(100 * roundRobinRun.hitRate).toFixed(1)}%, routed by KV events ${(100 * routedRun.hitRate).toFixed(1)}% ` +
        `(one replica stopped mid-run; ${routedRun.failures.length} tries failed over: ${JSON.stringify(routedRun.failures.map((f) => f.status))}); replica 0 load ${JSON.stringify(load)}`,
    );
    expect(roundRobinRun.completed).toBe(180);
    expect(routedRun.completed).toBe(180);
    expect(routedRun.hitRate).toBeGreaterThan(roundRobinRun.hitRate);
    // The stopped replica's failures were all ones a router retries; the others never failed.
    expect(routedRun.failures.length).toBeGreaterThan(0);
    for (const failure of routedRun.failures) {
      expect(failure.replica).toBe(stopped.url);
      expect([503, 'connection']).toContain(failure.status);
    }
    expect(replicas[2]!.up).toBe(false);
    expect(replicas[0]!.up && replicas[1]!.up).toBe(true);
  });
});
