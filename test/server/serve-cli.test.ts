import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { readEvents } from './helpers.js';

const bin = './bin/sluice.mjs';

interface Spawned {
  child: ChildProcess;
  stderr: () => string;
  exit: Promise<number | null>;
}

function sluice(args: string[]): Spawned {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdout!.resume();
  const exit = once(child, 'exit').then(([code]) => code as number | null);
  return { child, stderr: () => stderr, exit };
}

async function waitForUrl(server: Spawned): Promise<string> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const match = /serving \S+ on (http:\/\/\S+)/.exec(server.stderr());
    if (match) return match[1]!;
    if (server.child.exitCode !== null) throw new Error(`sluice serve exited early:\n${server.stderr()}`);
    if (Date.now() > deadline) throw new Error(`sluice serve did not start:\n${server.stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('sluice serve', () => {
  it('rejects an unknown flag, listing the valid ones', async () => {
    const run = sluice(['serve', '--model-pth', 'tiny']);
    expect(await run.exit).not.toBe(0);
    expect(run.stderr()).toMatch(/--model-pth/);
    expect(run.stderr()).toMatch(/valid options of sluice serve:.*--model-path.*--mem-fraction-static.*--disable-radix-cache/);
  });

  it('refuses --tp-size above 1 with a clear message', async () => {
    const run = sluice(['serve', '--model-path', 'tiny', '--backend', 'ref', '--tp', '2']);
    expect(await run.exit).toBe(1);
    expect(run.stderr()).toMatch(/error: --tp-size 2: tensor parallelism is not supported/);
  });

  it('says first that preset weights are random; on SIGTERM finishes streaming requests, refuses new ones, exits 0', async () => {
    const server = sluice(['serve', '--model-path', 'tiny', '--backend', 'ref', '--port', '0', '--max-total-tokens', '8192']);
    try {
      const url = await waitForUrl(server);
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
      expect(await server.exit).toBe(0);
      expect(server.stderr()).toMatch(/SIGTERM/);
      // The signal came while all three were streaming.
      expect(server.stderr()).toMatch(/draining: waiting up to \d+ s for 3 requests in flight/);
    } finally {
      if (server.child.exitCode === null) server.child.kill('SIGKILL');
    }
  });
});
