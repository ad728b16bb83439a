// Merges the per-split (max, sum, acc) partials of attention.wgsl into each head's output.
struct Params { numHeads: u32, headDim: u32, pad0: u32, pad1: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let headDim = params.headDim;
  let i = flatWorkgroup(wid, nwg) * 256u + lid;
  if (i >= step.numTokens * params.numHeads * headDim) { return; }
  let d = i % headDim;
  let head = i / headDim; // t * numHeads + h
  let numSplits = step.numSplits;
  let stride = headDim + 2u;
  var best = -3.0e38;
  for (var j = 0u; j < numSplits; j++) { best = max(best, partials[(head * numSplits + j) * stride]); }
  var sum = 0.0;
  var acc = 0.0;
  for (var j = 0u; j < numSplits; j++) {
    let base = (head * numSplits + j) * stride;
    let scale = exp(partials[base] - best);
    sum += partials[base + 1u] * scale;
    acc += partials[base + 2u + d] * scale;
  }
  out[i] = acc / sum;
}
