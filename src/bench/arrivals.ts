import { setTimeout as sleep } from 'node:timers/promises';
import type { SeededRandom } from './seeded-random.js';

/**
 * The gap (ms) to wait after sending each request: bench_serving's Poisson process. The first
 * request goes at once; after each send, an exponential interval with mean 1/rate. An infinite
 * rate sends everything at once.
 */
export function arrivalGaps(count: number, requestRate: number, random: SeededRandom): number[] {
  if (!(requestRate > 0)) throw new Error(`request rate must be positive, got ${requestRate}`);
  if (requestRate === Infinity) return new Array<number>(count).fill(0);
  return Array.from({ length: count }, () => random.exponential(1000 / requestRate));
}

/** Yields the items in order, sleeping each item's gap after yielding it. */
export async function* paced<T>(items: readonly T[], gapsMs: readonly number[]): AsyncGenerator<T> {
  for (let i = 0; i < items.length; i++) {
    yield items[i]!;
    if (gapsMs[i]! > 0) await sleep(gapsMs[i]!);
  }
}
