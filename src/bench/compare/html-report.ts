import type { BenchmarkMetrics } from '../metrics.js';
import { pythonFloat } from '../report.js';
import type { Distributions, EngineResult, SuiteResults } from './suite.js';
import { barChart, cdfChart, escapeHtml, palette, type Series } from './svg-charts.js';
import { offlineTable, onlineTable, type Table } from './tables.js';

/**
 * One self-contained HTML page: tables, inline SVG charts and failures. No scripts and no
 * external resources (the content security policy forbids loading any), so it opens offline.
 */
export function renderHtmlReport(results: SuiteResults): string {
  const color = (i: number) => palette[i % palette.length]!;
  const s = results.settings;
  const sections: string[] = [];
  sections.push(`<h1>sluice compare: the seed benchmark suite</h1>
<p class="meta">${escapeHtml(results.createdAt)} &middot; dataset ${escapeHtml(s.datasetName)}${s.datasetPath ? ` (${escapeHtml(s.datasetPath)})` : ''}
&middot; scale ${s.scale} &middot; seed ${s.seed} &middot; client ${escapeHtml(s.backend)}${s.stream ? '' : ' (no streaming)'}${
    s.sharegptOutputLen ? ` &middot; output length ${s.sharegptOutputLen}` : ''
  }</p>`);
  sections.push(`<h2>Engines</h2>${enginesList(results.engines)}`);
  sections.push(`<h2>Online</h2>${htmlTable(onlineTable(results))}`);
  sections.push(`<h2>Offline</h2>${htmlTable(offlineTable(results))}`);

  results.runs.forEach((run, index) => {
    const rate = pythonFloat(run.requestRate);
    const title = run.kind === 'online' ? `Online, ${rate} req/s, ${run.numPrompts} prompts` : `Offline (rate inf), ${run.numPrompts} prompts`;
    const series = (key: keyof Distributions): Series[] =>
      results.engines.map((engine, i) => ({ name: engine.name, color: color(i), quantiles: engine.runs[index]?.distributions?.[key] ?? [] }));
    const charts: string[] = [];
    if (run.kind === 'offline') {
      const bars = (pick: (e: EngineResult) => number | undefined) =>
        results.engines.map((engine, i) => ({ name: engine.name, color: color(i), value: pick(engine) ?? 0 }));
      charts.push(barChart('Request throughput', 'req/s', bars((e) => e.runs[index]?.metrics?.requestThroughput)));
      charts.push(barChart('Output token throughput', 'tok/s', bars((e) => e.runs[index]?.metrics?.outputThroughput)));
    }
    charts.push(cdfChart('End-to-end latency', 'ms', series('e2e')));
    charts.push(cdfChart('Time to first token', 'ms', series('ttft')));
    charts.push(cdfChart('Time per output token', 'ms', series('tpot')));
    charts.push(cdfChart('Inter-token latency', 'ms', series('itl'), 'share of token gaps'));
    sections.push(`<h2>${escapeHtml(title)}</h2>${metricsTable(results.engines, index)}<div class="charts">${charts.join('')}</div>`);
  });
  sections.push(`<h2>Failures</h2>${failuresTable(results)}`);

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sluice compare report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f3f3f3; }
td:nth-child(3), th:nth-child(3) { text-align: left; }
table.metrics td:nth-child(3), table.metrics th:nth-child(3) { text-align: right; }
table.metrics td:first-child { text-align: left; }
tr.ratio td { font-style: italic; background: #fafafa; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
svg.chart { border: 1px solid #eee; background: #fff; }
pre { background: #f7f7f7; padding: 8px; white-space: pre-wrap; }
.meta { color: #666; }
.bad { color: #b00; }
</style>
</head>
<body>
${sections.join('\n')}
</body>
</html>
`;
}

function htmlTable(table: Table): string {
  if (table.rows.length === 0) return '<p>No runs.</p>';
  const head = `<tr>${table.header.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr>`;
  const rows = table.rows.map((r) => `<tr${r.ratio ? ' class="ratio"' : ''}>${r.cells.map((c) => `<td>${escapeHtml(c)}</td>`).join('')}</tr>`);
  return `<table>${head}${rows.join('')}</table>`;
}

/** Every figure of one run, engines as rows. */
function metricsTable(engines: EngineResult[], runIndex: number): string {
  const columns: [string, (m: BenchmarkMetrics) => number, number][] = [
    ['Completed', (m) => m.completed, 0],
    ['Failed', (m) => m.failed, 0],
    ['Req/s', (m) => m.requestThroughput, 2],
    ['Output tok/s', (m) => m.outputThroughput, 2],
    ['Mean E2E', (m) => m.meanE2eLatencyMs, 2],
    ['P99 E2E', (m) => m.p99E2eLatencyMs, 2],
    ['Mean TTFT', (m) => m.meanTtftMs, 2],
    ['P99 TTFT', (m) => m.p99TtftMs, 2],
    ['Mean TPOT', (m) => m.meanTpotMs, 2],
    ['P99 TPOT', (m) => m.p99TpotMs, 2],
    ['Mean ITL', (m) => m.meanItlMs, 2],
    ['P99 ITL', (m) => m.p99ItlMs, 2],
  ];
  const rows = engines.map((engine) => {
    const run = engine.runs[runIndex];
    const cells = columns.map(([, pick, digits]) => {
      const v = run?.metrics ? pick(run.metrics) : NaN;
      return `<td>${Number.isFinite(v) ? v.toFixed(digits) : '-'}</td>`;
    });
    return `<tr><td>${escapeHtml(engine.name)}</td>${cells.join('')}</tr>`;
  });
  const head = `<tr><th>Engine</th>${columns.map(([name]) => `<th>${name}</th>`).join('')}</tr>`;
  return `<table class="metrics">${head}${rows.join('')}</table><p class="meta">latencies in ms</p>`;
}

function enginesList(engines: EngineResult[]): string {
  const items = engines.map((e) => {
    const launch = e.launch ? ` &middot; launched with <code>${escapeHtml(e.launch)}</code>` : '';
    const error = e.error ? `<pre class="bad">${escapeHtml(e.error)}</pre>` : '';
    return `<li><b>${escapeHtml(e.name)}</b> ${escapeHtml(e.url)}${e.model ? ` (model ${escapeHtml(e.model)})` : ''}${launch}${error}</li>`;
  });
  return `<ul>${items.join('')}</ul>`;
}

function failuresTable(results: SuiteResults): string {
  const rows: string[] = [];
  for (const engine of results.engines) {
    if (engine.error) rows.push(row(engine.name, 'all', 'engine not run', escapeHtml(engine.error.split('\n')[0]!)));
    engine.runs.forEach((run) => {
      const label = `${pythonFloat(run.requestRate)} req/s x ${run.numPrompts}`;
      if (run.error) rows.push(row(engine.name, label, 'run failed', escapeHtml(run.error)));
      for (const [reason, count] of Object.entries(run.failures)) {
        rows.push(row(engine.name, label, `${count} x ${escapeHtml(reason)}`, escapeHtml(run.failureExamples[reason] ?? '')));
      }
    });
  }
  if (rows.length === 0) return '<p>No failed requests.</p>';
  return `<table class="failures"><tr><th>Engine</th><th>Run</th><th>Failures</th><th>Example</th></tr>${rows.join('')}</table>`;
}

function row(...cells: string[]): string {
  return `<tr>${cells.map((c) => `<td style="text-align:left">${c}</td>`).join('')}</tr>`;
}
