// One workgroup per row: optionally x += residual (written back), then out = rmsnorm(x) * weight.
override HAS_RESIDUAL: bool = false;
struct Params { cols: u32, rowsKind: u32, eps: f32, pad: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> residual: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(SUM_WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = flatWorkgroup(wid, nwg);
  if (row >= rowsOf(params.rowsKind)) { return; }
  let cols = params.cols;
  let base = row * cols;
  var sum = 0.0;
  for (var c = lid; c < cols; c += SUM_WG) {
    var v = x[base + c];
    if (HAS_RESIDUAL) {
      v += residual[base + c];
      x[base + c] = v;
    }
    sum += v * v;
  }
  let scale = inverseSqrt(workgroupSum(sum, lid) / f32(cols) + params.eps);
  for (var c = lid; c < cols; c += SUM_WG) {
    out[base + c] = x[base + c] * scale * weight[c];
  }
}
