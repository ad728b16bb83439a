import type { Backend, ForwardBatch, StepOutput } from '../../src/engine/backend.js';

/** Wraps a backend to watch (and interfere with) each forward step. */
export class HookedBackend implements Backend {
  readonly name: Backend['name'];
  readonly description = 'ref with a test hook';
  calls = 0;

  constructor(
    private readonly inner: Backend,
    private readonly onForward: (batch: ForwardBatch, call: number) => void | Promise<void>,
  ) {
    this.name = inner.name;
  }
  load = (m: Parameters<Backend['load']>[0]) => this.inner.load(m);
  kvCapacity = (budget: Parameters<Backend['kvCapacity']>[0]) => this.inner.kvCapacity(budget);
  allocateKvCache = (spec: Parameters<Backend['allocateKvCache']>[0]) => this.inner.allocateKvCache(spec);
  close = () => this.inner.close();
  async forward(batch: ForwardBatch): Promise<StepOutput> {
    await this.onForward(batch, ++this.calls);
    return this.inner.forward(batch);
  }
}
