// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-10 of methods/quantization.md, allocation-free twin of outliers.hpp's select_extremes for
/// the decode path (GEAR §7 flushes a block inside Store::append, where the heap is off limits).
/// Same selection, same result: the `per_side` largest values, then the `per_side` smallest
/// among the rest, ties taken lowest index first, reported as ascending uint16 indices; the count
/// is min(n, 2·per_side). The input may be strided (a key channel is a column of a row-major
/// [tokens][d] block). Cost O(n·per_side²): meant for the small per-vector counts GEAR uses
/// (1 per side at s = 2 %). Inputs must be finite (the caller validates; fp16 windows are).

#include <cstddef>
#include <cstdint>

#include "kvcompress/config.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Writes the ascending indices of the per_side largest and then per_side smallest of the other
/// values of x[i·stride], i < n (n ≤ 65536) to idx and returns their number, min(n, 2·per_side).
/// \param idx capacity ≥ min(n, 2·per_side).
inline std::size_t select_extremes_inplace(const float* x, std::size_t n, std::size_t stride, std::size_t per_side,
                                           std::uint16_t* idx) {
  std::size_t count = 0;
  auto taken = [&](std::size_t i) {
    for (std::size_t j = 0; j < count; ++j)
      if (idx[j] == i) return true;
    return false;
  };
  for (int side = 0; side < 2; ++side) {
    for (std::size_t s = 0; s < per_side && count < n; ++s) {
      std::size_t best = n;
      for (std::size_t i = 0; i < n; ++i) {
        if (taken(i)) continue;
        if (best == n) {
          best = i;
          continue;
        }
        const float xi = x[i * stride], xb = x[best * stride];
        if (side == 0 ? xi > xb : xi < xb) best = i;  // strict: ties keep the lower index
      }
      idx[count++] = static_cast<std::uint16_t>(best);
    }
  }
  for (std::size_t i = 1; i < count; ++i) {  // insertion sort: ascending indices
    const std::uint16_t v = idx[i];
    std::size_t j = i;
    for (; j > 0 && idx[j - 1] > v; --j) idx[j] = idx[j - 1];
    idx[j] = v;
  }
  return count;
}

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
