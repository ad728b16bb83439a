import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { UserError } from '../../errors.js';
import { join, resolve } from 'node:path';
import type { ClientBackend } from '../client-backends.js';
import type { DatasetOptions } from '../datasets.js';
import { formatFailures, formatResultTable } from '../report.js';
import { shareGptMissingMessage } from '../sharegpt.js';
import { resolveTokenizer } from '../tokenizer.js';
import { parseEngines } from './engines.js';
import { renderHtmlReport } from './html-report.js';
import { runSuite, type SuiteResults } from './suite.js';
import { formatMarkdownTable, offlineTable, onlineTable } from './tables.js';

/** The dataset options of `sluice bench` but the prompt count, which the suite's runs set (times --scale). */
export interface CompareOptions extends Omit<DatasetOptions, 'numPrompts'> {
  engine: string[];
  launch: string[];
  scale: number;
  backend: ClientBackend;
  tokenizer: string;
  disableStream?: boolean;
  maxConcurrency?: number;
  requestTimeout: number;
  stallTimeout: number;
  launchTimeout: number;
  outputDir: string;
}

/** `sluice compare`: the seed's suite against each engine, then the seed's tables, results JSON and an HTML report. */
export async function compareCommand(options: CompareOptions, out: (text: string) => void = (t) => process.stdout.write(t)): Promise<SuiteResults> {
  const log = (line: string) => out(`${line}\n`);
  const engines = parseEngines(options.engine, options.launch);
  if (options.datasetName === 'sharegpt' && (options.datasetPath === undefined || !existsSync(options.datasetPath))) {
    throw new UserError(shareGptMissingMessage(options.datasetPath));
  }
  const tokenizer = resolveTokenizer(options.tokenizer, log);
  const results = await runSuite(
    engines,
    {
      backend: options.backend,
      scale: options.scale,
      datasetName: options.datasetName,
      datasetPath: options.datasetPath,
      sharegptOutputLen: options.sharegptOutputLen,
      randomInputLen: options.randomInputLen,
      randomOutputLen: options.randomOutputLen,
      randomRangeRatio: options.randomRangeRatio,
      seed: options.seed,
      tokenizer: options.tokenizer,
      stream: !options.disableStream,
      maxConcurrency: options.maxConcurrency,
      requestTimeoutS: options.requestTimeout,
      stallTimeoutS: options.stallTimeout,
      launchTimeoutS: options.launchTimeout,
    },
    {
      tokenizer,
      log,
      onRun: (engine, run) => {
        if (run.error) log(`[${engine.name}] run failed: ${run.error}`);
        else out(formatResultTable(`${engine.name} (${options.backend})`, run.requestRate, run.durationS! * 1000, run.metrics!) + formatFailures(run.failures));
      },
    },
  );
  out(`\n## Online benchmark results\n\n${formatMarkdownTable(onlineTable(results))}`);
  out(`\n## Offline benchmark results\n\n${formatMarkdownTable(offlineTable(results))}\n`);
  for (const engine of results.engines) if (engine.error) log(`engine ${engine.name} was not benchmarked: ${engine.error.split('\n')[0]}`);
  const dir = resolve(options.outputDir);
  mkdirSync(dir, { recursive: true });
  const jsonFile = join(dir, 'results.json');
  const htmlFile = join(dir, 'report.html');
  writeFileSync(jsonFile, `${JSON.stringify(results, (_, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v), 2)}\n`);
  writeFileSync(htmlFile, renderHtmlReport(results));
  log(`results: ${jsonFile}`);
  log(`report: ${htmlFile}`);
  return results;
}
