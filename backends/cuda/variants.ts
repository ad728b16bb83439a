/**
 * The CUDA backend's path switches, each an environment variable read when a model is created
 * (native) or loaded (graph compilation). Every performance step that has not yet been measured
 * on a GPU keeps the path it replaced selectable, so one GPU run can compare the two for parity
 * and speed (scripts/bench-cuda.ts, scripts/gpu-check.sh).
 *
 *   SLUICE_CUDA_FUSE=0        separate q/k/v and gate/up GEMMs (default: one GEMM each, weights
 *                             concatenated at load, silu-mul reading the fused output)
 *   SLUICE_CUDA_GEMV=off|on   m <= 16 GEMMs: never / always our bandwidth GEMV (default auto:
 *                             timed against cuBLASLt per shape on its first eager run)
 *   SLUICE_CUDA_SAMPLER=sort  the sorting sampler (default: radix-select, no scratch)
 *   SLUICE_CUDA_GRAPH_MAX=N   decode batches above N run without a CUDA graph (default 512;
 *                             256 was the old limit; 0 captures none)
 *   SLUICE_NO_CUBLASLT=1      our tensor-core GEMM instead of cuBLASLt
 *   SLUICE_CUDA_MASK_OVERLAP=0  a constrained step waits for its token masks before launching the
 *                             forward pass, in one call (default: launched at once, the masks
 *                             taken just before sampling; read when the backend is created).
 *                             Not in cudaVariants (unconstrained steps do not differ):
 *                             bench:structured --backend cuda compares it.
 */
export type CudaVariant = Readonly<Record<string, string | undefined>>;

export const cudaVariants: Record<string, CudaVariant> = {
  default: {},
  unfused: { SLUICE_CUDA_FUSE: '0' },
  'no-gemv': { SLUICE_CUDA_GEMV: 'off' },
  /** Every path as it was before issue 19's performance steps. */
  previous: { SLUICE_CUDA_FUSE: '0', SLUICE_CUDA_GEMV: 'off', SLUICE_CUDA_SAMPLER: 'sort', SLUICE_CUDA_GRAPH_MAX: '256' },
};

/** Runs `fn` with the variant's variables set (unset where undefined), then restores them. */
export async function withVariant<T>(variant: CudaVariant, fn: () => Promise<T>): Promise<T> {
  const saved = new Map(Object.keys(variant).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(variant)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return await fn();
  } finally {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}
