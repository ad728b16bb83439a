import type { Backend, BackendName, BackendOptions } from '../src/engine/backend.js';
import { BackendUnavailableError, UserError } from '../src/errors.js';

export const backendNames: BackendName[] = ['ref', 'cpu', 'webgpu', 'cuda'];

/**
 * Creates a backend by name. Each is imported on demand so a backend whose native parts are
 * missing on this machine never stops the others from loading.
 */
export async function createBackend(name: BackendName | 'auto', options: BackendOptions = {}): Promise<Backend> {
  if (name === 'auto') return pickAutoBackend(options);
  switch (name) {
    case 'ref': {
      const { RefBackend } = await import('./ref/ref-backend.js');
      return new RefBackend();
    }
    case 'cpu':
    case 'webgpu':
    case 'cuda': {
      const modulePath = `./${name}/index.js`;
      let mod: { create(options: BackendOptions): Promise<Backend> };
      try {
        mod = await import(modulePath);
      } catch (e) {
        throw new BackendUnavailableError(`backend ${name} is not available in this build: ${(e as Error).message}`);
      }
      return mod.create(options);
    }
    default:
      throw new UserError(`unknown backend "${name}" (auto, ${backendNames.join(', ')})`);
  }
}

/** The fastest backend usable here: cuda, then cpu, then ref (webgpu only when asked for: it is the development backend). */
export async function pickAutoBackend(options: BackendOptions = {}): Promise<Backend> {
  for (const name of ['cuda', 'cpu'] as const) {
    try {
      return await createBackend(name, options);
    } catch (e) {
      if (!(e instanceof BackendUnavailableError)) throw e;
    }
  }
  return createBackend('ref', options);
}
