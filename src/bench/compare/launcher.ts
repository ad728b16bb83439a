import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { getJson, RequestFailure } from '../http-lines.js';

export interface LaunchedEngine {
  stop(): Promise<void>;
  /** The last lines the command printed (for error messages). */
  outputTail(): string;
}

const keptLines = 40;

/** Starts a shell command in its own process group, keeping the tail of its output. */
export function launchEngine(command: string): LaunchedEngine & { process: ChildProcess; exited: Promise<number | null> } {
  const child = spawn('bash', ['-c', command], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const keep = (chunk: Buffer) => {
    lines.push(...chunk.toString('utf8').split('\n').filter((l) => l.length > 0));
    if (lines.length > keptLines) lines.splice(0, lines.length - keptLines);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null)));
    child.once('error', (e) => {
      lines.push(`could not start: ${e.message}`);
      resolve(-1);
    });
  });
  let running = true;
  void exited.then(() => (running = false));
  const signalGroup = (signal: NodeJS.Signals) => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  };
  return {
    process: child,
    exited,
    outputTail: () => lines.join('\n'),
    async stop() {
      if (!running) return;
      signalGroup('SIGTERM');
      const stopped = await Promise.race([exited.then(() => true), sleep(30_000).then(() => false)]);
      if (!stopped) {
        signalGroup('SIGKILL');
        await exited;
      }
    },
  };
}

/**
 * Polls GET {url}/health until it answers 200. Fails when the time runs out, or at once when
 * `exited` settles first (a launched engine that died).
 */
export async function waitForHealth(url: string, timeoutMs: number, exited?: Promise<number | null>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let died: number | null | undefined;
  void exited?.then((code) => (died = code));
  let lastError = '';
  while (Date.now() < deadline) {
    if (died !== undefined) throw new Error(`the engine exited (code ${died}) before ${url}/health answered`);
    try {
      await getJson(new URL(`${url}/health`), 5_000).catch((e) => {
        // A 200 with an empty or non-JSON body is healthy too.
        if (e instanceof RequestFailure && e.reason === 'bad response') return;
        throw e;
      });
      return;
    } catch (e) {
      lastError = (e as Error).message;
    }
    await sleep(500);
  }
  throw new Error(`${url}/health did not answer 200 within ${timeoutMs / 1000} s (last: ${lastError})`);
}
