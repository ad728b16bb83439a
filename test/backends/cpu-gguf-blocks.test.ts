import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { create, type CpuBackendOptions } from '../../backends/cpu/index.js';
import { nativeBlocks } from '../../backends/cpu/native-blocks.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { buildLlamaGraph } from '../../src/model/graph.js';
import { openModel } from '../../src/model/load.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import type { WeightSource } from '../../src/model/weights.js';
import { writeGguf } from '../support/gguf-writer.js';
import { tinyVariant } from '../support/reference-runs.js';
import { SingleSequence } from '../support/single-sequence.js';

// A Q8_0 / Q4_0 GGUF on the cpu backend: its blocks run as stored (no dequantize-requantize),
// at the file's bits by default, and give what the cpu backend's own q8 / q4 of the same weights give,
// in ORT's MatMulNBits and (where the addon is built) in the host linears' tile kernels.

const config: LlamaConfig = { ...tinyVariant(), dtype: 'bf16' };
const dir = mkdtempSync(join(tmpdir(), 'sluice-cpu-gguf-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const prompt = Tokenizer.llama3().encode('The quick brown fox jumps over');

async function greedy(weights: WeightSource, options: CpuBackendOptions = {}) {
  const backend = await create({ threads: 2, ...options });
  try {
    await backend.load({ config, graph: buildLlamaGraph(config), weights });
    await backend.allocateKvCache({ numPages: 64, pageSize: 1 });
    return { description: backend.description, ...(await new SingleSequence(backend, 0).greedy(prompt, 12)) };
  } finally {
    await backend.close();
  }
}

describe('cpu backend on a quantized GGUF', () => {
  it.each([
    ['q8_0', 'ort', 'q8', 'Q8_0'],
    ['q4_0', 'ort', 'q4', 'Q4_0'],
    ...(nativeBlocks
      ? ([
          ['q8_0', 'native', 'q8', 'Q8_0'],
          ['q4_0', 'native', 'q4', 'Q4_0'],
        ] as const)
      : []),
  ] as const)('%s (--cpu-gemm %s): the file blocks run as they are, equal to the backend quantizing the same weights', async (dtype, cpuGemm, format, typeName) => {
    const source = new DummyWeights(config, 3, 'bf16');
    const file = join(dir, `${dtype}.gguf`);
    await writeGguf(file, { config, tokenizer: Tokenizer.llama3(), weights: source }, { dtype });
    const model = await openModel({ modelPath: file });
    const matrixReads: string[] = [];
    const counted: WeightSource = {
      description: model.weights.description,
      random: false,
      info: (name) => model.weights.info(name),
      storedType: (name) => model.weights.storedType?.(name),
      storedBlocks: (name) => model.weights.storedBlocks!(name),
      read: (name) => {
        if (model.weights.info(name)!.shape.length === 2) matrixReads.push(name);
        return model.weights.read(name);
      },
      close: () => model.weights.close(),
    };
    const fromFile = await greedy(counted, { cpuGemm });
    expect(fromFile.description).toContain(`${typeName} blocks, as the GGUF file stores them`);
    if (cpuGemm === 'native') expect(fromFile.description).toContain(`native/cpu ${format}TilesGemm`);
    expect(matrixReads).toEqual([]);
    const quantizedHere = await greedy(source, { cpuWeights: format, cpuGemm });
    expect(fromFile.tokens).toEqual(quantizedHere.tokens);
    fromFile.logprobs.forEach((lp, i) => expect(Math.abs(lp - quantizedHere.logprobs[i]!)).toBeLessThan(1e-4));
  });
});
