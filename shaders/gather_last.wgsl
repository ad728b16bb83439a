// out[s] = x[last token of sequence s].
struct Params { cols: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> seqMeta: array<i32>; // tokenSeq[T] | queryStart[S + 1] | ...
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flatWorkgroup(wid, nwg) * 256u + lid;
  if (i >= step.numSeqs * params.cols) { return; }
  let s = i / params.cols;
  let c = i % params.cols;
  let t = u32(seqMeta[step.numTokens + s + 1u] - 1);
  out[i] = x[t * params.cols + c];
}
