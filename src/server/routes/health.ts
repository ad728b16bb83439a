import type { ServerContext } from '../context.js';
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

/**
 * SGLang's /health_generate: one greedy token through the engine, within the wedge timeout.
 * Null when it came back, else what went wrong.
 */
export async function generationProblem(ctx: ServerContext): Promise<string | null> {
  const before = healthProblem(ctx);
  if (before) return before;
  const id = newId('health');
  const promptTokenIds = [ctx.model.tokenizer.bosTokenId ?? 0];
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`no token within ${(ctx.wedgeTimeoutMs / 1000).toFixed(0)} s`), ctx.wedgeTimeoutMs);
  });
  const generation = (async () => {
    try {
      for await (const _delta of ctx.engine.generate({ id, promptTokenIds, params: { maxNewTokens: 1, temperature: 0 } }));
      return null;
    } catch (e) {
      return `generation failed: ${(e as Error).message}`;
    }
  })();
  const problem = await Promise.race([generation, timeout]);
  clearTimeout(timer);
  if (problem) ctx.engine.abort(id);
  return problem;
}
