import type { StepOutput } from './backend.js';
import type { StepPlan } from './scheduler.js';

/**
 * A step handed to the backend, until the engine takes its output. Two of these take turns
 * (their per-row arrays reused), as the scheduler's plans do.
 */
export class LaunchedStep {
  id = 0;
  plan!: StepPlan;
  /** Per row: whether the step samples the sequence's next token. */
  sampled = new Uint8Array(0);
  /** Per row: the first position the step computes. */
  start = new Int32Array(0);
  output!: Promise<StepOutput>;
  masks: Promise<void> | null = null;
  /** No sampled row needs its token on the host before the sequence's next step (no grammar, no penalties). */
  hostFree = true;

  reset(plan: StepPlan, id: number): void {
    const rows = plan.sequences.length;
    if (this.sampled.length < rows) {
      this.sampled = new Uint8Array(2 * rows);
      this.start = new Int32Array(2 * rows);
    }
    this.id = id;
    this.plan = plan;
    this.masks = null;
    this.hostFree = true;
  }
}
