/**
 * How the engine thread makes its backend: a backend object cannot cross threads, so the HTTP
 * thread sends the recipe and the engine thread follows it.
 */
import type { Backend } from '../backend.js';
import type { BackendFlags } from '../../cli/backend-flags.js';
import { FaultInjectingBackend, type FaultSpec } from '../fault-injection.js';

export type BackendRecipe =
  /** A registry backend with the CLI's backend flags (--backend, --threads, ...), and the hidden --fault-injection. */
  | { kind: 'flags'; flags: BackendFlags; fault?: FaultSpec | null }
  /**
   * `module`'s export `factory` called with `args` (cloneable values; a SharedArrayBuffer stays
   * shared): for test and benchmark backends that live outside the registry.
   */
  | { kind: 'module'; module: string; factory: string; args: unknown[] };

export async function createBackendFromRecipe(recipe: BackendRecipe): Promise<Backend> {
  if (recipe.kind === 'flags') {
    const { createBackendFromFlags } = await import('../../cli/backend-flags.js');
    const backend = await createBackendFromFlags(recipe.flags);
    return recipe.fault ? new FaultInjectingBackend(backend, recipe.fault) : backend;
  }
  const module = (await import(recipe.module)) as Record<string, unknown>;
  const factory = module[recipe.factory];
  if (typeof factory !== 'function') throw new Error(`${recipe.module} has no function ${recipe.factory}`);
  return (await factory(...recipe.args)) as Backend;
}
