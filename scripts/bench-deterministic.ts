/**
 * Cost of --enable-deterministic-inference (issue 18 item 17): the same requests through the
 * engine with and without the flag, back to back, on a backend (default cpu) and the tiny
 * preset; prints output tokens per second of each, their ratio and the load average.
 *
 *   npx tsx scripts/bench-deterministic.ts [--backend cpu] [--requests 8] [--prompt-tokens 64] [--output-tokens 32]
 */
import { loadavg } from 'node:os';
import { createBackend } from '../backends/index.js';
import { LlmEngine } from '../src/engine/engine.js';
import { loadModel } from '../src/model/load.js';
import { scriptOptions } from './script-options.js';

const args = scriptOptions('bench-deterministic', {
  backend: { type: 'string', default: 'cpu' },
  requests: { type: 'string', default: '8' },
  'prompt-tokens': { type: 'string', default: '64' },
  'output-tokens': { type: 'string', default: '32' },
});
const model = loadModel({ modelPath: 'tiny' });
const requests = Number(args.requests);
const promptTokens = Number(args['prompt-tokens']);
const outputTokens = Number(args['output-tokens']);

async function run(deterministicInference: boolean): Promise<{ seconds: number; tokens: number }> {
  const engine = await LlmEngine.create(model, await createBackend(args.backend!), { maxTotalTokens: 16384, deterministicInference, logger: { warn() {} } });
  const started = performance.now();
  let tokens = 0;
  await Promise.all(
    Array.from({ length: requests }, async (_, r) => {
      const promptTokenIds = Array.from({ length: promptTokens }, (_, i) => 1000 + ((r * 131 + i * 7) % 5000));
      const params = { temperature: 0, maxNewTokens: outputTokens, ignoreEos: true };
      for await (const delta of engine.generate({ promptTokenIds, params })) tokens += delta.tokenIds.length;
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  await engine.close();
  return { seconds, tokens };
}

await run(false); // warm-up
const plain = await run(false);
const deterministic = await run(true);
const rate = (r: { seconds: number; tokens: number }) => r.tokens / r.seconds;
console.log(`${args.backend} backend, tiny preset, ${requests} requests x (${promptTokens} prompt + ${outputTokens} output) tokens, greedy (the host sampler's cost would hide the model's)`);
console.log(`  without the flag: ${plain.seconds.toFixed(2)} s, ${rate(plain).toFixed(1)} output tok/s`);
console.log(`  --enable-deterministic-inference: ${deterministic.seconds.toFixed(2)} s, ${rate(deterministic).toFixed(1)} output tok/s`);
console.log(`  ratio (deterministic / plain throughput): ${(rate(deterministic) / rate(plain)).toFixed(2)}x; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
