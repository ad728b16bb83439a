import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { benchCommand, type BenchOptions } from '../../src/bench/bench-command.js';
import { jsonlFields } from '../../src/bench/report.js';
import { synthesizeShareGpt } from '../../src/bench/synth-sharegpt.js';
import { UserError } from '../../src/errors.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { runSluice, startSluiceServer, type SluiceServer } from '../support/sluice-process.js';

// End to end: `sluice serve` (tiny preset, reference backend) and `sluice bench` against it.
describe('sluice bench against sluice serve', () => {
  let server: SluiceServer;
  const dir = mkdtempSync(join(tmpdir(), 'sluice-e2e-bench-'));
  const dataset = join(dir, 'sharegpt-synth.json');

  beforeAll(async () => {
    const starting = startSluiceServer(['--backend', 'ref']);
    writeFileSync(dataset, JSON.stringify(synthesizeShareGpt(Tokenizer.llama3(), { numConversations: 40, seed: 2 })));
    server = await starting;
  });
  afterAll(async () => {
    await server?.stop();
  });

  const options = (overrides: Partial<BenchOptions>): BenchOptions => ({
    backend: 'sluice',
    baseUrl: server.url,
    host: '0.0.0.0',
    datasetName: 'random',
    numPrompts: 4,
    randomInputLen: 24,
    randomOutputLen: 6,
    randomRangeRatio: 0.5,
    requestRate: 8,
    seed: 1,
    requestRateRange: '2,34,2',
    disableTqdm: true,
    requestTimeout: 120,
    stallTimeout: 60,
    ...overrides,
  });

  const cases: [string, Partial<BenchOptions>][] = [
    ['random, streaming', { datasetName: 'random' }],
    ['random, --disable-stream', { datasetName: 'random', disableStream: true }],
    ['synthetic ShareGPT, streaming', { datasetName: 'sharegpt', datasetPath: dataset, sharegptOutputLen: 5, requestRate: Infinity }],
    ['synthetic ShareGPT, --disable-stream', { datasetName: 'sharegpt', datasetPath: dataset, sharegptOutputLen: 5, disableStream: true }],
  ];
  for (const [name, overrides] of cases) {
    it(`${name}: prints the table and appends JSONL with every field`, async () => {
      const outputFile = join(dir, `${name.replace(/\W+/g, '-')}.jsonl`);
      let printed = '';
      const [run] = await benchCommand(options({ ...overrides, outputFile }), (text) => (printed += text));
      expect(printed).toContain('============ Serving Benchmark Result ============');
      expect(printed).toContain('Successful requests:                     4');
      expect(printed).toMatch(/Median TTFT \(ms\):\s+\d+\.\d\d/);
      expect(run!.failures).toEqual({});
      const lines = readFileSync(outputFile, 'utf8').trim().split('\n');
      expect(lines).toHaveLength(1);
      const record = JSON.parse(lines[0]!);
      expect(Object.keys(record)).toEqual([...jsonlFields]);
      expect(record.completed).toBe(4);
      expect(record.backend).toBe('sluice');
      expect(record.dataset_name).toBe(overrides.datasetName);
      expect(record.total_output_tokens).toBe(run!.results.reduce((a, r) => a + r.outputLen, 0));
      expect(record.total_output_tokens_retokenized).toBeGreaterThan(0);
      expect(record.median_e2e_latency_ms).toBeGreaterThan(0);
      expect(record.output_throughput).toBeGreaterThan(0);
      expect(record.duration).toBeGreaterThan(0);
      if (overrides.disableStream) {
        expect(record.median_itl_ms).toBe(0);
        for (const r of run!.results) expect(r.ttft).toBe(r.latency);
      } else {
        expect(record.median_itl_ms).toBeGreaterThan(0);
        // ignore_eos: every request streams exactly its max_tokens chunks.
        for (const r of run!.results) expect(r.itl).toHaveLength(r.outputLen - 1);
      }
    });
  }

  it('the sluice bench command runs end to end and reads the model from /v1/models', async () => {
    const outputFile = join(dir, 'cli.jsonl');
    const details = join(dir, 'details.jsonl');
    const { code, stdout, stderr } = await runSluice([
      'bench', '--backend', 'sluice', '--base-url', server.url, '--dataset-name', 'sharegpt', '--dataset-path', dataset,
      '--num-prompts', '3', '--sharegpt-output-len', '4', '--request-rate', '10', '--output-file', outputFile, '--output-details', details,
    ]);
    expect(code, stderr).toBe(0);
    expect(stdout).toContain('Backend:                                 sluice');
    expect(stdout).toContain('Traffic request rate:                    10.0');
    expect(JSON.parse(readFileSync(outputFile, 'utf8')).completed).toBe(3);
    const perRequest = readFileSync(details, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(perRequest).toHaveLength(3);
    expect(perRequest.every((r) => r.success && r.itl_ms.length === 3)).toBe(true);
  });

  it('--dataset-name sharegpt without a usable file says where to get ShareGPT', async () => {
    for (const datasetPath of [undefined, join(dir, 'missing.json')]) {
      const run = benchCommand(options({ datasetName: 'sharegpt', datasetPath }), () => {});
      await expect(run).rejects.toThrow(UserError);
      await expect(run).rejects.toThrow(/ShareGPT_V3_unfiltered_cleaned_split\.json.*anon8231489123\/ShareGPT_Vicuna_unfiltered.*sluice dataset synth-sharegpt/);
    }
  });
});
