// Prepended to every shader (after the weight-type header the host writes): the per-step shape
// that the host updates before each forward, and helpers for 2D-folded dispatches.
struct Step {
  numTokens: u32,
  numSeqs: u32,
  numSplits: u32,
  splitSize: u32,
  numPenalties: u32,
  topLogprobs: u32,
  pad0: u32,
  pad1: u32,
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
