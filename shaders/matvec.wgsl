// out[r, outOffset + o] = sum_k x[r, k] * w[o, k] for few rows (decode): one workgroup per output
// feature reads its weight row once and serves up to MAX_ROWS rows. F32 accumulation.
const MAX_ROWS: u32 = 8u;
const WG: u32 = 128u;
struct Params { inFeatures: u32, outStride: u32, outOffset: u32, outCount: u32, rowsKind: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<wtype>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<array<f32, MAX_ROWS>, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let o = flatWorkgroup(wid, nwg);
  if (o >= params.outCount) { return; }
  let rows = min(rowsOf(params.rowsKind), MAX_ROWS);
  let inFeatures = params.inFeatures;
  let wBase = o * inFeatures;
  var acc: array<f32, MAX_ROWS>;
  for (var k = lid; k < inFeatures; k += WG) {
    let wk = f32(w[wBase + k]);
    for (var r = 0u; r < rows; r++) {
      acc[r] += x[r * inFeatures + k] * wk;
    }
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var width = WG / 2u; width > 0u; width >>= 1u) {
    if (lid < width) {
      for (var r = 0u; r < rows; r++) { partial[lid][r] += partial[lid + width][r]; }
    }
    workgroupBarrier();
  }
  if (lid < rows) {
    out[lid * params.outStride + params.outOffset + o] = partial[0][lid];
  }
}
