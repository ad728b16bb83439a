import { Option, type Command } from 'commander';
import { backendChoices, backendHelp, createBackend, type BackendName } from '../../backends/index.js';
import { cpuGemmKernels, cpuWeightFormats, kvCacheDtypes, type Backend, type BackendOptions, type CpuGemmKernel, type CpuWeightFormat, type KvCacheDtype } from '../engine/backend.js';
import { UserError } from '../errors.js';
import { parseIntOption } from './options.js';

/** The flags every backend setting travels by, as commander parses them. */
export interface BackendFlags {
  /** Commander checks it against the registry's choices. */
  backend: BackendName | 'auto';
  threads?: number;
  baseGpuId?: number;
  cpuWeights?: CpuWeightFormat;
  cpuGemm?: CpuGemmKernel;
  /** SGLang's flag, refused with a pointer to --cpu-weights (see backendOptions). */
  quantization?: string;
  /** SGLang's and vLLM's KV cache dtype: `auto` (each backend's own), or fp8 / fp8_e4m3 / fp8_e5m2 / q8_0 on the cpu backend. */
  kvCacheDtype?: string;
  webgpuAttentionSplit?: number;
  disableCudaGraph?: boolean;
  /** Tensor-parallel ranks (SGLang's --tp-size, alias --tp); 1: no tensor parallelism. */
  tpSize?: number;
  tp?: number;
  /** vLLM's name of --tp-size. */
  tensorParallelSize?: number;
}

/** Adds --backend (choices and help from the registry) and each backend's settings to a command. */
export function addBackendFlags(command: Command): Command {
  return command
    .addOption(new Option('--backend <name>', backendHelp()).choices(backendChoices).default('auto'))
    .option('--threads <n>', 'cpu backend: intra-op threads (default: all cores)', parseIntOption)
    .option('--base-gpu-id <n>', 'cuda backend: the GPU to run on (with --tp-size N: rank r on GPU base + r)', parseIntOption)
    .option('--tp-size <n>', 'tensor-parallel ranks: the model is sharded over N ranks (ref, cpu: worker threads; cuda: one rank per GPU, NCCL; see docs/architecture.md)', parseIntOption)
    .option('--tp <n>', 'alias of --tp-size', parseIntOption)
    .option('--tensor-parallel-size <n>', "alias of --tp-size (vLLM's name)", parseIntOption)
    .addOption(
      new Option(
        '--cpu-weights <format>',
        'cpu backend: f32 runs exact; q8 (GGUF Q8_0 blocks) and q4 (GGUF Q4_0 blocks) quantize BF16/F16 weights at load and run faster (default: f32 for f32 checkpoints, else q8)',
      )
        .choices(cpuWeightFormats)
        .env('SLUICE_CPU_WEIGHTS'),
    )
    .addOption(
      new Option(
        '--cpu-gemm <kernel>',
        "cpu backend: where the layers run: native = on the host through the native/cpu addon's Q8_0 / Q4_0 kernels (q8 or q4 weights), ort = onnxruntime sessions (MatMulNBits), auto (default) = native where the addon is built and the weights are q8 or q4, else ort",
      )
        .choices(cpuGemmKernels)
        .env('SLUICE_CPU_GEMM'),
    )
    .option(
      '--kv-cache-dtype <dtype>',
      `KV cache data type: ${kvCacheDtypes.join(', ')}; auto is each backend's own (f32 on cpu); fp8 (= fp8_e4m3) and fp8_e5m2 (vLLM's and SGLang's names) store one byte per value, q8_0 and q4_0 (llama.cpp's --cache-type-k/-v) 8-bit or 4-bit blocks of 32 with a scale; cpu backend only`,
      'auto',
    )
    .option('--quantization <method>', "SGLang's checkpoint quantization methods (awq, gptq, fp8, ...) are not supported; the cpu backend's own weight format is --cpu-weights")
    .option('--webgpu-attention-split <n>', 'webgpu backend: KV positions per decode-attention split', parseIntOption);
}

