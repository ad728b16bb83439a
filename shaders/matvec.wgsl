// out[r, outOffset + o] = sum_k x[r, k] * w[o, k] for few rows (decode): each weight row is read
// once and serves up to MATVEC_MAX_ROWS rows. THREADS_PER_OUTPUT threads share one output feature
// (strided over k, then reduced); a workgroup computes MATVEC_WG / THREADS_PER_OUTPUT features, so
// the workgroup count stays small on drivers with a high per-workgroup cost. F32 accumulation.
override THREADS_PER_OUTPUT: u32 = 32u;
@group(0) @binding(1) var<uniform> params: LinearParams;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<wtype>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(MATVEC_WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let lane = lid % THREADS_PER_OUTPUT;
  let o = flatWorkgroup(wid, nwg) * (MATVEC_WG / THREADS_PER_OUTPUT) + lid / THREADS_PER_OUTPUT;
  let inRange = o < params.outCount;
  let rows = min(rowsOf(params.rowsKind), MATVEC_MAX_ROWS);
  let inFeatures = params.inFeatures;
  var acc: array<f32, MATVEC_MAX_ROWS>;
  if (inRange) {
    let wBase = o * inFeatures;
    for (var k = lane; k < inFeatures; k += THREADS_PER_OUTPUT) {
      let wk = f32(w[wBase + k]);
      for (var r = 0u; r < rows; r++) {
        acc[r] += x[r * inFeatures + k] * wk;
      }
    }
  }
  acc = matvecReduce(acc, lid, THREADS_PER_OUTPUT, rows);
  if (inRange && lane == 0u) {
    for (var r = 0u; r < rows; r++) {
      out[r * params.outStride + params.outOffset + o] = acc[r];
    }
  }
}
