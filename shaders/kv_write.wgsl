// Copies each new token's K and V rows into the layer's paged cache at its slot.
struct Params { kvCols: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> slotMapping: array<i32>;
@group(0) @binding(5) var<storage, read_write> kCache: array<f32>;
@group(0) @binding(6) var<storage, read_write> vCache: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flatWorkgroup(wid, nwg) * 256u + lid;
  if (i >= step.numTokens * params.kvCols) { return; }
  let t = i / params.kvCols;
  let c = i % params.kvCols;
  let dst = u32(slotMapping[t]) * params.kvCols + c;
  kCache[dst] = k[i];
  vCache[dst] = v[i];
}
