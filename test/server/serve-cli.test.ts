import { describe, expect, it } from 'vitest';
import { spawnSluice as sluice, waitForServing } from '../support/sluice-process.js';
import { readEvents } from '../support/test-server.js';

describe('sluice serve', () => {
  it('rejects an unknown flag, listing the valid ones', async () => {
    const run = sluice(['serve', '--model-pth', 'tiny']);
    expect(await run.exited).not.toBe(0);
    expect(run.stderr()).toMatch(/--model-pth/);
    expect(run.stderr()).toMatch(/valid options of sluice serve:.*--model-path.*--mem-fraction-static.*--disable-radix-cache/);
  });

  it('refuses --tp-size above 1 on a backend without tensor-parallel ranks, in one line', async () => {
    const run = sluice(['serve', '--model-path', 'tiny', '--backend', 'webgpu', '--tp', '2']);
    expect(await run.exited).toBe(1);
    expect(run.stderr()).toMatch(/error: --tp-size 2: the webgpu backend cannot run tensor-parallel ranks yet; --backend ref\|cpu\|cuda can\n/);
  });

  it('says first that preset weights are random; on SIGTERM finishes streaming requests, refuses new ones, exits 0', async () => {
    const server = sluice(['serve', '--model-path', 'tiny', '--backend', 'ref', '--port', '0', '--max-total-tokens', '8192']);
    try {
      const url = await waitForServing(server, 60_000);
      expect(server.stderr().split('\n')[0]).toMatch(/RANDOM weights/);
      const body = (i: number) => JSON.stringify({ prompt: `stream ${i}`, max_tokens: 48, temperature: 0, ignore_eos: true, stream: true });
      const responses = await Promise.all([0, 1, 2].map((i) => fetch(`${url}/v1/completions`, { method: 'POST', body: body(i) })));
      const streams = responses.map((r) => readEvents(r));
      server.child.kill('SIGTERM');
      await new Promise((resolve) => setTimeout(resolve, 200));
      const late = await fetch(`${url}/v1/completions`, { method: 'POST', body: body(9) }).then(
        (r) => r.status,
        () => 'refused',
      );
      expect([503, 'refused']).toContain(late);
      for (const events of await Promise.all(streams)) {
        expect(events.at(-1)).toBe('[DONE]');
        const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
        expect(chunks).toHaveLength(48);
        expect(chunks.at(-1).choices[0].finish_reason).toBe('length');
      }
      expect(await server.exited).toBe(0);
      expect(server.stderr()).toMatch(/SIGTERM/);
      // The signal came while all three were streaming.
      expect(server.stderr()).toMatch(/draining: waiting up to \d+ s for 3 requests in flight/);
    } finally {
      if (server.child.exitCode === null) server.child.kill('SIGKILL');
    }
  });
});
