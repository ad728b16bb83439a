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

export interface RequestLog {
  route: string;
  /** The response's id (cmpl-..., rid). */
  id: string;
  /** X-Request-Id. */
  requestId: string | null;
  promptTokens: number;
  completionTokens: number;
  ms: number;
  outcome: string;
}

/** Logs one line per finished request unless --disable-log-requests (as JSON fields with --log-format json). */
export function logRequest(ctx: ServerContext, r: RequestLog): void {
  if (!ctx.logRequests) return;
  const requestId = r.requestId && r.requestId !== r.id ? ` [${r.requestId}]` : '';
  ctx.log.info(`${r.route} ${r.id}${requestId}: ${r.promptTokens} prompt + ${r.completionTokens} completion tokens in ${r.ms.toFixed(0)} ms (${r.outcome})`, {
    route: r.route,
    id: r.id,
    request_id: r.requestId,
    prompt_tokens: r.promptTokens,
    completion_tokens: r.completionTokens,
    duration_ms: Math.round(r.ms),
    outcome: r.outcome,
  });
}

/** Characters of text tokenized to look at before tokenizing a long text whole, per context token. */
const probeCharsPerToken = 8;
/** Tokens a cut-off text may gain at the cut (its last word split differently). */
const probeSlack = 256;

/**
 * Tokenizes a prompt text, refusing text that cannot fit the context before tokenizing all of it
 * (tokenizing megabytes blocks the event loop for seconds): more characters than the context
 * times the longest token's bytes cannot fit at all; for a long text, a leading part that
 * already has more tokens than the context settles it.
 */
export async function encodePrompt(ctx: ServerContext, text: string, param: string, addSpecialTokens = true): Promise<number[]> {
  const context = ctx.contextLength;
  const tooLong = (atLeast: string) =>
    invalidParam(param, `This model's maximum context length is ${context} tokens. However, your prompt is ${atLeast}. Please reduce the length of the prompt.`, 'context_length_exceeded');
  if (text.length > context * ctx.tokenText.maxTokenBytes) throw tooLong(`${text.length} characters long, more than ${context} tokens can hold`);
  const probe = context * probeCharsPerToken;
  if (text.length > probe) {
    const head = (await ctx.prompts.encode(text.slice(0, probe), false)).length;
    if (head > context + probeSlack) throw tooLong(`longer than ${head - probeSlack} tokens`);
  }
  return ctx.prompts.encode(text, addSpecialTokens);
}
