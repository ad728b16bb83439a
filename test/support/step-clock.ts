import { Worker } from 'node:worker_threads';

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
 * One device clock: every step takes `stepMs` from its launch, and a step launched while
 * another runs starts when that one ends (steps queue as on a GPU stream). Shared by the
 * fixed-step backend and the benchmark's null server, so both are paced alike.
 */
export class StepClock {
  private readonly device: Worker;
  private readonly pending: (() => void)[] = [];
  /** When the last step launched ends. */
  private busyUntil = 0;

  /** `stepCounter`, if given: slot 0 counts completed steps (readable from any thread). */
  constructor(
    private readonly stepMs: number,
    private readonly stepCounter?: Int32Array,
  ) {
    this.device = new Worker(deviceSource, { eval: true });
    this.device.unref();
    this.device.on('message', () => {
      if (this.stepCounter) Atomics.add(this.stepCounter, 0, 1);
      this.pending.shift()?.();
    });
  }

  /** Launches one step now; resolves when it has run. */
  step(): Promise<void> {
    const deadline = Math.max(performance.timeOrigin + performance.now(), this.busyUntil) + this.stepMs;
    this.busyUntil = deadline;
    return new Promise<void>((resolve) => {
      this.pending.push(resolve);
      this.device.postMessage(deadline);
    });
  }

  async close(): Promise<void> {
    await this.device.terminate();
  }
}
