import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { benchCommand, parseRequestRateRange, type BenchOptions } from '../../src/bench/bench-command.js';
import { UserError } from '../../src/errors.js';
import { startFakeServer, type FakeServer } from '../support/fake-openai-server.js';
import { words } from '../support/word-tokenizer.js';

describe('request rate ranges', () => {
  it('reads start,stop,step as a range and other lists as rates', () => {
    expect(parseRequestRateRange('2,34,2')).toEqual([2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32]);
    expect(parseRequestRateRange('1,2')).toEqual([1, 2]);
    expect(parseRequestRateRange('1,2,4,8')).toEqual([1, 2, 4, 8]);
    expect(() => parseRequestRateRange('1,x')).toThrow(UserError);
  });
});

describe('sluice bench options against a fake server', () => {
  let server: FakeServer;
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-cmd-'));
  const dataset = join(dir, 'data.json');
  beforeAll(async () => {
    server = await startFakeServer({ tokenDelayMs: 1 });
    const conversations = Array.from({ length: 20 }, (_, i) => ({
      id: `t-${i}`,
      conversations: [
        { from: 'human', value: `Question ${i}: ${words(6, 'why')}?` },
        { from: 'gpt', value: words(6, 'because') },
      ],
    }));
    writeFileSync(dataset, JSON.stringify(conversations));
  });
  afterAll(async () => {
    await server.close();
  });

  it('--multi runs every rate, appends one JSONL line each and writes per-request details', async () => {
    const outputFile = join(dir, 'multi.jsonl');
    const details = join(dir, 'details.jsonl');
    process.env.OPENAI_API_KEY = 'sk-bench';
    let printed = '';
    try {
      const options: BenchOptions = {
        backend: 'vllm',
        baseUrl: server.url,
        host: '0.0.0.0',
        datasetName: 'sharegpt',
        datasetPath: dataset,
        tokenizer: 'tiny',
        numPrompts: 3,
        randomInputLen: 1024,
        randomOutputLen: 128,
        randomRangeRatio: 0,
        requestRate: Infinity,
        seed: 1,
        multi: true,
        requestRateRange: '20,60,20',
        outputFile,
        outputDetails: details,
        extraRequestBody: '{"top_p": 0.5}',
        disableTqdm: true,
        requestTimeout: 10,
        stallTimeout: 5,
      };
      const runs = await benchCommand(options, (t) => (printed += t));
      expect(runs).toHaveLength(2);
    } finally {
      delete process.env.OPENAI_API_KEY;
    }
    expect(printed.match(/Serving Benchmark Result/g)).toHaveLength(2);
    expect(printed).toContain('Traffic request rate:                    20.0');
    expect(printed).toContain('Traffic request rate:                    40.0');
    const lines = readFileSync(outputFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.request_rate, l.completed, l.backend])).toEqual([
      [20, 3, 'vllm'],
      [40, 3, 'vllm'],
    ]);
    expect(readFileSync(details, 'utf8').trim().split('\n')).toHaveLength(6);
    const posts = server.received.filter((r) => r.method === 'POST');
    expect(posts).toHaveLength(2 * (1 + 3)); // a warm-up and 3 requests per rate
    for (const post of posts) {
      expect(post.headers.authorization).toBe('Bearer sk-bench');
      expect(post.body.model).toBe('fake-model'); // from GET /v1/models
      expect(post.body.top_p).toBe(0.5);
      expect(post.body.max_tokens).toBe(7); // 6 words + BOS
    }
  });

  it('rejects a bad --extra-request-body', async () => {
    const run = benchCommand(
      {
        backend: 'sluice',
        baseUrl: server.url,
        host: '0.0.0.0',
        datasetName: 'random',
        numPrompts: 1,
        randomInputLen: 4,
        randomOutputLen: 4,
        randomRangeRatio: 1,
        requestRate: Infinity,
        seed: 1,
        requestRateRange: '1,2',
        extraRequestBody: '[1, 2]',
        requestTimeout: 10,
        stallTimeout: 5,
      },
      () => {},
    );
    await expect(run).rejects.toThrow(/--extra-request-body must be a JSON object/);
  });
});
