import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseEngines } from '../../src/bench/compare/engines.js';
import { renderHtmlReport } from '../../src/bench/compare/html-report.js';
import { runSuite, type SuiteResults, type SuiteSettings } from '../../src/bench/compare/suite.js';
import { UserError } from '../../src/errors.js';
import { startFakeServer, type FakeServer } from '../support/fake-openai-server.js';
import { wordTokenizer, words } from '../support/word-tokenizer.js';

describe('compare suite with misbehaving engines', () => {
  let flaky: FakeServer;
  let results: SuiteResults;
  const dir = mkdtempSync(join(tmpdir(), 'sluice-suite-'));

  beforeAll(async () => {
    // Every 5th request errors, every 7th drops its connection, every 11th stalls; the three
    // warm-up requests (numbers 1, 14 and 39: each run sends 1 + 12, 1 + 24, 1 + 50) go through.
    const warmUps = new Set([1, 14, 39]);
    flaky = await startFakeServer({
      tokenDelayMs: 1,
      sabotage: (n) => (warmUps.has(n) ? null : n % 5 === 0 ? 'error' : n % 7 === 0 ? 'drop' : n % 11 === 0 ? 'stall' : null),
    });
    const dataset = join(dir, 'data.json');
    const conversations = Array.from({ length: 80 }, (_, i) => ({
      id: `t-${i}`,
      conversations: [
        { from: 'human', value: words(5 + (i % 9), 'q') },
        { from: 'gpt', value: words(4 + (i % 5), 'a') },
      ],
    }));
    writeFileSync(dataset, JSON.stringify(conversations));
    const settings: SuiteSettings = {
      backend: 'sluice',
      scale: 0.01,
      tokenizer: 'words',
      stream: true,
      requestTimeoutS: 20,
      stallTimeoutS: 0.5,
      launchTimeoutS: 20,
      datasetName: 'sharegpt',
      datasetPath: dataset,
      randomInputLen: 1,
      randomOutputLen: 1,
      randomRangeRatio: 0,
      seed: 1,
    };
    const engines = parseEngines(
      ['flaky=' + flaky.url, 'broken=http://127.0.0.1:1'],
      ["broken=echo 'cannot load the model: out of memory' >&2; exit 3"],
    );
    results = await runSuite(engines, settings, { tokenizer: wordTokenizer, log: () => {} });
  }, 60_000);
  afterAll(async () => {
    await flaky.close();
  });

  it('counts failed requests by reason with an example of each, and finishes every run', () => {
    const [engine] = results.engines;
    expect(engine!.error).toBeUndefined();
    expect(engine!.runs.map((r) => r.numPrompts)).toEqual([12, 24, 50]);
    const total: Record<string, number> = {};
    for (const run of engine!.runs) {
      expect(run.metrics!.completed + run.metrics!.failed).toBe(run.numPrompts);
      for (const [reason, n] of Object.entries(run.failures)) total[reason] = (total[reason] ?? 0) + n;
      for (const reason of Object.keys(run.failures)) expect(run.failureExamples[reason]!.length).toBeGreaterThan(0);
    }
    expect(Object.keys(total).sort()).toEqual(['HTTP 500', 'connection dropped', 'stalled']);
    const html = renderHtmlReport(results);
    expect(html).toMatch(/\d+ x HTTP 500/);
    expect(html).toMatch(/\d+ x connection dropped/);
    expect(html).toMatch(/\d+ x stalled/);
  });

  it('reports an engine whose launch command dies, with its output, and goes on', () => {
    const broken = results.engines[1]!;
    expect(broken.runs).toEqual([]);
    expect(broken.error).toMatch(/exited \(code 3\)/);
    expect(broken.error).toContain('cannot load the model: out of memory');
    expect(renderHtmlReport(results)).toContain('engine not run');
  });
});

describe('engine options', () => {
  it('parses --engine and --launch pairs and rejects bad ones', () => {
    expect(parseEngines(['a=http://h:1/', 'b=http://h:2'], ['b=run b --flag=x'])).toEqual([
      { name: 'a', url: 'http://h:1' },
      { name: 'b', url: 'http://h:2', launch: 'run b --flag=x' },
    ]);
    expect(() => parseEngines([], [])).toThrow(UserError);
    expect(() => parseEngines(['a'], [])).toThrow(/expected name=url/);
    expect(() => parseEngines(['a=ftp://h'], [])).toThrow(/not an http/);
    expect(() => parseEngines(['a=http://h', 'a=http://g'], [])).toThrow(/twice/);
    expect(() => parseEngines(['a=http://h'], ['b=cmd'])).toThrow(/no --engine named b/);
  });
});