/** The backend the flags name, created with their settings; bad values fail before any loading. */
export async function createBackendFromFlags(flags: BackendFlags): Promise<Backend> {
  const options = backendOptions(flags);
  const tpSize = tensorParallelSize(flags);
  if (tpSize > 1) {
    const { createTensorParallelBackend } = await import('../../backends/tensor-parallel/create.js');
    return createTensorParallelBackend(flags.backend, tpSize, options);
  }
  return createBackend(flags.backend, options);
}

export function tensorParallelSize(flags: BackendFlags): number {
  const tpSize = flags.tpSize ?? flags.tp ?? flags.tensorParallelSize ?? 1;
  if (!(Number.isInteger(tpSize) && tpSize >= 1)) throw new UserError(`--tp-size ${tpSize}: give a positive whole number of ranks`);
  return tpSize;
}

/** The dtype a GGUF file's quantized matrices are dequantized to: bf16 for the GPU backends, f32 for the rest. */
export function dequantizedDType(flags: BackendFlags): 'bf16' | 'f32' {
  return flags.backend === 'cuda' || flags.backend === 'webgpu' ? 'bf16' : 'f32';
}

export function backendOptions(flags: BackendFlags): BackendOptions {
  const kvCacheDtype = kvCacheDtypeOf(flags);
  if (flags.quantization !== undefined) {
    // SGLang's --quantization names how a checkpoint was quantized ahead of time; sluice's CPU
    // backend quantizes BF16/F16 weights itself at load, which is a different setting.
    const hint = (cpuWeightFormats as readonly string[]).includes(flags.quantization) ? `; did you mean --cpu-weights ${flags.quantization}?` : '';
    throw new UserError(
      `--quantization ${flags.quantization}: SGLang's quantization methods (awq, gptq, fp8, ...) are not supported; ` +
        `the cpu backend quantizes BF16/F16 weights at load with --cpu-weights ${cpuWeightFormats.join('|')}${hint}`,
    );
  }
  tensorParallelSize(flags);
  if (flags.threads !== undefined && flags.threads < 1) throw new UserError(`--threads must be at least 1, got ${flags.threads}`);
  if (flags.baseGpuId !== undefined && flags.baseGpuId < 0) throw new UserError(`--base-gpu-id must be 0 or more, got ${flags.baseGpuId}`);
  if (flags.webgpuAttentionSplit !== undefined && flags.webgpuAttentionSplit < 1) {
    throw new UserError(`--webgpu-attention-split must be at least 1, got ${flags.webgpuAttentionSplit}`);
  }
  if (flags.cpuGemm === 'native' && flags.backend !== 'cpu') {
    throw new UserError(`--cpu-gemm native: runs on the cpu backend only; give --backend cpu (--backend ${flags.backend} has its own kernels)`);
  }
  if (flags.cpuGemm === 'native' && flags.cpuWeights === 'f32') {
    throw new UserError('--cpu-gemm native: runs Q8_0 or Q4_0 blocks, not --cpu-weights f32; give --cpu-weights q8 or q4, or --cpu-gemm ort');
  }
  return {
    threads: flags.threads,
    device: flags.baseGpuId,
    cpuWeights: flags.cpuWeights,
    cpuGemm: flags.cpuGemm,
    kvCacheDtype,
    webgpuAttentionSplit: flags.webgpuAttentionSplit,
    graphCapture: flags.disableCudaGraph ? false : undefined,
  };
}

/** --kv-cache-dtype: every value named, the fp8 ones on the cpu backend only (`auto` may pick another backend). */
function kvCacheDtypeOf(flags: BackendFlags): KvCacheDtype | undefined {
  const dtype = flags.kvCacheDtype;
  if (dtype === undefined || dtype === 'auto') return undefined;
  if (!(kvCacheDtypes as readonly string[]).includes(dtype)) {
    throw new UserError(`--kv-cache-dtype ${dtype}: not supported; choose one of ${kvCacheDtypes.join(', ')}`);
  }
  if (flags.backend !== 'cpu') {
    throw new UserError(`--kv-cache-dtype ${dtype}: implemented on the cpu backend only; give --backend cpu (--backend ${flags.backend} keeps its own KV dtype, --kv-cache-dtype auto)`);
  }
  if (tensorParallelSize(flags) > 1) throw new UserError(`--kv-cache-dtype ${dtype}: not implemented with --tp-size above 1`);
  return dtype as KvCacheDtype;
}
