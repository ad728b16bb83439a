// Rotary embedding in place on q and k (HF "rotate_half": pairs (i, i + headDim/2)) at each
// token's position, with inverse frequencies computed on the host (llama3 scaling included).
struct Params { numHeads: u32, numKvHeads: u32, headDim: u32, pad: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> q: array<f32>;
@group(0) @binding(3) var<storage, read_write> k: array<f32>;
@group(0) @binding(4) var<storage, read> positions: array<i32>;
@group(0) @binding(5) var<storage, read> invFreq: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let half = params.headDim / 2u;
  let headsPerToken = params.numHeads + params.numKvHeads;
  let i = flatWorkgroup(wid, nwg) * 256u + lid;
  if (i >= step.numTokens * headsPerToken * half) { return; }
  let pair = i % half;
  let head = (i / half) % headsPerToken;
  let t = i / (half * headsPerToken);
  let angle = f32(positions[t]) * invFreq[pair];
  let c = cos(angle);
  let s = sin(angle);
  if (head < params.numHeads) {
    let base = (t * params.numHeads + head) * params.headDim + pair;
    let a = q[base];
    let b = q[base + half];
    q[base] = a * c - b * s;
    q[base + half] = b * c + a * s;
  } else {
    let base = (t * params.numKvHeads + head - params.numHeads) * params.headDim + pair;
    let a = k[base];
    let b = k[base + half];
    k[base] = a * c - b * s;
    k[base + half] = b * c + a * s;
  }
}
