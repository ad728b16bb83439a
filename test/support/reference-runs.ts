import { RefBackend } from '../../backends/ref/ref-backend.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { buildLlamaGraph } from '../../src/model/graph.js';
import { presets } from '../../src/model/presets.js';
import { SingleSequence } from './single-sequence.js';
import type { WeightSource } from '../../src/model/weights.js';

/** The tiny preset with some fields changed: the shapes the parity tests cover. */
export function tinyVariant(overrides: Partial<LlamaConfig> = {}): LlamaConfig {
  return { ...presets.tiny!, ...overrides };
}

export interface GreedyRun {
  tokens: number[];
  /** Log-prob of each chosen token under the model's distribution. */
  logprobs: number[];
}

/** The ref backend loaded once, running greedy continuations of any number of prompts. */
export async function refRunner(config: LlamaConfig, weights: WeightSource) {
  const backend = new RefBackend();
  await backend.load({ config, graph: buildLlamaGraph(config), weights });
  return {
    async greedy(promptIds: number[], count: number): Promise<GreedyRun> {
      await backend.allocateKvCache({ numPages: promptIds.length + count, pageSize: 1 });
      return new SingleSequence(backend, 0).greedy(promptIds, count);
    },
    close: () => backend.close(),
  };
}
