// matvec.wgsl for inFeatures divisible by 4: x and the weights read as vec4 (twice as fast on
// lavapipe, and wider loads on a GPU). Same bindings, parameters and result.
const MAX_ROWS: u32 = 8u;
const WG: u32 = 256u;
override THREADS_PER_OUTPUT: u32 = 32u;
struct Params { inFeatures: u32, outStride: u32, outOffset: u32, outCount: u32, rowsKind: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<vec4<wtype>>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<array<f32, MAX_ROWS>, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let lane = lid % THREADS_PER_OUTPUT;
  let o = flatWorkgroup(wid, nwg) * (WG / THREADS_PER_OUTPUT) + lid / THREADS_PER_OUTPUT;
  let inRange = o < params.outCount;
  let rows = min(rowsOf(params.rowsKind), MAX_ROWS);
  let inFeatures = params.inFeatures;
  var acc: array<f32, MAX_ROWS>;
  if (inRange) {
    let quads = inFeatures / 4u;
    let wBase = o * quads;
    for (var k = lane; k < quads; k += THREADS_PER_OUTPUT) {
      let wk = vec4<f32>(w[wBase + k]);
      for (var r = 0u; r < rows; r++) {
        acc[r] += dot(x[r * quads + k], wk);
      }
    }
  }
  if (THREADS_PER_OUTPUT > 1u) {
    partial[lid] = acc;
    workgroupBarrier();
    for (var width = THREADS_PER_OUTPUT / 2u; width > 0u; width >>= 1u) {
      if (lane < width) {
        for (var r = 0u; r < rows; r++) { partial[lid][r] += partial[lid + width][r]; }
      }
      workgroupBarrier();
    }
    acc = partial[lid];
  }
  if (inRange && lane == 0u) {
    for (var r = 0u; r < rows; r++) {
      out[r * params.outStride + params.outOffset + o] = acc[r];
    }
  }
}
