/**
 * Backend factories a test or benchmark names in a BackendRecipe ({kind: 'module', module:
 * workerBackendsModule, factory, args}): the engine thread imports this module and calls the
 * factory, so the same backend runs on the main thread or in the engine thread.
 */
import type { Backend, ForwardBatch } from '../../src/engine/backend.js';
import type { BackendRecipe } from '../../src/engine/worker/backend-recipe.js';
import { RefBackend } from '../../backends/ref/ref-backend.js';
import { FixedStepBackend } from './fixed-step-backend.js';
import { HookedBackend } from './hooked-backend.js';
import { InstantBackend } from './instant-backend.js';

export const workerBackendsModule = new URL('./worker-backends.ts', import.meta.url).href;

export function recipe(factory: 'ref' | 'instant' | 'fixedStep' | 'controlled', ...args: unknown[]): BackendRecipe {
  return { kind: 'module', module: workerBackendsModule, factory, args };
}

export function ref(): Backend {
  return new RefBackend();
}

export function instant(overlapsSteps = false): Backend {
  return new InstantBackend({ overlapsSteps });
}

export function fixedStep(stepMs: number, stepCounter?: Int32Array): Backend {
  return new FixedStepBackend({ stepMs, stepCounter });
}

/** What a test asks of the controlled backend through slot `mode` of its shared control array. */
export const Control = { mode: 0, steps: 1, run: 0, stall: 1, fail: 2, crash: 3, release: 4 } as const;

/**
 * The ref backend steered from any thread through a shared Int32Array: slot `steps` counts
 * forward calls; slot `mode` is run (normal), stall (the step does not return until the mode
 * changes), fail (the step throws "device lost"), crash (an uncaught exception kills the thread)
 * or release (a stalled step returns normally).
 */
export function controlled(control: Int32Array): Backend {
  return new HookedBackend(new RefBackend(), async (_batch: ForwardBatch) => {
    Atomics.add(control, Control.steps, 1);
    while (Atomics.load(control, Control.mode) === Control.stall) await new Promise((resolve) => setTimeout(resolve, 5));
    const mode = Atomics.load(control, Control.mode);
    if (mode === Control.fail) throw new Error('device lost');
    if (mode === Control.crash) {
      setTimeout(() => {
        throw new Error('simulated crash of the engine thread');
      });
      await new Promise(() => {});
    }
  });
}

