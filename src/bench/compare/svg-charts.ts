/** Charts as inline SVG strings, so a report needs no script and no network to show them. */

export interface Series {
  name: string;
  color: string;
  /** Sorted sample quantiles: values[i] is the (i / (n - 1))-th quantile. */
  quantiles: number[];
}

export interface Bar {
  name: string;
  color: string;
  value: number;
}

const width = 420;
const height = 260;
const margin = { left: 58, right: 16, top: 30, bottom: 58 };
const plotW = width - margin.left - margin.right;
const plotH = height - margin.top - margin.bottom;

export const palette = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

export function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A cumulative distribution plot: x = latency, y = share of requests at or below it. */
export function cdfChart(title: string, unit: string, series: Series[], yLabel = 'share of requests'): string {
  const drawn = series.filter((s) => s.quantiles.length > 0 && s.quantiles.every(Number.isFinite));
  const maxX = niceMax(Math.max(0, ...drawn.map((s) => s.quantiles.at(-1)!)));
  const x = (v: number) => margin.left + (maxX > 0 ? (v / maxX) * plotW : 0);
  const y = (p: number) => margin.top + plotH - p * plotH;
  const parts: string[] = [frame(title, unit, yLabel)];
  for (const t of ticks(maxX)) parts.push(xTick(x(t), formatTick(t)));
  for (const p of [0, 0.25, 0.5, 0.75, 1]) parts.push(yTick(y(p), `${p * 100}%`));
  drawn.forEach((s) => {
    const n = s.quantiles.length;
    const points = s.quantiles.map((v, i) => `${x(v).toFixed(1)},${y(n === 1 ? 1 : i / (n - 1)).toFixed(1)}`).join(' ');
    parts.push(
      `<polyline class="series" data-engine="${escapeHtml(s.name)}" fill="none" stroke="${s.color}" stroke-width="2" points="${points}"><title>${escapeHtml(s.name)}</title></polyline>`,
    );
  });
  if (drawn.length === 0) parts.push(noData());
  parts.push(legend(series));
  return svg(title, parts);
}

/** One bar per engine with its value printed above it. */
export function barChart(title: string, unit: string, bars: Bar[]): string {
  const maxY = niceMax(Math.max(0, ...bars.map((b) => (Number.isFinite(b.value) ? b.value : 0))));
  const y = (v: number) => margin.top + plotH - (maxY > 0 ? (v / maxY) * plotH : 0);
  const parts: string[] = [frame(title, '', unit)];
  for (const t of ticks(maxY)) parts.push(yTick(y(t), formatTick(t)));
  const slot = plotW / Math.max(1, bars.length);
  bars.forEach((b, i) => {
    const value = Number.isFinite(b.value) ? b.value : 0;
    const left = margin.left + i * slot + slot * 0.2;
    const top = y(value);
    parts.push(
      `<rect class="bar" data-engine="${escapeHtml(b.name)}" x="${left.toFixed(1)}" y="${top.toFixed(1)}" width="${(slot * 0.6).toFixed(1)}" height="${Math.max(0.5, margin.top + plotH - top).toFixed(1)}" fill="${b.color}"><title>${escapeHtml(b.name)}: ${value.toFixed(2)} ${escapeHtml(unit)}</title></rect>`,
      `<text x="${(left + slot * 0.3).toFixed(1)}" y="${(top - 4).toFixed(1)}" text-anchor="middle" font-size="11">${value.toFixed(2)}</text>`,
      `<text x="${(left + slot * 0.3).toFixed(1)}" y="${margin.top + plotH + 16}" text-anchor="middle" font-size="11">${escapeHtml(b.name)}</text>`,
    );
  });
  if (bars.length === 0) parts.push(noData());
  return svg(title, parts);
}

function svg(title: string, parts: string[]): string {
  return `<svg class="chart" role="img" aria-label="${escapeHtml(title)}" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}">${parts.join('')}</svg>`;
}

function frame(title: string, xLabel: string, yLabel: string): string {
  const bottom = margin.top + plotH;
  return [
    `<text x="${width / 2}" y="18" text-anchor="middle" font-size="13" font-weight="bold">${escapeHtml(title)}</text>`,
    `<line x1="${margin.left}" y1="${bottom}" x2="${margin.left + plotW}" y2="${bottom}" stroke="#333"/>`,
    `<line x1="${margin.left}" y1="${margin.top}" x2="${margin.left}" y2="${bottom}" stroke="#333"/>`,
    xLabel ? `<text x="${margin.left + plotW / 2}" y="${height - 22}" text-anchor="middle" font-size="11">${escapeHtml(xLabel)}</text>` : '',
    `<text transform="translate(12 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle" font-size="11">${escapeHtml(yLabel)}</text>`,
  ].join('');
}

function xTick(x: number, label: string): string {
  const bottom = margin.top + plotH;
  return `<line x1="${x.toFixed(1)}" y1="${bottom}" x2="${x.toFixed(1)}" y2="${bottom + 4}" stroke="#333"/><text x="${x.toFixed(1)}" y="${bottom + 15}" text-anchor="middle" font-size="10">${label}</text>`;
}

function yTick(y: number, label: string): string {
  return `<line x1="${margin.left - 4}" y1="${y.toFixed(1)}" x2="${margin.left + plotW}" y2="${y.toFixed(1)}" stroke="#ddd"/><text x="${margin.left - 6}" y="${(y + 3).toFixed(1)}" text-anchor="end" font-size="10">${label}</text>`;
}

function legend(series: Series[]): string {
  const spacing = Math.min(130, (width - 20) / Math.max(1, series.length));
  return series
    .map((s, i) => {
      const x = 10 + i * spacing;
      const y = height - 8;
      return `<rect x="${x.toFixed(1)}" y="${y - 8}" width="10" height="10" fill="${s.color}"/><text x="${(x + 14).toFixed(1)}" y="${y + 1}" font-size="11">${escapeHtml(s.name)}</text>`;
    })
    .join('');
}

function noData(): string {
  return `<text x="${margin.left + plotW / 2}" y="${margin.top + plotH / 2}" text-anchor="middle" font-size="12" fill="#999">no successful requests</text>`;
}

/** A round axis maximum at or above v. */
function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(v));
  for (const step of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (step * magnitude >= v) return step * magnitude;
  return 10 * magnitude;
}

function ticks(max: number): number[] {
  return [0, 0.25, 0.5, 0.75, 1].map((f) => f * max);
}

function formatTick(v: number): string {
  if (v >= 1000) return `${+(v / 1000).toFixed(2)}k`;
  return `${+v.toFixed(2)}`;
}
