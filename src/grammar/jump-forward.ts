import type { Tokenizer } from '../model/tokenizer.js';
import type { TokenMatcher } from './token-matcher.js';

/**
 * Jump-forward (SGLang's compressed FSM): where the grammar allows one continuation only, its
 * tokens are appended without a model step. The forced text is tokenized as text, so the tokens
 * are the ones the tokenizer would give, at two boundaries:
 * - with the token sampled before it: `"` then `, "age": ` is `",` ` "` `age` `":` ` `, not `"` `,` ...;
 *   the matcher is rolled back past the sampled token, which is replaced;
 * - with the text after it: a last token of whitespace only (` `) would merge with the model's next
 *   word (` 42`), so it is left to the model (rolled back).
 * Every returned token is accepted by the matcher; tokens it refuses end the run.
 */
export function forcedTokens(matcher: TokenMatcher, tokenizer: Tokenizer, limit: number): number[] {
  if (matcher.terminated || limit <= 0) return [];
  const text = matcher.forcedText();
  if (text === '') return [];
  return acceptRun(matcher, tokenizer, tokenizer.encode(text, false), limit);
}

/**
 * The tokens to append for a sampled token the matcher has just accepted: itself and the forced
 * tokens after it, or their joint tokenization where it differs. At most `limit` tokens, at least one.
 */
export function continuationOf(matcher: TokenMatcher, tokenizer: Tokenizer, sampled: number, limit: number): number[] {
  if (matcher.terminated || limit <= 1) return [sampled];
  const forced = matcher.forcedText();
  if (forced === '') return [sampled];
  const sampledText = tokenizer.decode([sampled], false);
  const joint = sampledText.includes('\uFFFD') ? [] : tokenizer.encode(sampledText + forced, false);
  if (joint.length === 0 || joint[0] === sampled) return [sampled, ...forcedTokens(matcher, tokenizer, limit - 1)];
  // The tokens that spell the sampled token's text must all be taken, or the sampled token stays.
  let covering = 0;
  while (covering < joint.length && tokenizer.decode(joint.slice(0, covering), false).length < sampledText.length) covering++;
  matcher.rollback(1);
  const accepted = acceptRun(matcher, tokenizer, joint, limit);
  if (accepted.length >= covering && accepted.length > 0) return accepted;
  matcher.rollback(accepted.length);
  matcher.accept(sampled);
  return [sampled];
}

function acceptRun(matcher: TokenMatcher, tokenizer: Tokenizer, tokens: readonly number[], limit: number): number[] {
  const accepted: number[] = [];
  for (const id of tokens) {
    if (accepted.length >= limit || !matcher.accept(id)) break;
    accepted.push(id);
  }
  // Whitespace at the very end of the forced text: the model's next token may start with it.
  if (accepted.length > 0 && accepted.length === tokens.length && /^\s+$/.test(tokenizer.decode([accepted.at(-1)!], false))) {
    matcher.rollback(1);
    accepted.pop();
  }
  return accepted;
}
