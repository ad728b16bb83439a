// Issue 18 item 15: one /v1/completions with 2048 short prompts (OpenAI's largest prompt array)
// against a server on the tiny preset, in this process. Prints the request's wall time, the
// slowest /health answer taken every 100 ms while it ran, and RSS before, at peak and after.
//   npm run bench:many-prompts -- [--backend instant|ref] [--prompts 2048] [--max-tokens 2]
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { startTestServer } from '../test/support/test-server.js';

const { values } = parseArgs({
  options: { backend: { type: 'string', default: 'instant' }, prompts: { type: 'string', default: '2048' }, 'max-tokens': { type: 'string', default: '2' } },
});
const backend = values.backend!;
if (backend !== 'instant' && backend !== 'ref') throw new Error(`--backend must be instant or ref, got ${backend}`);
const server = await startTestServer({ instant: backend === 'instant' });
const mib = () => Math.round(process.memoryUsage().rss / 2 ** 20);
try {
  const rssBefore = mib();
  let rssPeak = rssBefore;
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, mib())), 50);
  const prompt = Array.from({ length: Number(values.prompts) }, (_, i) => `short prompt number ${i}`);
  const started = performance.now();
  let done = false;
  const load = fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt, max_tokens: Number(values['max-tokens']), ignore_eos: true }) })
    .then((r) => r.json() as Promise<{ choices?: unknown[]; error?: unknown }>)
    .finally(() => (done = true));
  const health: number[] = [];
  while (!done) {
    const t = performance.now();
    await fetch(`${server.url}/health`, { headers: { connection: 'close' } });
    health.push(performance.now() - t);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const body = await load;
  clearInterval(sampler);
  console.log(
    JSON.stringify({
      backend,
      prompts: prompt.length,
      choices: body.choices?.length ?? 0,
      error: body.error ?? null,
      requestMs: Math.round(performance.now() - started),
      healthProbes: health.length,
      healthMaxMs: Math.round(Math.max(0, ...health)),
      rssMiB: { before: rssBefore, peak: rssPeak, after: mib() },
      loadavg: loadavg().map((x) => x.toFixed(2)),
    }),
  );
} finally {
  await server.shutdown(5000);
}
