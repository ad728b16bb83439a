import { randomUUID } from 'node:crypto';
import type { ServerContext } from '../context.js';
import { invalidParam, unknownModel } from '../http/errors.js';

export function newId(prefix: string): string {
  return `${prefix}-${randomUUID().replaceAll('-', '')}`;
}

export function unixSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** A request may name the served model (or the path it was loaded from); anything else is a 404. */
export function checkModel(ctx: ServerContext, model: string | null | undefined): void {
  if (model == null || model === '' || model === ctx.servedModelName || model === ctx.model.path || model === ctx.model.name) return;
  throw unknownModel(model, ctx.servedModelName);
}

export function checkTokenIds(ctx: ServerContext, ids: number[], param: string): void {
  const vocab = ctx.model.config.vocabSize;
  const bad = ids.find((id) => id >= vocab);
  if (bad !== undefined) throw invalidParam(param, `Invalid value for '${param}': token id ${bad} is not below the vocabulary size ${vocab}.`);
}

/** Logs one line per finished request unless --disable-log-requests. */
export function logRequest(ctx: ServerContext, route: string, id: string, promptTokens: number, completionTokens: number, ms: number, outcome: string): void {
  if (!ctx.logRequests) return;
  ctx.log.info(`${route} ${id}: ${promptTokens} prompt + ${completionTokens} completion tokens in ${ms.toFixed(0)} ms (${outcome})`);
}
