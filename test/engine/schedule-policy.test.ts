import { describe, expect, it } from 'vitest';
import { LlmEngine } from '../../src/engine/engine.js';
import { collect, model, quiet } from '../support/engine-fixtures.js';
import { HashBackend } from '../support/hash-backend.js';

/** The order in which two queued requests start, behind a running one, under each policy. */
async function startOrder(schedulePolicy: 'lpm' | 'fcfs', disableRadixCache = false): Promise<string[]> {
  const engine = await LlmEngine.create(model, new HashBackend(), { maxTotalTokens: 256, maxRunningRequests: 1, schedulePolicy, disableRadixCache, logger: quiet });
  const cached = Array.from({ length: 40 }, (_, i) => 2000 + i);
  await collect(engine.generate({ promptTokenIds: cached, params: { maxNewTokens: 1 } }));
  const order: string[] = [];
  const run = async (stream: AsyncIterable<unknown>, id: string) => {
    for await (const _ of stream) if (!order.includes(id)) order.push(id);
  };
  const params = { maxNewTokens: 3, ignoreEos: true };
  const running = engine.generate({ promptTokenIds: [5, 6, 7], params })[Symbol.asyncIterator]();
  await running.next(); // admitted: it holds the only running slot
  order.push('running');
  const rest = [run({ [Symbol.asyncIterator]: () => running }, 'running')];
  rest.push(run(engine.generate({ promptTokenIds: [9, 9, 9, 9], params }), 'unrelated'));
  rest.push(run(engine.generate({ promptTokenIds: [...cached, 1, 2], params }), 'sharing'));
  await Promise.all(rest);
  await engine.close();
  return order;
}

describe('schedule policies', () => {
  it('lpm starts the request with the longest cached prefix first', async () => {
    expect(await startOrder('lpm')).toEqual(['running', 'sharing', 'unrelated']);
  });

  it('fcfs starts requests in arrival order', async () => {
    expect(await startOrder('fcfs')).toEqual(['running', 'unrelated', 'sharing']);
  });

  it('lpm falls back to fcfs without the radix cache', async () => {
    expect(await startOrder('lpm', true)).toEqual(['running', 'unrelated', 'sharing']);
  });
});
