import type * as Ort from 'onnxruntime-node';

/**
 * The ORT session options every segment is made with, chosen with `npm run bench:cpu-options`
 * (docs/performance.md, "ORT session options"): sequential execution, one intra-op pool of
 * `threads` threads, and no spinning: a pool thread that spins between ops and between session
 * runs made single-stream decode 1.4x slower on this 2-core machine (prefill gained ~8% from it).
 * Graph optimization level and memory patterns made no difference; parallel execution and one
 * thread lost.
 */
export function segmentSessionOptions(threads: number, profilePrefix?: string): Ort.InferenceSession.SessionOptions {
  return {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    enableMemPattern: false,
    logSeverityLevel: 3,
    extra: { 'session.intra_op.allow_spinning': '0' },
    ...(profilePrefix ? { enableProfiling: true, profileFilePrefix: profilePrefix } : {}),
  };
}
