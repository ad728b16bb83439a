import { expect } from 'vitest';
import type { Backend } from '../../src/engine/backend.js';
import { RefBackend } from '../../backends/ref/ref-backend.js';
import { LlmEngine } from '../../src/engine/engine.js';
import type { EngineOptions } from '../../src/engine/options.js';
import type { GenerateDelta, SamplingParams } from '../../src/engine/types.js';
import { loadModel, type LoadedModel } from '../../src/model/load.js';
import { SingleSequence } from './single-sequence.js';

export const model: LoadedModel = loadModel({ modelPath: 'tiny' });

export const quiet = { warn: (_message: string) => {} };

export function createEngine(options: Partial<EngineOptions> = {}, backend: Backend = new RefBackend(), served: LoadedModel = model): Promise<LlmEngine> {
  return LlmEngine.create(served, backend, { maxTotalTokens: 1024, logger: quiet, ...options });
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
