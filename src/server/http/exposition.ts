/**
 * The few Prometheus metric kinds /metrics needs, rendered straight into the text exposition
 * format (0.0.4). Every line's name-and-labels prefix is built once, so a scrape only formats
 * numbers: llm-d scrapes every 50 ms, and a general-purpose client library spent milliseconds
 * per scrape re-escaping labels and allocating label objects (docs/performance.md). A scrape
 * that finds nothing changed since the last one (no counter or histogram moved, every sampled
 * value the same) gets the same bytes again without rendering: an idle replica scraped by
 * several routers costs only the sampling.
 */

export const contentType = 'text/plain; version=0.0.4; charset=utf-8';

type Labels = Record<string, string>;

interface Family {
  render(out: string[]): void;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labelText(labels: Labels): string {
  const entries = Object.entries(labels);
  return entries.length === 0 ? '' : `{${entries.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}`;
}

function formatValue(value: number): string {
  if (Number.isFinite(value)) return String(value);
  return Number.isNaN(value) ? 'NaN' : value > 0 ? '+Inf' : '-Inf';
}

function header(name: string, help: string, type: string): string {
  return `# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${name} ${type}`;
}

/** Metric families rendered in registration order, each series carrying the constant labels. */
export class Exposition {
  private readonly families: Family[] = [];
  private readonly samplers: (() => number)[] = [];
  private sampledValues = new Float64Array(0);
  /** Bumped by every counter increment and histogram observation. */
  private version = 0;
  private last: { version: number; values: Float64Array; bytes: Buffer } | null = null;
  private readonly changed = () => {
    this.version++;
  };

  constructor(private readonly constantLabels: Labels) {}

  /** A value read at scrape time (gauge or counter). */
  sampled(type: 'gauge' | 'counter', name: string, help: string, read: () => number): void {
    const head = header(name, help, type);
    const prefix = `${name}${labelText(this.constantLabels)} `;
    const index = this.samplers.push(read) - 1;
    this.families.push({ render: (out) => out.push(head, prefix + formatValue(this.sampledValues[index]!)) });
  }

  /** A counter incremented by the server, one series per value of its labels (created up front or on first use). */
  counter<L extends string>(name: string, help: string, labelName?: L, initial: string[] = []): LabelledCounter {
    const counter = new LabelledCounter(name, help, this.constantLabels, labelName, this.changed);
    for (const value of initial) counter.inc(value, 0);
    this.families.push(counter);
    return counter;
  }

  /** A gauge that is always 1, its labels carrying information (vLLM's *_info metrics). */
  info(name: string, help: string, labels: Labels): void {
    const lines = [header(name, help, 'gauge'), `${name}${labelText({ ...labels, ...this.constantLabels })} 1`];
    this.families.push({ render: (out) => out.push(...lines) });
  }

  histogram(name: string, help: string, buckets: readonly number[]): Histogram {
    const histogram = new Histogram(name, help, buckets, this.constantLabels, this.changed);
    this.families.push(histogram.family(name, help));
    return histogram;
  }

  /** The same observations served under a second name (SGLang's beside vLLM's), observed once. */
  alias(histogram: Histogram, name: string, help: string): void {
    this.families.push(histogram.family(name, help));
  }

  /** The exposition as bytes: the previous scrape's when nothing has changed since. */
  render(): Buffer {
    const values = new Float64Array(this.samplers.length);
    for (let i = 0; i < values.length; i++) values[i] = this.samplers[i]!();
    const last = this.last;
    if (last && last.version === this.version && sameValues(last.values, values)) return last.bytes;
    this.sampledValues = values;
    const version = this.version;
    const out: string[] = [];
    for (const family of this.families) family.render(out);
    out.push('');
    const bytes = Buffer.from(out.join('\n'));
    this.last = { version, values, bytes };
    return bytes;
  }
}

function sameValues(a: Float64Array, b: Float64Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class LabelledCounter implements Family {
  private readonly series = new Map<string, { prefix: string; value: number }>();
  private readonly head: string;

  constructor(
    private readonly name: string,
    help: string,
    private readonly constantLabels: Labels,
    private readonly labelName: string | undefined,
    private readonly changed: () => void,
  ) {
    this.head = header(name, help, 'counter');
  }

  inc(labelValue = '', by = 1): void {
    let entry = this.series.get(labelValue);
    if (!entry) {
      const labels = this.labelName === undefined ? this.constantLabels : { [this.labelName]: labelValue, ...this.constantLabels };
      entry = { prefix: `${this.name}${labelText(labels)} `, value: 0 };
      this.series.set(labelValue, entry);
    }
    entry.value += by;
    this.changed();
  }

  render(out: string[]): void {
    out.push(this.head);
    for (const { prefix, value } of this.series.values()) out.push(prefix + formatValue(value));
  }
}

/** Cumulative buckets as Prometheus wants them, counted per bucket and summed at scrape time. */
export class Histogram {
  private readonly counts: Float64Array;
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
    private readonly constantLabels: Labels,
    private readonly changed: () => void,
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    // Binary search for the first bound >= value (le is inclusive).
    let lo = 0;
    let hi = this.bounds.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (value <= this.bounds[mid]!) hi = mid;
      else lo = mid + 1;
    }
    this.counts[lo]!++;
    this.sum += value;
    this.count++;
    this.changed();
  }

  /** Renders these observations as the family `name`. */
  family(name: string, help: string): Family {
    const head = header(name, help, 'histogram');
    const bucketPrefixes = [...this.bounds.map(String), '+Inf'].map((le) => `${name}_bucket${labelText({ le, ...this.constantLabels })} `);
    const sumPrefix = `${name}_sum${labelText(this.constantLabels)} `;
    const countPrefix = `${name}_count${labelText(this.constantLabels)} `;
    return {
      render: (out) => {
        out.push(head);
        let cumulative = 0;
        for (let i = 0; i < this.counts.length; i++) {
          cumulative += this.counts[i]!;
          out.push(bucketPrefixes[i]! + cumulative);
        }
        out.push(sumPrefix + formatValue(this.sum), countPrefix + this.count);
      },
    };
  }
}
