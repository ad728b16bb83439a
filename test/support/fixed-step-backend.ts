import type { ForwardBatch, StepOutput } from '../../src/engine/backend.js';
import { InstantBackend } from './instant-backend.js';
import { StepClock } from './step-clock.js';

export interface FixedStepOptions {
  /** Wall time of every forward step, whatever the batch (an 8B decode step on an H200 is 5-15 ms). */
  stepMs: number;
  /** Optional shared counter: slot 0 counts completed steps (readable from any thread). */
  stepCounter?: Int32Array;
  /**
   * Takes step N+1 while step N runs (Backend.overlapsSteps), as a GPU queues it on its stream:
   * N+1's time starts when N ends. Default true; the engine's disableOverlapSchedule turns it off.
   */
  overlapsSteps?: boolean;
}

/**
 * A backend whose every step takes a fixed time and returns the instant backend's tokens: a GPU
 * as the host sees it (launch, wait, tokens back) with the compute taken out. The step's clock
 * (StepClock: a device thread) starts when forward() is called (or, for a step launched while
 * another runs, when that one ends), so host time spent before the call is what it costs.
 * `npm run bench:serving-overhead` serves it over HTTP.
 */
export class FixedStepBackend extends InstantBackend {
  override readonly name = 'fixed-step';
  override readonly description: string;
  private readonly clock: StepClock;

  constructor(options: FixedStepOptions) {
    super({ overlapsSteps: options.overlapsSteps ?? true });
    this.description = `fixed-step: every step takes ${options.stepMs} ms and computes nothing (serving-overhead benchmark)`;
    this.clock = new StepClock(options.stepMs, options.stepCounter);
  }

  override async forward(batch: ForwardBatch): Promise<StepOutput> {
    const ran = this.clock.step();
    const output = await super.forward(batch);
    await ran;
    return output;
  }

  override async close(): Promise<void> {
    await this.clock.close();
  }
}
