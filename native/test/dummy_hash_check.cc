// Host build of native/src/dummy_hash.h for test/backends/cuda-dummy-hash.test.ts: reads lines
// "key index halfRange offset" (decimal; doubles in shortest round-trip form) and prints, per line,
// the double value's bits, the f32 bits and the bf16 bits of that element in hex.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "dummy_hash.h"

int main() {
  char line[512];
  while (std::fgets(line, sizeof line, stdin)) {
    char* at = line;
    const uint32_t key = uint32_t(std::strtoull(at, &at, 10));
    const uint64_t index = std::strtoull(at, &at, 10);
    const double halfRange = std::strtod(at, &at);
    const double offset = std::strtod(at, &at);
    const double value = sluice::dummy::elementValue(key, index, halfRange, offset);
    uint64_t valueBits;
    std::memcpy(&valueBits, &value, sizeof valueBits);
    const float f = sluice::dummy::toF32(value);
    std::printf("%016" PRIx64 " %08" PRIx32 " %04x\n", valueBits, sluice::dummy::f32Bits(f),
                unsigned(sluice::dummy::elementBf16(key, index, halfRange, offset)));
  }
  return 0;
}
