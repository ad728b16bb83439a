import type { Backend, BackendDescriptor, BackendOptions } from '../src/engine/backend.js';
import { BackendUnavailableError, UserError } from '../src/errors.js';
import { cpuBackend } from './cpu/index.js';
import { cudaBackend } from './cuda/index.js';
import { refBackend } from './ref/index.js';
import { webgpuBackend } from './webgpu/index.js';

/**
 * Every backend, written once: the CLI's --backend choices, its help text, the unknown-backend
 * error and the BackendName type come from this list. Native parts (onnxruntime, Dawn, the CUDA
 * addon) load only in create(), so one missing on this machine never stops the others.
 */
export const backends = [refBackend, cpuBackend, webgpuBackend, cudaBackend] as const satisfies readonly BackendDescriptor[];

export type BackendName = (typeof backends)[number]['name'];

export const backendNames: BackendName[] = backends.map((b) => b.name);

/** What `auto` tries, in order: the first one available here. */
export const autoOrder: readonly BackendName[] = ['cuda', 'cpu', 'ref'];

/** `auto` and every registered name, for --backend. */
export const backendChoices: string[] = ['auto', ...backendNames];

/** One line per choice, for --help. */
export function backendHelp(): string {
  return [`auto: the first available of ${autoOrder.join(', ')}`, ...backends.map((b) => `${b.name}: ${b.summary}`)].join('; ');
}

export function isBackendName(name: string): name is BackendName {
  return (backendNames as string[]).includes(name);
}

/** Creates a backend by name (or `auto`); UserError listing the choices for an unknown name. */
export async function createBackend(name: string, options: BackendOptions = {}): Promise<Backend> {
  if (name === 'auto') return pickAutoBackend(options);
  const descriptor = backends.find((b) => b.name === name);
  if (!descriptor) throw new UserError(`unknown backend "${name}" (choose one of ${backendChoices.join(', ')})`);
  return descriptor.create(options);
}

/** The fastest backend usable here, in autoOrder; webgpu only when asked for (it is the development backend). */
export async function pickAutoBackend(options: BackendOptions = {}): Promise<Backend> {
  for (const name of autoOrder.slice(0, -1)) {
    try {
      return await createBackend(name, options);
    } catch (e) {
      if (!(e instanceof BackendUnavailableError)) throw e;
    }
  }
  return createBackend(autoOrder.at(-1)!, options);
}
