import { pythonFloat } from '../report.js';
import type { EngineResult, RunResult, SuiteResults } from './suite.js';

/** A table as header plus rows of cells; `ratio` marks the ratio rows. */
export interface Table {
  header: string[];
  rows: { cells: string[]; ratio: boolean }[];
}

export const onlineHeader = ['RPS', 'Num prompts', 'Engine', 'Median E2E Latency', 'Median TTFT', 'Median TPOT', 'Median ITL'];
export const offlineHeader = ['RPS', 'Num prompts', 'Engine', 'Request throughput', 'Output token throughput'];

type Pick = (run: RunResult) => number | undefined;
const onlineColumns: Pick[] = [
  (r) => r.metrics?.medianE2eLatencyMs,
  (r) => r.metrics?.medianTtftMs,
  (r) => r.metrics?.medianTpotMs,
  (r) => r.metrics?.medianItlMs,
];
const offlineColumns: Pick[] = [(r) => r.metrics?.requestThroughput, (r) => r.metrics?.outputThroughput];

/** The seed's online table: per rate, one row per engine, then each other engine's ratio to the first. */
export function onlineTable(results: SuiteResults): Table {
  return buildTable(results, 'online', onlineHeader, onlineColumns);
}

/** The seed's offline table (rate inf). */
export function offlineTable(results: SuiteResults): Table {
  return buildTable(results, 'offline', offlineHeader, offlineColumns);
}

function buildTable(results: SuiteResults, kind: 'online' | 'offline', header: string[], columns: Pick[]): Table {
  const rows: Table['rows'] = [];
  const runIndexes = results.runs.map((r, i) => [r, i] as const).filter(([r]) => r.kind === kind);
  for (const [suiteRun, index] of runIndexes) {
    const rate = pythonFloat(suiteRun.requestRate).replace(/\.0$/, '');
    const prefix = [rate, String(suiteRun.numPrompts)];
    const runOf = (engine: EngineResult) => engine.runs[index];
    for (const engine of results.engines) {
      const run = runOf(engine);
      rows.push({ cells: [...prefix, engine.name, ...columns.map((pick) => cell(run ? pick(run) : undefined))], ratio: false });
    }
    const [first, ...others] = results.engines;
    for (const other of first ? others : []) {
      const cells = columns.map((pick) => {
        const a = runOf(other) && pick(runOf(other)!);
        const b = runOf(first!) && pick(runOf(first!)!);
        return a !== undefined && b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}x` : '-';
      });
      rows.push({ cells: [...prefix, `${other.name} / ${first!.name}`, ...cells], ratio: true });
    }
  }
  return { header, rows };
}

function cell(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? '-' : value.toFixed(2);
}

/** A Markdown table with padded columns, like the seed's. */
export function formatMarkdownTable(table: Table): string {
  const widths = table.header.map((h, c) => Math.max(h.length, ...table.rows.map((r) => r.cells[c]!.length)));
  const line = (cells: string[]) => `| ${cells.map((v, c) => v.padEnd(widths[c]!)).join(' | ')} |`;
  return [line(table.header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...table.rows.map((r) => line(r.cells))].join('\n') + '\n';
}
