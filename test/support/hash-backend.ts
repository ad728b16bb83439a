import type { Backend, ForwardBatch, StepOutput } from '../../src/engine/backend.js';
import { inputToken } from './instant-backend.js';

/**
 * A stand-in model for scheduling tests: the next token is a hash of the KV the sequence
 * attends to (each slot holds a hash of the token and position written there), so any page
 * mix-up, stale prefix or lost retraction changes the output. Runs thousands of steps a second.
 */
export class HashBackend implements Backend {
  readonly name = 'hash';
  readonly description = 'hash model for scheduling tests';
  /** With overlap, input tokens still "on the device" come from the last step's output (ForwardBatch.previousRow). */
  readonly overlapsSteps: boolean;
  /** Rows that took their input token from the previous step's output, in all. */
  overlappedRows = 0;
  private kv = new Int32Array(0);
  private pageSize = 1;
  private lastTokens = new Int32Array(0);

  constructor(options: { overlapsSteps?: boolean } = {}) {
    this.overlapsSteps = options.overlapsSteps ?? false;
  }

  async load(): Promise<void> {}
  kvCapacity(budget: { maxTotalTokens: number | null }): number {
    return budget.maxTotalTokens ?? 1 << 16;
  }
  async allocateKvCache(spec: { numPages: number; pageSize: number }): Promise<void> {
    this.kv = new Int32Array(spec.numPages * spec.pageSize).fill(-1);
    this.pageSize = spec.pageSize;
  }
  async close(): Promise<void> {}

  async forward(batch: ForwardBatch): Promise<StepOutput> {
    const numSeqs = batch.kvLens.length;
    // Steps run in launch order (each is computed when forward() is called), as on a device stream.
    for (let t = 0; t < batch.tokenIds.length; t++) {
      if ((batch.previousRow?.[t] ?? -1) >= 0) this.overlappedRows++;
      this.kv[batch.slotMapping[t]!] = slotHash(inputToken(batch, t, this.lastTokens), batch.positions[t]!);
    }
    const tokens = new Int32Array(numSeqs);
    for (let s = 0; s < numSeqs; s++) {
      let h = 0;
      for (let p = 0; p < batch.kvLens[s]!; p++) {
        const page = batch.pageTable[batch.pageTableStart[s]! + Math.floor(p / this.pageSize)]!;
        h = mix(h, this.kv[page * this.pageSize + (p % this.pageSize)]!);
      }
      tokens[s] = nextTokenOf(h);
    }
    this.lastTokens = tokens;
    await Promise.resolve();
    return { tokens, logprobs: null, topLogprobs: null };
  }
}

function slotHash(token: number, position: number): number {
  return Math.imul(token + 1, 0x9e3779b1) ^ Math.imul(position + 7, 0x85ebca6b);
}

function mix(h: number, x: number): number {
  return (Math.imul(h ^ x, 0x27d4eb2d) + 0x165667b1) | 0;
}

function nextTokenOf(h: number): number {
  return 1000 + ((h >>> 0) % 50000);
}

/** What HashBackend generates for a prompt when nothing goes wrong: the oracle. */
export function hashModelOutput(promptIds: number[], count: number): number[] {
  const tokens = promptIds.slice();
  for (let i = 0; i < count; i++) {
    let h = 0;
    for (let p = 0; p < tokens.length; p++) h = mix(h, slotHash(tokens[p]!, p));
    tokens.push(nextTokenOf(h));
  }
  return tokens.slice(promptIds.length);
}
