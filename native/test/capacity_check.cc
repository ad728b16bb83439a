// Host build of the capacity policy in native/src/step_inputs.h for
// test/backends/cuda-capacity.test.ts. Reads lines "numPages steps" and, for a page-size-1 run
// whose page table grows by one entry per step up to `steps` entries, prints how many times the
// table is reallocated (each one drops every captured CUDA graph) when it starts empty and when it
// starts sized from the KV pool, and the final capacity of each.
#include <cstdio>

#include "step_inputs.h"

int main() {
  int numPages = 0, steps = 0;
  while (std::scanf("%d %d", &numPages, &steps) == 2) {
    int fromEmpty = 0, fromPool = sluice::pageTableCapacityFor(numPages);
    int growthsEmpty = 0, growthsPool = 0;
    for (int entries = 1; entries <= steps; entries++) {
      const int a = sluice::grownCapacity(fromEmpty, entries);
      const int b = sluice::grownCapacity(fromPool, entries);
      growthsEmpty += a != fromEmpty;
      growthsPool += b != fromPool;
      fromEmpty = a;
      fromPool = b;
    }
    std::printf("%d %d %d %d\n", growthsEmpty, fromEmpty, growthsPool, fromPool);
  }
  return 0;
}
