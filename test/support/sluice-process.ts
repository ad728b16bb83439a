import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const sluiceBin = join(repoRoot, 'bin', 'sluice.mjs');

/** A port nothing listens on right now (for commands that must be told their port up front). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

export interface CliResult {
  /** null when a signal ended it (the timeout's). */
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `sluice <args>` to completion as a user would (bin/sluice.mjs in a child process), capturing its output. */
export function runSluice(args: string[], timeoutMs = 120_000): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [sluiceBin, ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    // On timeout, SIGTERM first so `sluice compare` can stop the engines it launched.
    let killTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), 35_000);
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A `sluice` child process left running, its stderr collected as it comes. */
export interface SluiceProcess {
  child: ChildProcess;
  stderr(): string;
  /** Settles with the exit code when the process ends. */
  exited: Promise<number | null>;
}

export function spawnSluice(args: string[]): SluiceProcess {
  const child = spawn(process.execPath, [sluiceBin, ...args], { cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stderr: () => stderr, exited };
}

const servingLine = /serving \S+ on (http:\/\/\S+)/;

/**
 * The URL from `sluice serve`'s "serving MODEL on URL" line, which it logs once it listens with
 * the engine started (so `--port 0` works, with no port to race for). Fails when the process
 * exits first or the line does not come within `timeoutMs`, quoting its stderr.
 */
export function waitForServing(proc: SluiceProcess, timeoutMs = 90_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const finish = (error: string | null, url?: string) => {
      clearTimeout(timer);
      proc.child.stderr!.off('data', check);
      proc.child.off('exit', onExit);
      if (error === null) resolve(url!);
      else reject(new Error(`${error}:\n${proc.stderr()}`));
    };
    const check = () => {
      const match = servingLine.exec(proc.stderr());
      if (match) finish(null, match[1]!);
    };
    const onExit = () => finish('sluice serve exited early');
    const timer = setTimeout(() => finish(`sluice serve did not start within ${timeoutMs / 1000} s`), timeoutMs);
    // The collector in spawnSluice was attached first, so stderr() already holds this chunk.
    proc.child.stderr!.on('data', check);
    proc.child.once('exit', onExit);
    if (proc.child.exitCode !== null) onExit();
    else check();
  });
}

export interface SluiceServer extends SluiceProcess {
  url: string;
  /** stopSluice on this server. */
  stop(): Promise<void>;
}

/** SIGTERM, then SIGKILL after 10 s; resolves once the process is gone. */
export async function stopSluice(proc: SluiceProcess): Promise<void> {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  proc.child.kill('SIGTERM');
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), 10_000);
  await proc.exited;
  clearTimeout(timer);
}

const spawnServe = (args: string[]) => spawnSluice(['serve', '--model-path', 'tiny', '--port', '0', ...args]);

async function whenServing(proc: SluiceProcess, timeoutMs: number): Promise<SluiceServer> {
  try {
    const url = await waitForServing(proc, timeoutMs);
    return { ...proc, url, stop: () => stopSluice(proc) };
  } catch (e) {
    proc.child.kill('SIGKILL');
    throw e;
  }
}

/**
 * `sluice serve --model-path tiny --port 0 <args>` (give at least --backend), ready when it logs
 * where it serves. A server that fails to start is killed.
 */
export function startSluiceServer(args: string[], timeoutMs = 90_000): Promise<SluiceServer> {
  return whenServing(spawnServe(args), timeoutMs);
}

/** Servers a test file starts (as startSluiceServer does), to stop them all in its afterAll, started or still starting. */
export class SluiceServers {
  private readonly processes: SluiceProcess[] = [];

  start(args: string[], timeoutMs = 90_000): Promise<SluiceServer> {
    const proc = spawnServe(args);
    this.processes.push(proc);
    return whenServing(proc, timeoutMs);
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.processes.map(stopSluice));
  }
}

export interface CompletionResponse {
  choices: { text: string; finish_reason: string; logprobs: { token_logprobs: number[] } | null }[];
}

/** POST /v1/completions on the tiny model; the request must succeed (200). */
export async function complete(server: SluiceServer, body: Record<string, unknown>): Promise<CompletionResponse> {
  const response = await fetch(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'tiny', ...body }),
  });
  expect(response.status).toBe(200);
  return (await response.json()) as CompletionResponse;
}
