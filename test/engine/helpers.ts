import { expect } from 'vitest';
import type { Backend, ForwardBatch, StepOutput } from '../../src/engine/backend.js';
import { RefBackend } from '../../backends/ref/ref-backend.js';
import { LlmEngine } from '../../src/engine/engine.js';
import type { EngineOptions } from '../../src/engine/options.js';
import type { GenerateDelta, SamplingParams } from '../../src/engine/types.js';
import { loadModel, type LoadedModel } from '../../src/model/load.js';
import { SingleSequence } from '../support/single-sequence.js';

export const model: LoadedModel = loadModel({ modelPath: 'tiny' });

export const quiet = { warn: (_message: string) => {} };

/** Wraps a backend to watch (and interfere with) each forward step. */
export class HookedBackend implements Backend {
  readonly name: Backend['name'];
  readonly description = 'ref with a test hook';
  calls = 0;

  constructor(
    private readonly inner: Backend,
    private readonly onForward: (batch: ForwardBatch, call: number) => void | Promise<void>,
  ) {
    this.name = inner.name;
  }
  load = (m: Parameters<Backend['load']>[0]) => this.inner.load(m);
  memory = () => this.inner.memory();
  kvBytesPerToken = () => this.inner.kvBytesPerToken();
  allocateKvCache = (spec: Parameters<Backend['allocateKvCache']>[0]) => this.inner.allocateKvCache(spec);
  close = () => this.inner.close();
  async forward(batch: ForwardBatch): Promise<StepOutput> {
    await this.onForward(batch, ++this.calls);
    return this.inner.forward(batch);
  }
}

export function createEngine(options: Partial<EngineOptions> = {}, backend: Backend = new RefBackend()): Promise<LlmEngine> {
  return LlmEngine.create(model, backend, { maxTotalTokens: 1024, logger: quiet, ...options });
}

export interface Sample {
  tokenIds: number[];
  text: string;
  finishReason: string | null;
  matchedStop: string | number | null;
  deltas: GenerateDelta[];
}

/** Reads a whole stream, grouping deltas by sample index. */
export async function collect(stream: AsyncIterable<GenerateDelta>): Promise<Sample[]> {
  const samples: Sample[] = [];
  for await (const delta of stream) {
    const sample = (samples[delta.index] ??= { tokenIds: [], text: '', finishReason: null, matchedStop: null, deltas: [] });
    expect(sample.finishReason).toBeNull();
    sample.tokenIds.push(...delta.tokenIds);
    sample.text += delta.text;
    sample.finishReason = delta.finishReason;
    sample.matchedStop = delta.matchedStop;
    sample.deltas.push(delta);
  }
  return samples;
}

export async function generateOne(engine: LlmEngine, promptTokenIds: number[], params: Partial<SamplingParams>): Promise<Sample> {
  const [sample] = await collect(engine.generate({ promptTokenIds, params }));
  return sample!;
}

/** Prompt ids from text (with BOS). */
export function prompt(text: string): number[] {
  return model.tokenizer.encode(text);
}

/** The greedy continuation computed directly, one sequence, no engine: the oracle. */
export async function directGreedy(promptIds: number[], count: number): Promise<{ tokens: number[]; logprobs: number[] }> {
  const backend = new RefBackend();
  await backend.load(model);
  await backend.allocateKvCache({ numPages: promptIds.length + count, pageSize: 1 });
  const result = await new SingleSequence(backend, 0).greedy(promptIds, count);
  await backend.close();
  return result;
}

/**
 * A stand-in model for scheduling tests: the next token is a hash of the KV the sequence
 * attends to (each slot holds a hash of the token and position written there), so any page
 * mix-up, stale prefix or lost retraction changes the output. Runs thousands of steps a second.
 */
export class HashBackend implements Backend {
  readonly name = 'ref' as const;
  readonly description = 'hash model for scheduling tests';
  private kv = new Int32Array(0);
  private pageSize = 1;

  async load(): Promise<void> {}
  memory(): null {
    return null;
  }
  kvBytesPerToken(): number {
    return 4;
  }
  async allocateKvCache(spec: { numPages: number; pageSize: number }): Promise<void> {
    this.kv = new Int32Array(spec.numPages * spec.pageSize).fill(-1);
    this.pageSize = spec.pageSize;
  }
  async close(): Promise<void> {}

  async forward(batch: ForwardBatch): Promise<StepOutput> {
    const numSeqs = batch.kvLens.length;
    for (let t = 0; t < batch.tokenIds.length; t++) this.kv[batch.slotMapping[t]!] = slotHash(batch.tokenIds[t]!, batch.positions[t]!);
    const tokens = new Int32Array(numSeqs);
    for (let s = 0; s < numSeqs; s++) {
      let h = 0;
      for (let p = 0; p < batch.kvLens[s]!; p++) {
        const page = batch.pageTable[batch.pageTableStart[s]! + Math.floor(p / this.pageSize)]!;
        h = mix(h, this.kv[page * this.pageSize + (p % this.pageSize)]!);
      }
      tokens[s] = nextTokenOf(h);
    }
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
