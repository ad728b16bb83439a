import { setImmediate as nextTurn } from 'node:timers/promises';
import type { CudaAddon, DeviceProbe, NativeConfig, NativeModel, NativeStepOutput, NativeTokenMask } from '../../backends/cuda/native.js';
import { sampleLogits } from '../../backends/shared/host-sampler.js';
import type { ForwardBatch, SamplingBatch } from '../../src/engine/backend.js';
import { hash32 } from '../../src/model/hash32.js';

/** One call a step made into the addon, in the order made. */
export interface AddonCall {
  method: 'forward' | 'launchForward' | 'sampleLaunched';
  /** The masks the call handed over (forward and sampleLaunched), copied when it was made. */
  mask: { rowOf: number[]; words: number; bits: Int32Array; shared: boolean } | null;
}

export interface RecordingAddonOptions {
  /** false: an addon built before launchForward / sampleLaunched existed. */
  split?: boolean;
  /** launchForward rejects with this message. */
  failLaunch?: string;
  /**
   * launchForward logs 'masks ready' in `events` when the batch's masks resolve, and 'masks were
   * ready at the launch' when they already had. It reads
   * `tokenMask.ready` at launch, which the engine counts as the start of a wait for the masks,
   * so its exposed mask time is not meaningful with this on.
   */
  watchMasks?: boolean;
}

/**
 * A stand-in for the CUDA addon in native/, for the cuda backend's host side without a GPU: it
 * records the step calls (`calls`, and `events`, a log tests may add their own entries to) and
 * samples with the host sampler over logits hashed from each sequence's last token and
 * position, applying whatever masks it was handed, so the masks decide what comes out. Each step
 * call resolves a turn later, as the addon's calls resolve from libuv's pool. Device work
 * (weights, activations) is not modelled.
 */
export class RecordingCudaAddon implements CudaAddon {
  readonly calls: AddonCall[] = [];
  readonly events: string[] = [];
  readonly CudaModel: new (device: number, graphCapture: boolean) => NativeModel;

  constructor(options: RecordingAddonOptions = {}) {
    const addon = this;
    /** The one-call addon: forward takes the whole step, masks included. */
    class OneCallModel implements NativeModel {
      protected vocab = 0;

      configure(config: NativeConfig): void {
        this.vocab = config.vocabSize;
      }
      setWeight(): void {}
      dummyWeight(): void {}
      readWeight(): Float32Array {
        throw new Error('the recording addon holds no weights');
      }
      readActivation(): Float32Array {
        throw new Error('the recording addon holds no activations');
      }
      writeActivation(): void {
        throw new Error('the recording addon holds no activations');
      }
      allocateKv(): void {}
      memory() {
        return { freeBytes: 64 * 2 ** 30, totalBytes: 80 * 2 ** 30 };
      }
      description(): string {
        return 'cuda: recording addon (no device)';
      }
      graphsCaptured(): number {
        return 0;
      }
      close(): void {}

      async forward(batch: object): Promise<NativeStepOutput> {
        const b = batch as ForwardBatch;
        addon.record('forward', b.sampling.tokenMask ?? null);
        const out = addon.sample(b, b.sampling.tokenMask ?? null, this.vocab);
        await nextTurn();
        return out;
      }
    }

    /** The addon as built now: a constrained step in two calls. */
    class SplitModel extends OneCallModel {
      private launched: ForwardBatch | null = null;

      async launchForward(batch: object): Promise<void> {
        addon.record('launchForward', null);
        // The addon copies the batch when called, its mask excepted.
        const b = batch as ForwardBatch;
        const ready = options.watchMasks ? b.sampling.tokenMask?.ready : undefined;
        if (ready) {
          // A promise already resolved wins the race: the masks were done before the launch.
          void Promise.race([ready, Promise.resolve('pending')]).then((state) => state !== 'pending' && addon.events.push('masks were ready at the launch'));
          void ready.then(() => addon.events.push('masks ready'));
        }
        this.launched = { ...b, tokenIds: b.tokenIds.slice(), positions: b.positions.slice(), queryStart: b.queryStart.slice(), kvLens: b.kvLens.slice(), sampling: { ...b.sampling, tokenMask: null } };
        await nextTurn();
        if (options.failLaunch) {
          this.launched = null;
          throw new Error(options.failLaunch);
        }
      }

      async sampleLaunched(mask: NativeTokenMask | null): Promise<NativeStepOutput> {
        addon.record('sampleLaunched', mask);
        const launched = this.launched;
        this.launched = null;
        if (!launched) throw new Error('sampleLaunched: no step was launched (launchForward comes first)');
        const out = addon.sample(launched, mask, this.vocab);
        await nextTurn();
        return out;
      }
    }

    this.CudaModel = options.split === false ? OneCallModel : SplitModel;
  }

  probe(): DeviceProbe {
    return { count: 1, errorCode: 0, message: '', devices: [{ name: 'recording addon', totalBytes: 80 * 2 ** 30, computeCapability: 90, multiProcessors: 132 }] };
  }

  /** The logits this stand-in model gives every sequence of the batch: [S, vocab]. */
  logits(batch: ForwardBatch, vocab: number): Float32Array {
    const numSeqs = batch.kvLens.length;
    const logits = new Float32Array(numSeqs * vocab);
    for (let s = 0; s < numSeqs; s++) {
      const last = batch.queryStart[s + 1]! - 1;
      const key = hash32(batch.tokenIds[last]! * 131 + batch.positions[last]!);
      for (let id = 0; id < vocab; id++) logits[s * vocab + id] = (hash32(key ^ Math.imul(id, 0x9e3779b1)) / 0xffffffff) * 8 - 4;
    }
    return logits;
  }

  private record(method: AddonCall['method'], mask: NativeTokenMask | null): void {
    this.events.push(method);
    this.calls.push({
      method,
      mask: mask && { rowOf: Array.from(mask.rowOf), words: mask.words, bits: mask.bits.slice(), shared: mask.bits.buffer instanceof SharedArrayBuffer },
    });
  }

  private sample(batch: ForwardBatch, mask: NativeTokenMask | null, vocab: number): NativeStepOutput {
    const sampling: SamplingBatch = { ...batch.sampling, tokenMask: mask && { ...mask, ready: Promise.resolve() } };
    const out = sampleLogits(this.logits(batch, vocab), vocab, sampling);
    const top = out.topLogprobs;
    return { tokens: out.tokens, logprobs: out.logprobs, topK: top?.k ?? 0, ...(top ? { topIds: top.ids, topLogprobs: top.logprobs } : {}) };
  }
}
