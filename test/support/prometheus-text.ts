/** One sample line of the Prometheus text format. */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A parsed exposition: each family's TYPE and HELP, and every sample. */
export interface PromExposition {
  types: Map<string, string>;
  help: Map<string, string>;
  samples: PromSample[];
}

/** Parses the Prometheus text exposition format (what /metrics serves). */
export function parsePrometheusText(text: string): PromExposition {
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  const samples: PromSample[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const meta = /^# (TYPE|HELP) (\S+) (.*)$/.exec(line);
    if (meta) {
      (meta[1] === 'TYPE' ? types : help).set(meta[2]!, meta[3]!);
      continue;
    }
    if (line.startsWith('#')) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!sample) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const m of (sample[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]!] = m[2]!;
    samples.push({ name: sample[1]!, labels, value: Number(sample[3]) });
  }
  return { types, help, samples };
}

/**
 * Samples keyed as name{labels} without the model_name label every series carries, e.g.
 * `vllm:num_requests_running` or `vllm:request_success_total{finished_reason="stop"}`.
 */
export function samplesByKey(exposition: PromExposition): Map<string, number> {
  const values = new Map<string, number>();
  for (const { name, labels, value } of exposition.samples) {
    const rest = Object.entries(labels).filter(([k]) => k !== 'model_name');
    values.set(rest.length === 0 ? name : `${name}{${rest.map(([k, v]) => `${k}="${v}"`).join(',')}}`, value);
  }
  return values;
}
