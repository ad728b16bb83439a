/**
 * The IPC side every benchmark server process shares (the real one and the null one): it
 * answers the parent's messages about one measurement window.
 *   {type: 'reset'}  -> starts a window (step count, event-loop delay histogram, CPU time)
 *   {type: 'report'} -> {steps, elapsedMs, eventLoopP99Ms, eventLoopMaxMs, cpuMs} since the reset
 *   {type: 'stop'}   -> `shutdown`, then exits
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';

export type ParentMessage = { type: 'reset' } | { type: 'report' } | { type: 'stop' };
export type ChildMessage =
  | { type: 'listening'; url: string }
  /** cpuMs: CPU time of the whole server process (every thread) in the window. */
  | { type: 'report'; steps: number; elapsedMs: number; eventLoopP99Ms: number; eventLoopMaxMs: number; cpuMs: number };

/** Answers the parent about `stepCounter` (slot 0: steps run) and tells it the server listens at `url`. */
export function answerParent(url: string, stepCounter: Int32Array, shutdown: () => Promise<void>): void {
  const send = (message: ChildMessage) => process.send!(message);
  const loopDelay = monitorEventLoopDelay({ resolution: 1 });
  loopDelay.enable();
  let windowStart = { steps: 0, at: performance.now(), cpu: process.cpuUsage() };
  process.on('message', async (message: ParentMessage) => {
    if (message.type === 'reset') {
      loopDelay.reset();
      windowStart = { steps: Atomics.load(stepCounter, 0), at: performance.now(), cpu: process.cpuUsage() };
    } else if (message.type === 'report') {
      const cpu = process.cpuUsage(windowStart.cpu);
      send({
        type: 'report',
        steps: Atomics.load(stepCounter, 0) - windowStart.steps,
        elapsedMs: performance.now() - windowStart.at,
        eventLoopP99Ms: loopDelay.percentile(99) / 1e6,
        eventLoopMaxMs: loopDelay.max / 1e6,
        cpuMs: (cpu.user + cpu.system) / 1000,
      });
    } else if (message.type === 'stop') {
      await shutdown();
      process.exit(0);
    }
  });
  send({ type: 'listening', url });
}
