import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { parseHfConfig, type LlamaConfig } from './config.js';
import { DummyWeights } from './dummy-weights.js';
import { buildLlamaGraph, type LlamaGraph } from './graph.js';
import { defaultPreset, presetNames, presets } from './presets.js';
import { SafetensorsWeights } from './safetensors.js';
import { Tokenizer } from './tokenizer.js';
import { validateWeights, type WeightSource } from './weights.js';
import { OptionError, UserError } from '../errors.js';

export type LoadFormat = 'auto' | 'safetensors' | 'dummy';

export interface LoadOptions {
  /** A preset name or a Hugging Face model folder; the default preset when absent. */
  modelPath?: string;
  loadFormat?: LoadFormat;
  /** Seed of dummy weights. */
  seed?: number;
}

/** Everything about a model except the backend that runs it. */
export interface LoadedModel {
  /** The preset name or the folder's base name: what /v1/models lists by default. */
  name: string;
  path: string;
  config: LlamaConfig;
  graph: LlamaGraph;
  tokenizer: Tokenizer;
  weights: WeightSource;
  /** Token ids that end generation: the config's, the generation config's and the tokenizer's. */
  stopTokenIds: number[];
}

export function loadModel(options: LoadOptions = {}): LoadedModel {
  const modelPath = options.modelPath ?? defaultPreset;
  const loadFormat = options.loadFormat ?? 'auto';
  const preset = presets[modelPath.toLowerCase()];
  if (preset && !existsSync(modelPath)) {
    if (loadFormat === 'safetensors') {
      throw new OptionError('loadFormat', (name) => `${modelPath} is a preset: it has random weights only (${name('loadFormat')} dummy)`);
    }
    const tokenizer = Tokenizer.llama3();
    return finish(modelPath.toLowerCase(), modelPath, preset, tokenizer, new DummyWeights(preset, options.seed ?? 0), []);
  }
  const dir = resolve(modelPath);
  if (!existsSync(dir)) {
    throw new UserError(`model path ${modelPath} does not exist (give a Hugging Face model folder or a preset: ${presetNames().join(', ')})`);
  }
  if (!statSync(dir).isDirectory()) throw new UserError(`model path ${modelPath} is not a folder`);
  const configFile = join(dir, 'config.json');
  if (!existsSync(configFile)) throw new UserError(`${configFile}: not found (a model folder needs config.json)`);
  const config = parseHfConfig(readJson(configFile), configFile);
  const tokenizer = Tokenizer.fromDir(dir);
  const generationConfig = join(dir, 'generation_config.json');
  const extraEos = existsSync(generationConfig) ? eosList(readJson(generationConfig).eos_token_id) : [];
  let weights: WeightSource;
  if (loadFormat === 'dummy') {
    weights = new DummyWeights(config, options.seed ?? 0);
  } else {
    const found = SafetensorsWeights.fromDir(dir);
    if (!found) {
      throw new OptionError('loadFormat', (name) => `${dir}: no model.safetensors or model.safetensors.index.json (use ${name('loadFormat')} dummy for random weights)`);
    }
    weights = found;
  }
  validateWeights(config, weights);
  return finish(basename(dir), dir, config, tokenizer, weights, extraEos);
}

function finish(
  name: string,
  path: string,
  config: LlamaConfig,
  tokenizer: Tokenizer,
  weights: WeightSource,
  extraEos: number[],
): LoadedModel {
  const stopTokenIds = [...new Set([...config.eosTokenIds, ...extraEos, ...tokenizer.eosTokenIds])];
  return { name, path, config, graph: buildLlamaGraph(config), tokenizer, weights, stopTokenIds };
}

function readJson(file: string): any {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

function eosList(v: unknown): number[] {
  if (typeof v === 'number') return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === 'number');
  return [];
}
