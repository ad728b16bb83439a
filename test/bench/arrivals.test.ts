import { afterAll, describe, expect, it } from 'vitest';
import { arrivalGaps } from '../../src/bench/arrivals.js';
import { arrivalSeed, runBenchmark } from '../../src/bench/runner.js';
import { SeededRandom } from '../../src/bench/seeded-random.js';
import type { BenchRequest } from '../../src/bench/types.js';
import { startFakeServer, type FakeServer } from '../support/fake-openai-server.js';
import { wordTokenizer } from '../support/word-tokenizer.js';

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

describe('Poisson arrivals', () => {
  it('draws exponential gaps with mean 1/rate, reproducibly from the seed', () => {
    const gaps = arrivalGaps(20000, 8, new SeededRandom(1));
    expect(mean(gaps)).toBeGreaterThan(125 * 0.97);
    expect(mean(gaps)).toBeLessThan(125 * 1.03);
    // Exponential: the standard deviation equals the mean, and about e^-1 of gaps exceed the mean.
    const sd = Math.sqrt(mean(gaps.map((g) => (g - 125) ** 2)));
    expect(sd / 125).toBeGreaterThan(0.95);
    expect(sd / 125).toBeLessThan(1.05);
    expect(gaps.filter((g) => g > 125).length / gaps.length).toBeCloseTo(Math.exp(-1), 1);
    expect(arrivalGaps(100, 8, new SeededRandom(1))).toEqual(gaps.slice(0, 100));
    expect(arrivalGaps(100, 8, new SeededRandom(2))).not.toEqual(gaps.slice(0, 100));
  });

  it('sends everything at once at rate inf', () => {
    expect(arrivalGaps(50, Infinity, new SeededRandom(1))).toEqual(new Array(50).fill(0));
  });

  describe('against a server', () => {
    const servers: FakeServer[] = [];
    afterAll(async () => {
      for (const server of servers) await server.close();
    });

    const requests = (n: number): BenchRequest[] => Array.from({ length: n }, (_, i) => ({ prompt: `prompt ${i}`, promptLen: 3, outputLen: 4 }));
    const run = (server: FakeServer, count: number, requestRate: number) =>
      runBenchmark({
        backend: 'sluice',
        baseUrl: server.url,
        model: 'fake-model',
        tokenizer: wordTokenizer,
        requests: requests(count),
        requestRate,
        seed: 1,
        stream: true,
        ignoreEos: true,
        extraBody: {},
        timeoutMs: 10_000,
        stallTimeoutMs: 5_000,
        showProgress: false,
        log: () => {},
      });

    it('a seeded run arrives at the requested mean rate', async () => {
      const server = await startFakeServer({ tokenDelayMs: 2 });
      servers.push(server);
      const count = 300;
      const rate = 100;
      await run(server, count, rate);
      const arrivals = server.received.filter((r) => r.method === 'POST').slice(1).map((r) => r.at); // after the warm-up
      expect(arrivals).toHaveLength(count);
      // The run sleeps the seeded gaps after each send but the last; their mean rate is the requested one...
      const drawnSpan = arrivalGaps(count, rate, new SeededRandom(arrivalSeed(1)))
        .slice(0, count - 1)
        .reduce((a, b) => a + b, 0);
      const drawnRate = (count - 1) / (drawnSpan / 1000);
      expect(drawnRate).toBeGreaterThan(rate * 0.85);
      expect(drawnRate).toBeLessThan(rate * 1.15);
      // ...and the observed arrivals follow them: never early, and late only by timer overshoot
      // (allowed generously: a loaded machine overshoots short sleeps by milliseconds).
      const observedRate = (count - 1) / ((arrivals.at(-1)! - arrivals[0]!) / 1000);
      expect(observedRate).toBeLessThan(drawnRate * 1.03);
      expect(observedRate).toBeGreaterThan(drawnRate * 0.5);
    });

    it('at rate inf every request is in flight at once', async () => {
      // Requests after the warm-up are held until all 60 have arrived: a client that did not send
      // them all at once would stall and its requests would fail.
      const server = await startFakeServer({ tokenDelayMs: 2, barrier: { from: 2, until: 61 } });
      servers.push(server);
      const { results, failures } = await run(server, 60, Infinity);
      expect(failures).toEqual({});
      expect(results.filter((r) => r.success)).toHaveLength(60);
    });
  });
});
