import type { Backend, ForwardBatch, StepOutput } from './backend.js';
import { UserError } from '../errors.js';

/** A backend failure to inject: the step after `afterSteps` good ones throws, or never returns. */
export interface FaultSpec {
  kind: 'throws' | 'hangs';
  afterSteps: number;
}

/** Parses `step-throws:N` or `step-hangs:N` (the hidden `sluice serve --fault-injection` flag). */
export function parseFaultSpec(text: string): FaultSpec {
  const match = /^step-(throws|hangs):(\d+)$/.exec(text);
  if (!match) throw new UserError(`--fault-injection ${JSON.stringify(text)}: give step-throws:N or step-hangs:N (N good steps first)`);
  return { kind: match[1] as FaultSpec['kind'], afterSteps: Number(match[2]) };
}

/**
 * Wraps a backend so that a forward step fails as `spec` says: for testing that a failing or
 * hung backend ends every request with an error, turns /health red and stops `sluice serve`.
 */
export class FaultInjectingBackend implements Backend {
  readonly name: Backend['name'];
  readonly description: string;
  private steps = 0;

  constructor(
    private readonly inner: Backend,
    private readonly spec: FaultSpec,
  ) {
    this.name = inner.name;
    this.description = `${inner.description} (fault injection: step ${spec.afterSteps + 1} ${spec.kind})`;
  }

  load = (model: Parameters<Backend['load']>[0]) => this.inner.load(model);
  kvCapacity = (budget: Parameters<Backend['kvCapacity']>[0]) => this.inner.kvCapacity(budget);
  allocateKvCache = (spec: Parameters<Backend['allocateKvCache']>[0]) => this.inner.allocateKvCache(spec);
  close = () => this.inner.close();

  forward(batch: ForwardBatch): Promise<StepOutput> {
    if (++this.steps <= this.spec.afterSteps) return this.inner.forward(batch);
    if (this.spec.kind === 'hangs') return new Promise<never>(() => {});
    return Promise.reject(new Error(`injected fault: forward step ${this.steps} threw (fault injection step-throws:${this.spec.afterSteps})`));
  }
}
