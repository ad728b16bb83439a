import { Option, type Command } from 'commander';
import { backendChoices, backendHelp, createBackend, type BackendName } from '../../backends/index.js';
import { cpuWeightFormats, type Backend, type BackendOptions, type CpuWeightFormat } from '../engine/backend.js';
import { UserError } from '../errors.js';
import { parseIntOption } from './options.js';

/** The flags every backend setting travels by, as commander parses them. */
export interface BackendFlags {
  /** Commander checks it against the registry's choices. */
  backend: BackendName | 'auto';
  threads?: number;
  baseGpuId?: number;
  cpuWeights?: CpuWeightFormat;
  webgpuAttentionSplit?: number;
  disableCudaGraph?: boolean;
}

/** Adds --backend (choices and help from the registry) and each backend's settings to a command. */
export function addBackendFlags(command: Command): Command {
  return command
    .addOption(new Option('--backend <name>', backendHelp()).choices(backendChoices).default('auto'))
    .option('--threads <n>', 'cpu backend: intra-op threads (default: all cores)', parseIntOption)
    .option('--base-gpu-id <n>', 'cuda backend: the GPU to run on', parseIntOption)
    .addOption(
      new Option('--cpu-weights <format>', 'cpu backend: f32 runs exact; q8 (8-bit weights) is faster (default: f32 for f32 checkpoints, else q8)')
        .choices(cpuWeightFormats)
        .env('SLUICE_CPU_WEIGHTS'),
    )
    .option('--webgpu-attention-split <n>', 'webgpu backend: KV positions per decode-attention split', parseIntOption);
}

/** The backend the flags name, created with their settings; bad values fail before any loading. */
export function createBackendFromFlags(flags: BackendFlags): Promise<Backend> {
  return createBackend(flags.backend, backendOptions(flags));
}

export function backendOptions(flags: BackendFlags): BackendOptions {
  if (flags.threads !== undefined && flags.threads < 1) throw new UserError(`--threads must be at least 1, got ${flags.threads}`);
  if (flags.baseGpuId !== undefined && flags.baseGpuId < 0) throw new UserError(`--base-gpu-id must be 0 or more, got ${flags.baseGpuId}`);
  if (flags.webgpuAttentionSplit !== undefined && flags.webgpuAttentionSplit < 1) {
    throw new UserError(`--webgpu-attention-split must be at least 1, got ${flags.webgpuAttentionSplit}`);
  }
  return {
    threads: flags.threads,
    device: flags.baseGpuId,
    cpuWeights: flags.cpuWeights,
    webgpuAttentionSplit: flags.webgpuAttentionSplit,
    graphCapture: flags.disableCudaGraph ? false : undefined,
  };
}
