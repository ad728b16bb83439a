import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { parseHfConfig, type LlamaConfig, type WeightDType } from './config.js';
// The hub client and the GGUF reader (@huggingface/hub, @huggingface/gguf: ~7 MB of heap that every
// full collection marks) are imported only for a Hugging Face id or a GGUF file.
import { parseHubModelId } from './hub/hub-id.js';
import type { HubSettings } from './hub/hub-settings.js';
import { DummyWeights } from './dummy-weights.js';
import { buildLlamaGraph, type LlamaGraph } from './graph.js';
import { defaultPreset, presetNames, presets } from './presets.js';
import { SafetensorsWeights } from './safetensors.js';
import { Tokenizer } from './tokenizer.js';
import { validateWeights, type WeightSource } from './weights.js';
import { OptionError, UserError } from '../errors.js';
import { samplingDefaultsFrom, type ModelSamplingDefaults } from '../engine/request-parameters.js';

export type LoadFormat = 'auto' | 'safetensors' | 'gguf' | 'dummy';

export interface LoadOptions {
  /** A preset name or a Hugging Face model folder; the default preset when absent. */
  modelPath?: string;
  loadFormat?: LoadFormat;
  /** Seed of dummy weights. */
  seed?: number;
  /** GGUF (openModel): the dtype quantized matrices are dequantized to (default f32; bf16 suits GPU backends). */
  dequantizeTo?: WeightDType;
}

export interface OpenOptions extends LoadOptions {
  /** Hugging Face ids: the branch, tag or commit (default main). */
  revision?: string;
  /** Download progress lines. */
  log?: (line: string) => void;
  /** Hub endpoint, token, offline mode and cache; from the HF_* environment variables by default. */
  hub?: HubSettings;
  /** A Jinja chat template file (or the template itself) replacing the tokenizer's. */
  chatTemplate?: string;
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
  /** Sampling defaults from generation_config.json, for requests that leave them out. */
  samplingDefaults?: ModelSamplingDefaults;
}

/**
 * Everything loadModel opens, and GGUF files: `model.gguf`, the first shard of a split one, or a
 * folder holding one GGUF model and no config.json.
 */
export async function openModel(options: OpenOptions = {}): Promise<LoadedModel> {
  const model = await openModelFiles(options);
  if (options.chatTemplate === undefined) return model;
  return { ...model, tokenizer: model.tokenizer.withChatTemplate(...readChatTemplate(options.chatTemplate)) };
}

/** A template from a file, or given inline when no such file exists and it looks like Jinja (as vLLM accepts both). */
function readChatTemplate(arg: string): [template: string, origin: string] {
  if (existsSync(arg)) return [readFileSync(arg, 'utf8'), arg];
  if (/\{[{%]/.test(arg)) return [arg, 'the chat template given inline'];
  throw new OptionError('chatTemplate', (name) => `${name('chatTemplate')} ${arg}: no such file`);
}

async function openModelFiles(options: OpenOptions): Promise<LoadedModel> {
  const given = options.modelPath;
  const hubId = given === undefined || (presets[given.toLowerCase()] && !existsSync(given)) ? null : parseHubModelId(given);
  if (hubId === null) {
    if (options.revision !== undefined) throw new OptionError('revision', (name) => `${name('revision')} applies to Hugging Face model ids (org/name), not ${given ?? 'a preset'}`);
    return openLocal(options);
  }
  const { resolveHubModel } = await import('./hub/hub-download.js');
  const modelPath = await resolveHubModel(hubId, { revision: options.revision, log: options.log, settings: options.hub });
  return { ...(await openLocal({ ...options, modelPath })), name: given! };
}

async function openLocal(options: OpenOptions): Promise<LoadedModel> {
  const gguf = options.modelPath === undefined ? null : await findGguf(options.modelPath, options.loadFormat ?? 'auto');
  if (gguf === null) {
    if (options.loadFormat === 'gguf') throw new UserError(`model path ${options.modelPath ?? defaultPreset} holds no GGUF file`);
    return loadModel(options);
  }
  if (options.loadFormat === 'dummy' || options.loadFormat === 'safetensors') {
    throw new OptionError('loadFormat', (name) => `${gguf}: a GGUF file loads with ${name('loadFormat')} auto or gguf`);
  }
  const { loadGguf } = await import('./gguf/load-gguf.js');
  const { config, tokenizer, weights } = await loadGguf(gguf, { dequantizeTo: options.dequantizeTo });
  validateWeights(config, weights);
  return finish(basename(gguf), gguf, config, tokenizer, weights, []);
}

/** The GGUF file a model path names, or null when it names something else. */
async function findGguf(modelPath: string, loadFormat: LoadFormat): Promise<string | null> {
  if (!existsSync(modelPath)) {
    if (modelPath.endsWith('.gguf')) throw new UserError(`model path ${modelPath} does not exist`);
    return null;
  }
  if (!statSync(modelPath).isDirectory()) return modelPath.endsWith('.gguf') || loadFormat === 'gguf' ? resolve(modelPath) : null;
  if (existsSync(join(modelPath, 'config.json')) && loadFormat !== 'gguf') return null;
  const files = readdirSync(modelPath).filter((f) => f.endsWith('.gguf'));
  if (files.length === 0) return null;
  // A split model counts once, by its first shard.
  const { parseGgufShardFilename } = await import('@huggingface/gguf');
  const ggufs = files.filter((f) => (parseGgufShardFilename(f)?.shard ?? '00001') === '00001').sort();
  if (ggufs.length === 0) return null;
  if (ggufs.length > 1) throw new UserError(`${modelPath} holds several GGUF models (${ggufs.join(', ')}): give one file as --model-path`);
  return resolve(modelPath, ggufs[0]!);
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
    throw new UserError(`model path ${modelPath} does not exist (give a model folder, a GGUF file, a Hugging Face id org/name or a preset: ${presetNames().join(', ')})`);
  }
  if (!statSync(dir).isDirectory()) throw new UserError(`model path ${modelPath} is not a folder`);
  const configFile = join(dir, 'config.json');
  if (!existsSync(configFile)) throw new UserError(`${configFile}: not found (a model folder needs config.json)`);
  const config = parseHfConfig(readJson(configFile), configFile);
  const tokenizer = Tokenizer.fromDir(dir);
  // A larger embedding than the tokenizer needs is common (padded vocabularies); the reverse cannot run.
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new UserError(`${join(dir, 'tokenizer.json')}: the tokenizer has ${tokenizer.vocabSize} tokens but ${configFile} says vocab_size ${config.vocabSize}`);
  }
  const generationConfigFile = join(dir, 'generation_config.json');
  const generationConfig = existsSync(generationConfigFile) ? readJson(generationConfigFile) : {};
  const extraEos = eosList(generationConfig.eos_token_id);
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
  const model = finish(basename(dir), dir, config, tokenizer, weights, extraEos);
  return { ...model, samplingDefaults: samplingDefaultsFrom(generationConfig, generationConfigFile) };
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
