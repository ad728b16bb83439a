import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBackend, type BackendName } from '../../backends/index.js';
import { BackendUnavailableError } from '../../src/errors.js';
import type { RunningServer } from '../../src/server/index.js';
import { readEvents, startTestServer } from '../support/test-server.js';
import { schemaSuite } from './schemas.js';

/**
 * Every schema of the suite, on each backend: the tiny preset has random weights, so nothing but
 * the grammar makes its output JSON. Each mode goes through a different request surface.
 */
interface Mode {
  name: string;
  temperature: number;
  stream: boolean;
  request(schema: object, temperature: number, stream: boolean, seed: number): { path: string; body: object };
}

// Sampled modes keep the 40 most likely tokens (of those the grammar allows): a full-vocabulary
// sort per row would make the reference sampler, not the grammar, the cost of this test.
const topK = 40;

const maxTokens = 160;
const modes: Mode[] = [
  {
    name: 'greedy, chat response_format json_schema',
    temperature: 0,
    stream: false,
    request: (schema, temperature, stream, seed) => ({
      path: '/v1/chat/completions',
      body: { messages: [{ role: 'user', content: 'Answer in JSON.' }], max_tokens: maxTokens, temperature, stream, seed, response_format: { type: 'json_schema', json_schema: { name: 'answer', schema, strict: true } } },
    }),
  },
  {
    name: 'sampled and streamed, completions guided_json',
    temperature: 1,
    stream: true,
    request: (schema, temperature, stream, seed) => ({ path: '/v1/completions', body: { prompt: 'JSON:', max_tokens: maxTokens, temperature, top_k: topK, stream, seed, guided_json: schema } }),
  },
  {
    name: 'greedy and streamed, SGLang json_schema',
    temperature: 0,
    stream: true,
    request: (schema, temperature, stream, seed) => ({
      path: '/generate',
      body: { text: 'JSON:', stream, sampling_params: { max_new_tokens: maxTokens, temperature, seed, json_schema: JSON.stringify(schema) } },
    }),
  },
  {
    name: 'sampled, completions structured_outputs.json',
    temperature: 0.8,
    stream: false,
    request: (schema, temperature, stream, seed) => ({
      path: '/v1/completions',
      body: { prompt: 'JSON:', max_tokens: maxTokens, temperature, top_k: topK, stream, seed, structured_outputs: { json: schema } },
    }),
  },
];

/**
 * Each backend runs a greedy and a sampled mode, one streamed and one not; ref and cpu split the
 * four surfaces and run every schema in both, and so does cuda (skipped without a GPU; run by
 * scripts/gpu-check.sh stage 3); webgpu (lavapipe is slow) runs each schema once, alternating the two modes.
 */
const plans: { backend: string; modes: Mode[]; alternate: boolean }[] = [
  { backend: 'ref', modes: [modes[0]!, modes[1]!], alternate: false },
  { backend: 'cpu', modes: [modes[2]!, modes[3]!], alternate: false },
  { backend: 'webgpu', modes: [modes[0]!, modes[1]!], alternate: true },
  { backend: 'cuda', modes: [modes[2]!, modes[3]!], alternate: false },
];

/** The (mode, schema) cases of a plan. */
function cases(plan: (typeof plans)[number]): { mode: Mode; name: string; schema: object }[] {
  const schemas = Object.entries(schemaSuite);
  if (plan.alternate) return schemas.map(([name, schema], i) => ({ mode: plan.modes[i % plan.modes.length]!, name, schema }));
  return plan.modes.flatMap((mode) => schemas.map(([name, schema]) => ({ mode, name, schema })));
}

async function available(backend: string): Promise<string | null> {
  try {
    await (await createBackend(backend)).close();
    return null;
  } catch (e) {
    if (e instanceof BackendUnavailableError) return e.message;
    throw e;
  }
}

interface Outcome {
  status: number;
  text: string;
  finishReason: string | null;
}

async function run(url: string, { path, body }: { path: string; body: any }): Promise<Outcome> {
  const response = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (response.status !== 200) return { status: response.status, text: await response.text(), finishReason: null };
  if (!body.stream) return { status: 200, ...outcomeOf(path, await response.json()) };
  const events = (await readEvents(response)).filter((e) => e !== '[DONE]').map((e) => JSON.parse(e));
  if (path === '/generate') return { status: 200, ...outcomeOf(path, events.at(-1)) };
  let text = '';
  let finishReason: string | null = null;
  for (const event of events) {
    const choice = event.choices[0];
    if (!choice) continue;
    text += path === '/v1/chat/completions' ? (choice.delta.content ?? '') : choice.text;
    finishReason = choice.finish_reason ?? finishReason;
  }
  return { status: 200, text, finishReason };
}

function outcomeOf(path: string, json: any): { text: string; finishReason: string | null } {
  if (path === '/generate') return { text: json.text, finishReason: json.meta_info.finish_reason?.type ?? null };
  const choice = json.choices[0];
  return { text: path === '/v1/chat/completions' ? choice.message.content : choice.text, finishReason: choice.finish_reason };
}

const ajv = new Ajv({ strict: false });

for (const plan of plans) {
  const unavailable = await available(plan.backend);
  if (unavailable) console.warn(`skipping the JSON-schema suite on ${plan.backend}: ${unavailable}`);
  describe.skipIf(unavailable !== null)(`JSON-schema suite on ${plan.backend}`, () => {
    let server: RunningServer;
    const outcomes = new Map<string, Promise<Outcome>>();
    beforeAll(async () => {
      server = await startTestServer({ backend: { kind: 'flags', flags: { backend: plan.backend as BackendName } }, engine: { maxRunningRequests: 256 } });
      // Everything at once: one batch of constrained sequences per step.
      let seed = 0;
      for (const { mode, name, schema } of cases(plan)) {
        outcomes.set(`${mode.name}/${name}`, run(server.url, mode.request(schema, mode.temperature, mode.stream, seed++)));
      }
    }, 120_000);
    afterAll(async () => {
      await server?.shutdown(5000);
    });

    for (const { mode, name, schema } of cases(plan)) {
      describe(mode.name, () => {
        {
          it(name, async () => {
            const outcome = await outcomes.get(`${mode.name}/${name}`)!;
            expect(outcome.status, outcome.text).toBe(200);
            expect(outcome.finishReason, outcome.text).toBe('stop');
            const value = JSON.parse(outcome.text);
            const validate = ajv.compile(schema);
            expect(validate(value), `${outcome.text}: ${JSON.stringify(validate.errors)}`).toBe(true);
          }, 300_000);
        }
      });
    }
  });
}
