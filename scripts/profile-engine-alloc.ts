/**
 * What the engine allocates per decode step, by allocating function: bytes per sequence-step at
 * 256 running requests (instant backend, tiny model), from V8's sampling heap profiler with
 * collected objects kept in the samples. Bytes do not depend on machine load, so this is the
 * figure to compare on a shared machine; garbage is what makes bench:engine's mean exceed its
 * median (collections).
 *
 *   npm run profile:engine-alloc [-- --running 256] [--seconds 3]
 */
import { Session } from 'node:inspector/promises';
import { InstantBackend } from '../test/support/instant-backend.js';
import { LlmEngine } from '../src/engine/engine.js';
import { loadModel } from '../src/model/load.js';
import { Rng } from '../src/model/rng.js';
import { scriptOptions } from './script-options.js';

const options = scriptOptions('profile:engine-alloc', {
  running: { type: 'string', default: '256' },
  seconds: { type: 'string', default: '3' },
});
const running = Number(options.running);
const promptTokens = 256;
const maxNewTokens = 600;

const model = loadModel({ modelPath: 'tiny' });
const engine = await LlmEngine.create(model, new InstantBackend(), {
  maxTotalTokens: running * (promptTokens + maxNewTokens + 16),
  maxRunningRequests: running,
  logger: { warn: () => {} },
});
const rng = new Rng(1);
const streams = Array.from({ length: running }, (_, i) =>
  engine.generate({
    promptTokenIds: Array.from({ length: promptTokens }, () => 1000 + Math.floor(rng.next() * 50000)),
    params: { maxNewTokens, temperature: 0.8, topP: 0.95, seed: i, ignoreEos: true, stop: ['\n\n###'] },
  }),
);
let textLength = 0;
const consumed = Promise.all(
  streams.map(async (stream) => {
    for await (const delta of stream) textLength += delta.text.length;
  }),
);
// Past the prefills: every request decodes.
while (engine.stats().runningRequests < running || engine.stats().stepsTotal < 20) await new Promise((resolve) => setTimeout(resolve, 50));

const session = new Session();
session.connect();
const stepsBefore = engine.stats().stepsTotal;
await session.post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true } as object);
await new Promise((resolve) => setTimeout(resolve, Number(options.seconds) * 1000));
const { profile } = await session.post('HeapProfiler.stopSampling');
const steps = engine.stats().stepsTotal - stepsBefore;
session.disconnect();
await consumed;
await engine.close();
if (textLength === 0) throw new Error('no text was generated');

const bySite = new Map<string, number>();
let total = 0;
const walk = (node: typeof profile.head) => {
  const frame = node.callFrame;
  const site = `${frame.functionName || '(anonymous)'} ${frame.url.split('/').slice(-2).join('/')}`;
  bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize);
  total += node.selfSize;
  node.children.forEach(walk);
};
walk(profile.head);
const perSequenceStep = (bytes: number) => bytes / steps / running;
console.log(`${steps} decode steps at ${running} running: ${perSequenceStep(total).toFixed(0)} bytes allocated per sequence-step (${(total / steps / 1024).toFixed(1)} KiB per step)`);
console.log('(the consumer loop of this script is counted too: the server has one of its own)');
for (const [site, bytes] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
  if (perSequenceStep(bytes) >= 1) console.log(`${perSequenceStep(bytes).toFixed(0).padStart(6)}  ${site}`);
}
