// Prepended to every shader (after the weight-type header the host writes): the per-step shape
// that the host updates before each forward, and helpers for 2D-folded dispatches.
struct Step {
  numTokens: u32,
  numSeqs: u32,
  numSplits: u32,
  splitSize: u32,
  numPenalties: u32,
  topLogprobs: u32,
  /** Sequences with a token mask this step (0: the mask dispatch is skipped). */
  maskedSeqs: u32,
  /** logit_bias / min_tokens entries this step (0: the bias dispatch is skipped). */
  numBiases: u32,
}

@group(0) @binding(0) var<uniform> step: Step;

const ROWS_TOKENS: u32 = 0u;

fn rowsOf(kind: u32) -> u32 {
  return select(step.numSeqs, step.numTokens, kind == ROWS_TOKENS);
}

// Dispatches wider than 65535 workgroups are folded into x * y; this undoes the fold.
fn flatWorkgroup(wid: vec3u, nwg: vec3u) -> u32 {
  return wid.x + wid.y * nwg.x;
}

// The parameters of every linear-layer shader (matvec, matvec4, matmul):
// out[r, outOffset + o] for o < outCount, rows of out outStride apart, rowsKind as in rowsOf.
struct LinearParams { inFeatures: u32, outStride: u32, outOffset: u32, outCount: u32, rowsKind: u32, pad0: u32, pad1: u32, pad2: u32 }

// The matvec shaders: a workgroup of MATVEC_WG threads computes outputs for up to MATVEC_MAX_ROWS rows.
const MATVEC_MAX_ROWS: u32 = 8u;
const MATVEC_WG: u32 = 256u;
var<workgroup> matvecPartial: array<array<f32, MATVEC_MAX_ROWS>, MATVEC_WG>;

// Sums each thread's per-row partial dot products over the `threadsPerOutput` lanes that share one
// output feature (lane = lid % threadsPerOutput); lane 0 gets the totals. Call from uniform control flow.
fn matvecReduce(acc: array<f32, MATVEC_MAX_ROWS>, lid: u32, threadsPerOutput: u32, rows: u32) -> array<f32, MATVEC_MAX_ROWS> {
  if (threadsPerOutput == 1u) { return acc; }
  let lane = lid % threadsPerOutput;
  matvecPartial[lid] = acc;
  workgroupBarrier();
  for (var width = threadsPerOutput / 2u; width > 0u; width >>= 1u) {
    if (lane < width) {
      for (var r = 0u; r < rows; r++) { matvecPartial[lid][r] += matvecPartial[lid + width][r]; }
    }
    workgroupBarrier();
  }
  return matvecPartial[lid];
}

// Sum of `value` over a workgroup of SUM_WG threads (lid = local_invocation_index), returned to
// every thread. Call from uniform control flow.
const SUM_WG: u32 = 256u;
var<workgroup> sumScratch: array<f32, SUM_WG>;
var<workgroup> sumTotal: f32;
fn workgroupSum(value: f32, lid: u32) -> f32 {
  sumScratch[lid] = value;
  workgroupBarrier();
  for (var width = SUM_WG / 2u; width > 0u; width >>= 1u) {
    if (lid < width) { sumScratch[lid] += sumScratch[lid + width]; }
    workgroupBarrier();
  }
  if (lid == 0u) { sumTotal = sumScratch[0]; }
  return workgroupUniformLoad(&sumTotal);
}
