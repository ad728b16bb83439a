import type { ServerContext } from './context.js';

/** Time without a step, while requests are pending, after which the engine counts as wedged. */
export const defaultWedgeTimeoutMs = 300_000;

/** Why the server cannot take requests (shutting down, engine dead, or no step for too long while busy), or null when healthy. */
export function healthProblem(ctx: ServerContext, wedgeTimeoutMs = ctx.wedgeTimeoutMs): string | null {
  if (ctx.draining) return 'The server is shutting down.';
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
