import type { PromptTokenLogprob, TokenLogprob } from '../../engine/types.js';
import type { TokenText } from './token-text.js';
import type { ChatTokenLogprob } from './chat.js';
import type { CompletionLogprobs } from './completions.js';

/** Finite log-probs only: JSON has no -Infinity. */
function finite(x: number): number {
  return Number.isFinite(x) ? x : -9999;
}

export function emptyCompletionLogprobs(): CompletionLogprobs {
  return { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
}

/** Appends tokens to a /v1/completions log-prob listing; `offsetOf` gives each token's text offset in the choice's text. */
export function appendCompletionLogprobs(target: CompletionLogprobs, logprobs: TokenLogprob[], tokenText: TokenText, offsetOf: (tokenId: number) => number): void {
  for (const lp of logprobs) {
    const text = tokenText.text(lp.tokenId);
    target.tokens.push(text);
    target.token_logprobs.push(finite(lp.logprob));
    const top: Record<string, number> = {};
    if (lp.top.length === 0) top[text] = finite(lp.logprob);
    for (const alt of lp.top) {
      const altText = tokenText.text(alt.tokenId);
      if (!(altText in top)) top[altText] = finite(alt.logprob);
    }
    target.top_logprobs!.push(top);
    target.text_offset.push(offsetOf(lp.tokenId));
  }
}

export function chatLogprobs(logprobs: TokenLogprob[], tokenText: TokenText): ChatTokenLogprob[] {
  return logprobs.map((lp) => ({
    token: tokenText.text(lp.tokenId),
    logprob: finite(lp.logprob),
    bytes: tokenText.bytes(lp.tokenId),
    top_logprobs: lp.top.map((alt) => ({
      token: tokenText.text(alt.tokenId),
      logprob: finite(alt.logprob),
      bytes: tokenText.bytes(alt.tokenId),
    })),
  }));
}

/** The prompt's tokens at the head of an echoed listing: null log-probs where none were computed (the first token). */
export function appendPromptLogprobs(target: CompletionLogprobs, entries: PromptTokenLogprob[], tokenText: TokenText, withSpecialTokens: boolean): void {
  const offsets = tokenText.offsets(!withSpecialTokens);
  for (const entry of entries) {
    const text = tokenText.text(entry.tokenId);
    target.tokens.push(text);
    target.text_offset.push(offsets.next(entry.tokenId));
    if (Number.isNaN(entry.logprob)) {
      target.token_logprobs.push(null);
      target.top_logprobs!.push(null);
      continue;
    }
    target.token_logprobs.push(finite(entry.logprob));
    const top: Record<string, number> = {};
    for (const alt of entry.top) {
      const altText = tokenText.text(alt.tokenId);
      if (!(altText in top)) top[altText] = finite(alt.logprob);
    }
    if (!(text in top)) top[text] = finite(entry.logprob);
    target.top_logprobs!.push(top);
  }
}

/** vLLM's prompt_logprobs: per prompt token, its own and its top alternatives' log-probs by token id; null where none. */
export function vllmPromptLogprobs(entries: PromptTokenLogprob[], tokenText: TokenText): (Record<string, { logprob: number; rank: number; decoded_token: string }> | null)[] {
  return entries.map((entry) => {
    if (Number.isNaN(entry.logprob)) return null;
    const out: Record<string, { logprob: number; rank: number; decoded_token: string }> = {
      [entry.tokenId]: { logprob: finite(entry.logprob), rank: entry.rank, decoded_token: tokenText.text(entry.tokenId) },
    };
    entry.top.forEach((alt, i) => {
      out[alt.tokenId] ??= { logprob: finite(alt.logprob), rank: i + 1, decoded_token: tokenText.text(alt.tokenId) };
    });
    return out;
  });
}
