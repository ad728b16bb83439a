import type { GenerateDelta } from '../../engine/types.js';
import type { UsageTally } from './usage.js';

/**
 * One protocol's view of a generation: every engine delta becomes one wire chunk, and the
 * non-streamed response is the fold of the chunks a stream would carry, so both paths agree.
 */
export interface Accumulator<Chunk, Response> {
  /** Token usage so far, over every prompt and sample. */
  readonly usage: UsageTally;
  /** Chunks sent before the first delta (chat: one role chunk per choice). */
  opening(): Chunk[];
  /** The chunk that carries one engine delta of prompt `prompt`. */
  chunk(prompt: number, delta: GenerateDelta): Chunk;
  /**
   * The same chunk as JSON text, byte for byte `JSON.stringify(chunk(prompt, delta))`, for the
   * stream. Optional: a protocol that has it builds the common chunk (text only) from a template
   * per choice, escaping only the delta's text, instead of building and serializing an object
   * per token.
   */
  frame?(prompt: number, delta: GenerateDelta): string;
  /** Chunks sent after the last delta (the usage chunk, when asked for). */
  closing(): Chunk[];
  /** An empty response that chunks fold into. */
  fold(): Fold<Chunk, Response>;
}

export interface Fold<Chunk, Response> {
  add(chunk: Chunk): void;
  result(): Response;
}

/** Folds every chunk of a finished generation: what a client that reassembles the stream would get. */
export function foldAll<Chunk, Response>(accumulator: Accumulator<Chunk, Response>, chunks: Iterable<Chunk>): Response {
  const fold = accumulator.fold();
  for (const chunk of chunks) fold.add(chunk);
  return fold.result();
}
