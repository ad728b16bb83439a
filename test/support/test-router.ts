import { blockHash } from '../../src/engine/kv-events.js';
import type { KvEventSubscriber } from './kv-event-subscriber.js';

/** Statuses SGLang's model gateway (and llm-d's gateway) retry on another worker. */
export const retryableStatuses = new Set([408, 429, 500, 502, 503, 504]);

export interface Replica {
  url: string;
  events: KvEventSubscriber;
  /** Cleared when the replica failed a request: no more traffic. */
  up: boolean;
  inFlight: number;
}

export type RoutingPolicy = (replicas: Replica[], tokens: number[]) => Replica;

/** Cycles through the replicas that are up. */
export function roundRobin(): RoutingPolicy {
  let next = 0;
  return (replicas) => {
    const up = replicas.filter((r) => r.up);
    return up[next++ % up.length]!;
  };
}

/**
 * llm-d's precise prefix-cache scoring in miniature: hash the prompt's blocks as the replicas
 * do, and send the request where the longest run of leading blocks is already cached (known
 * from the replica's KV events alone); ties go to the replica with fewer requests in flight.
 */
export function longestCachedPrefix(blockSize: number): RoutingPolicy {
  return (replicas, tokens) => {
    const hashes: bigint[] = [];
    let parent: bigint | null = null;
    for (let end = blockSize; end <= tokens.length; end += blockSize) {
      parent = blockHash(parent, tokens.slice(end - blockSize, end));
      hashes.push(parent);
    }
    let best: Replica | null = null;
    let bestScore = -1;
    for (const replica of replicas) {
      if (!replica.up) continue;
      let score = 0;
      while (score < hashes.length && replica.events.blocks.has(hashes[score]!)) score++;
      if (score > bestScore || (score === bestScore && replica.inFlight < best!.inFlight)) {
        best = replica;
        bestScore = score;
      }
    }
    return best!;
  };
}

export interface RoutedResult {
  body: any;
  /** Failed tries before the one that answered: status (or 'connection') and replica. */
  failures: { replica: string; status: number | 'connection' }[];
}

/** Sends one /generate request through the policy; a retryable failure takes the replica out and tries another. */
export async function routeGenerate(replicas: Replica[], policy: RoutingPolicy, body: { input_ids: number[]; [key: string]: unknown }): Promise<RoutedResult> {
  const failures: RoutedResult['failures'] = [];
  for (;;) {
    if (!replicas.some((r) => r.up)) throw new Error('no replica left');
    const replica = policy(replicas, body.input_ids);
    replica.inFlight++;
    let status: number | 'connection';
    try {
      const response = await fetch(`${replica.url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (response.status === 200) return { body: await response.json(), failures };
      status = response.status;
      await response.arrayBuffer();
      if (!retryableStatuses.has(status)) throw new Error(`${replica.url} answered ${status}, which a router does not retry`);
    } catch (e) {
      if (!(e instanceof TypeError)) throw e; // fetch failed: refused or reset
      status = 'connection';
    } finally {
      replica.inFlight--;
    }
    replica.up = false;
    failures.push({ replica: replica.url, status });
  }
}
