import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/index.js';
import { spawnSluice as sluice } from '../support/sluice-process.js';
import { readEvents, startTestServer } from '../support/test-server.js';

// --stream-interval N: the same request streamed by a server sending every token and by one
// sending every 4 tokens (the instant backend's output is a function of the prompt alone).

let everyToken: RunningServer;
let everyFourth: RunningServer;

async function streamed(server: RunningServer, path: string, body: object): Promise<any[]> {
  const response = await fetch(`${server.url}${path}`, { method: 'POST', body: JSON.stringify({ ...body, stream: true }) });
  expect(response.status).toBe(200);
  const events = await readEvents(response);
  expect(events.at(-1)).toBe('[DONE]');
  return events.slice(0, -1).map((e) => JSON.parse(e));
}

/** Chunks with tokens of n tokens at interval 4: the first at once, then 4 at a time, the last one possibly fewer. */
const chunksAtFour = (n: number) => 1 + Math.ceil((n - 1) / 4);

beforeAll(async () => {
  [everyToken, everyFourth] = await Promise.all([startTestServer({ instant: true }), startTestServer({ instant: true, streamInterval: 4 })]);
});

afterAll(async () => {
  await Promise.all([everyToken?.shutdown(5000), everyFourth?.shutdown(5000)]);
});

describe('--stream-interval', () => {
  it('/generate: the same token ids and text in 1 + ceil((n - 1) / 4) chunks, the last with the finish reason', async () => {
    for (const n of [1, 2, 5, 10, 13]) {
      const request = { text: 'Every fourth token', sampling_params: { max_new_tokens: n, temperature: 0, ignore_eos: true } };
      const one = await streamed(everyToken, '/generate', request);
      const four = await streamed(everyFourth, '/generate', request);
      expect(one).toHaveLength(n);
      expect(four).toHaveLength(chunksAtFour(n));
      expect(four.at(-1).output_ids).toEqual(one.at(-1).output_ids);
      expect(four.at(-1).output_ids).toHaveLength(n);
      expect(four.at(-1).text).toBe(one.at(-1).text);
      expect(four.at(-1).meta_info.finish_reason).toEqual({ type: 'length', length: n });
      // Cumulative ids: 1, 5, 9, ... tokens, then all n.
      expect(four.map((c) => c.output_ids.length)).toEqual([...Array.from({ length: chunksAtFour(n) - 1 }, (_, i) => 1 + 4 * i), n]);
    }
  });

  it('/v1/completions with log-probs, two prompts and n = 2: every choice gets the same text and log-probs in fewer chunks', async () => {
    const n = 11;
    const request = { prompt: ['Four at', 'a time'], n: 2, max_tokens: n, temperature: 0, ignore_eos: true, logprobs: 1 };
    const byChoice = (chunks: any[]) => {
      const choices = new Map<number, { text: string; tokens: string[]; chunks: number; finish: string | null }>();
      for (const chunk of chunks) {
        for (const part of chunk.choices) {
          const choice = choices.get(part.index) ?? { text: '', tokens: [], chunks: 0, finish: null };
          choices.set(part.index, choice);
          choice.text += part.text;
          choice.tokens.push(...part.logprobs.tokens);
          choice.chunks++;
          choice.finish = part.finish_reason;
        }
      }
      return [...choices.entries()].sort((a, b) => a[0] - b[0]).map(([, c]) => c);
    };
    const one = byChoice(await streamed(everyToken, '/v1/completions', request));
    const four = byChoice(await streamed(everyFourth, '/v1/completions', request));
    expect(four).toHaveLength(4);
    for (const [i, choice] of four.entries()) {
      expect(one[i]!.chunks).toBe(n);
      expect(choice.chunks).toBe(chunksAtFour(n));
      expect(choice.text).toBe(one[i]!.text);
      expect(choice.tokens).toEqual(one[i]!.tokens);
      expect(choice.tokens).toHaveLength(n);
      expect(choice.finish).toBe('length');
    }
  });

  it('sluice serve refuses --stream-interval 0 before loading anything', async () => {
    const run = sluice(['serve', '--model-path', 'tiny', '--stream-interval', '0']);
    expect(await run.exited).toBe(1);
    expect(run.stderr()).toMatch(/--stream-interval 0: give a whole number of tokens, 1 or more/);
  });
});
