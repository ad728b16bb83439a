import { Worker } from 'node:worker_threads';
import type { ForwardBatch, StepOutput } from '../../src/engine/backend.js';
import { InstantBackend } from './instant-backend.js';

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
 * The simulated device: a thread that sleeps with Atomics.wait until each step's deadline and
 * answers. It is precise to well under a millisecond (a setTimeout in the host thread rounds to
 * whole milliseconds and fires late under load, which would be blamed on the host) and uses no
 * CPU while a step "runs". Plain JavaScript evaluated in place: no loader needed in the thread.
 */
const deviceSource = `
const { parentPort } = require('node:worker_threads');
const { performance } = require('node:perf_hooks');
const sleeper = new Int32Array(new SharedArrayBuffer(4));
parentPort.on('message', (deadline) => {
  const left = deadline - (performance.timeOrigin + performance.now());
  if (left > 0) Atomics.wait(sleeper, 0, 0, left);
  parentPort.postMessage(0);
});
`;

/**
 * A backend whose every step takes a fixed time and returns the instant backend's tokens: a GPU
 * as the host sees it (launch, wait, tokens back) with the compute taken out. The step's clock
 * starts when forward() is called (or, for a step launched while another runs, when that one
 * ends), so host time spent before the call is what it costs.
 * `npm run bench:serving-overhead` serves it over HTTP.
 */
export class FixedStepBackend extends InstantBackend {
  override readonly name = 'fixed-step';
  override readonly description: string;
  private readonly device: Worker;
  private readonly pending: (() => void)[] = [];
  /** When the last step launched ends: a step launched before then starts then. */
  private busyUntil = 0;

  constructor(private readonly options: FixedStepOptions) {
    super({ overlapsSteps: options.overlapsSteps ?? true });
    this.description = `fixed-step: every step takes ${options.stepMs} ms and computes nothing (serving-overhead benchmark)`;
    this.device = new Worker(deviceSource, { eval: true });
    this.device.unref();
    this.device.on('message', () => this.pending.shift()?.());
  }

  override async forward(batch: ForwardBatch): Promise<StepOutput> {
    const deadline = Math.max(performance.timeOrigin + performance.now(), this.busyUntil) + this.options.stepMs;
    this.busyUntil = deadline;
    const output = await super.forward(batch);
    await new Promise<void>((resolve) => {
      this.pending.push(resolve);
      this.device.postMessage(deadline);
    });
    if (this.options.stepCounter) Atomics.add(this.options.stepCounter, 0, 1);
    return output;
  }

  override async close(): Promise<void> {
    await this.device.terminate();
  }
}
