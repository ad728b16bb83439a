import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import type { SuiteResults } from '../../src/bench/compare/suite.js';
import { synthesizeShareGpt } from '../../src/bench/synth-sharegpt.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { freePort, runSluice, sluiceBin } from '../support/sluice-process.js';

const chromiumPath = '/usr/bin/chromium';
const chromiumFlags = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

// `sluice compare` at a small scale against two sluice servers it launches itself (radix cache on
// and off), then the HTML report opened in headless Chromium.
describe('sluice compare', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-e2e-compare-'));
  const dataset = join(dir, 'sharegpt-synth.json');
  const outputDir = join(dir, 'out');
  let stdout = '';

  beforeAll(async () => {
    // The report test needs Debian's chromium, which `npm run setup:test-env` (the first step of npm test) installs.
    if (!existsSync(chromiumPath)) throw new Error(`${chromiumPath} is missing: run npm run setup:test-env (installs Debian's chromium)`);
    writeFileSync(dataset, JSON.stringify(synthesizeShareGpt(Tokenizer.llama3(), { numConversations: 30, seed: 4 })));
    const [portA, portB] = [await freePort(), await freePort()];
    const serve = (port: number, extra = '') => `exec "${process.execPath}" "${sluiceBin}" serve --model-path tiny --backend ref --port ${port}${extra}`;
    const result = await runSluice(
      [
        'compare',
        '--engine', `radix=http://127.0.0.1:${portA}`,
        '--launch', `radix=${serve(portA)}`,
        '--engine', `no-radix=http://127.0.0.1:${portB}`,
        '--launch', `no-radix=${serve(portB, ' --disable-radix-cache')}`,
        '--scale', '0.002',
        '--dataset-path', dataset,
        '--sharegpt-output-len', '4',
        '--tokenizer', 'tiny',
        '--launch-timeout', '120',
        '--output-dir', outputDir,
      ],
      240_000,
    );
    expect(result.code, result.stderr + result.stdout).toBe(0);
    stdout = result.stdout;
  }, 300_000);

  it("prints the seed's online and offline tables with both engines and their ratio", () => {
    expect(stdout).toMatch(/\| RPS \| Num prompts \| Engine +\| Median E2E Latency \| Median TTFT \| Median TPOT \| Median ITL \|/);
    expect(stdout).toMatch(/\| RPS \| Num prompts \| Engine +\| Request throughput \| Output token throughput \|/);
    for (const [rate, prompts] of [['4', '2'], ['8', '5'], ['inf', '10']]) {
      for (const engine of ['radix', 'no-radix', 'no-radix / radix']) {
        expect(stdout).toMatch(new RegExp(`\\| ${rate} +\\| ${prompts} +\\| ${engine.replace('/', '\\/')} +\\| \\d`));
      }
    }
  });

  it('writes every run to results.json, one engine at a time', () => {
    const results: SuiteResults = JSON.parse(readFileSync(join(outputDir, 'results.json'), 'utf8'));
    expect(results.engines.map((e) => e.name)).toEqual(['radix', 'no-radix']);
    for (const engine of results.engines) {
      expect(engine.error).toBeUndefined();
      expect(engine.model).toBe('tiny');
      expect(engine.runs.map((r) => [r.requestRate, r.numPrompts])).toEqual([[4, 2], [8, 5], ['Infinity', 10]]);
      for (const run of engine.runs) {
        expect(run.metrics!.completed).toBe(run.numPrompts);
        expect(run.failures).toEqual({});
        expect(run.distributions!.e2e).toHaveLength(101);
      }
    }
    // The first engine was stopped before the second started: both used their own port, and
    // the log shows the stop before the next launch.
    expect(stdout.indexOf('[radix] stopping')).toBeLessThan(stdout.indexOf('[no-radix] launching'));
  });

  it('the HTML report renders its charts in headless Chromium with no console errors and no network', async () => {
    const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumFlags });
    try {
      const page = await browser.newPage();
      const problems: string[] = [];
      const requests: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('request', (r) => requests.push(r.url()));
      await page.goto(`file://${join(outputDir, 'report.html')}`, { waitUntil: 'load' });
      const charts = await page.$$eval('svg.chart', (svgs) =>
        svgs.map((svg) => {
          const box = svg.getBoundingClientRect();
          const marks = [...svg.querySelectorAll('polyline.series, rect.bar')].map((m) => (m as unknown as { getBBox(): { width: number; height: number } }).getBBox());
          return { width: box.width, height: box.height, marks: marks.length, drawn: marks.filter((b) => b.width > 0 || b.height > 0).length };
        }),
      );
      expect(charts).toHaveLength(4 + 4 + 6);
      for (const chart of charts) {
        expect(chart.width).toBeGreaterThan(100);
        expect(chart.height).toBeGreaterThan(100);
        expect(chart.marks).toBeGreaterThanOrEqual(2);
        expect(chart.drawn).toBe(chart.marks);
      }
      expect(await page.locator('table').count()).toBeGreaterThanOrEqual(2);
      expect(await page.textContent('body')).toContain('No failed requests.');
      expect(problems).toEqual([]);
      expect(requests.every((url) => url.startsWith('file://'))).toBe(true);
    } finally {
      await browser.close();
    }
  });
});
