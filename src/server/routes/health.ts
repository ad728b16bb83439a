import type { ServerContext } from '../context.js';
import { EngineOverloadedError } from '../../engine/errors.js';
import { newId } from './common.js';

/** Time without a step, while requests are pending, after which the engine counts as wedged. */
export const defaultWedgeTimeoutMs = 300_000;

/**
 * Why the server is not alive (engine dead, or no step for too long while busy), or null when
 * it is. Draining is not a liveness problem: /readiness reports it, so a probe does not restart
 * a server that is finishing its requests.
 */
export function healthProblem(ctx: ServerContext, wedgeTimeoutMs = ctx.wedgeTimeoutMs): string | null {
  const stats = ctx.engine.stats();
  if (stats.error !== null) return `The engine has failed: ${stats.error}`;
  const pending = stats.runningRequests + stats.waitingRequests;
  if (pending > 0) {
    const since = Math.max(stats.lastStepAt, ctx.busySince);
    const idleMs = Date.now() - since;
    if (idleMs > wedgeTimeoutMs) return `The engine is wedged: ${pending} requests pending and no step for ${(idleMs / 1000).toFixed(0)} s.`;
  }
  return null;
}

/** How long /health_generate waits for progress (SGLang's HEALTH_CHECK_TIMEOUT), at most the watchdog timeout. */
export const healthGenerateTimeoutMs = 20_000;
const progressPollMs = 20;

/**
 * SGLang's /health_generate: healthy when the engine makes progress within the timeout, that is
 * when any step completes after the probe arrived (a busy engine passes without its probe
 * running, as SGLang counts any output in the window) or the probe's own greedy token comes back.
 * A full queue is no failure: the probe then only watches for progress. Null when healthy, else
 * what went wrong.
 */
export async function generationProblem(ctx: ServerContext): Promise<string | null> {
  const before = healthProblem(ctx);
  if (before) return before;
  const timeoutMs = Math.min(ctx.wedgeTimeoutMs, healthGenerateTimeoutMs);
  const stepsBefore = ctx.engine.stats().stepsTotal;
  const id = newId('health');
  let stream: AsyncIterable<unknown> | null = null;
  try {
    const promptTokenIds = [ctx.model.tokenizer.bosTokenId ?? 0];
    stream = ctx.engine.generate({ id, promptTokenIds, params: { maxNewTokens: 1, temperature: 0 } });
  } catch (e) {
    if (!(e instanceof EngineOverloadedError)) return `generation failed: ${(e as Error).message}`;
  }
  let settled = false;
  const probe = new Promise<string | null>((resolve) => {
    if (!stream) return; // the queue is full: progress alone decides
    void (async () => {
      try {
        for await (const _delta of stream);
        resolve(null);
      } catch (e) {
        resolve(`generation failed: ${(e as Error).message}`);
      }
    })();
  });
  const deadline = Date.now() + timeoutMs;
  const progress = new Promise<string | null>((resolve) => {
    const check = () => {
      if (settled) return;
      const stats = ctx.engine.stats();
      if (stats.error !== null) return resolve(`The engine has failed: ${stats.error}`);
      if (stats.stepsTotal > stepsBefore) return resolve(null);
      if (Date.now() >= deadline) return resolve(`no engine step within ${(timeoutMs / 1000).toFixed(1)} s`);
      setTimeout(check, progressPollMs);
    };
    setTimeout(check, progressPollMs);
  });
  const problem = await Promise.race([probe, progress]);
  settled = true;
  if (stream) ctx.engine.abort(id);
  return problem;
}
