import type { GenerateDelta } from '../../engine/types.js';

interface ChoiceState {
  /** Deltas not sent yet, merged into one. */
  held: GenerateDelta | null;
  heldTokens: number;
  started: boolean;
}

/**
 * `--stream-interval N` (SGLang's and vLLM's flag): a streamed choice is sent every N tokens
 * instead of every token. Its first delta goes at once (time to first token is unchanged) and
 * its last one (with the finish reason) is never held back; the deltas between are merged,
 * N tokens to a chunk, so a client gets the same text and token ids in fewer events.
 */
export class StreamInterval {
  /** Per prompt, per sample index. */
  private readonly choices: ChoiceState[][] = [];

  constructor(private readonly tokens: number) {}

  /** The delta to send now (with the held ones before it merged in), or null to hold it. */
  take(prompt: number, delta: GenerateDelta): GenerateDelta | null {
    if (this.tokens <= 1) return delta;
    const choice = ((this.choices[prompt] ??= [])[delta.index] ??= { held: null, heldTokens: 0, started: false });
    const merged = choice.held ? appendDelta(choice.held, delta) : delta;
    choice.heldTokens += delta.tokenIds.length;
    if (choice.started && choice.heldTokens < this.tokens && delta.finishReason === null) {
      choice.held = choice.held ?? copyDelta(delta);
      return null;
    }
    choice.started = true;
    choice.held = null;
    choice.heldTokens = 0;
    return merged;
  }
}

/** A copy that later deltas can be appended to without touching the engine's object. */
function copyDelta(delta: GenerateDelta): GenerateDelta {
  return { ...delta, tokenIds: delta.tokenIds.slice(), logprobs: delta.logprobs?.slice() ?? null };
}

/** `later` appended to `held` (a copy of ours): text, ids and log-probs joined; the end fields are the later delta's. */
function appendDelta(held: GenerateDelta, later: GenerateDelta): GenerateDelta {
  held.text += later.text;
  for (const id of later.tokenIds) held.tokenIds.push(id);
  if (later.logprobs) held.logprobs = held.logprobs ? held.logprobs.concat(later.logprobs) : later.logprobs.slice();
  held.promptLogprobs ??= later.promptLogprobs;
  held.finishReason = later.finishReason;
  held.matchedStop = later.matchedStop;
  held.usage = later.usage;
  if (later.timing) held.timing = later.timing;
  return held;
}
