// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// 1-D pooling of scores along the key axis (eviction spec §1.3), the SnapKV-family smoothing
/// that keeps the neighbours of a strongly attended key together: stride 1, odd kernel, padding
/// kernel/2, output length = input length.
///   - avg: PyTorch `avg_pool1d` default semantics (`count_include_pad=True`): the window sum is
///     divided by the full kernel size even where it hangs over the edge (SnapKV default, kernel 5);
///   - max: PyTorch `max_pool1d` (padding never wins; LongBench SnapKV configs, kernel 7);
///   - sum: the zero-padded window sum (Inf-MLLM "local sum", arXiv 2409.09086).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>

#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

/// Pooling operator of pool_scores.
enum class PoolKind : std::uint8_t {
  kAvg,  ///< window sum / kernel (zero padding counted)
  kMax,  ///< window maximum over in-range entries
  kSum,  ///< window sum (zero padding)
};

/// Stable name for logs and test output.
constexpr const char* to_string(PoolKind k) {
  switch (k) {
    case PoolKind::kAvg: return "avg";
    case PoolKind::kMax: return "max";
    case PoolKind::kSum: return "sum";
  }
  return "invalid";
}

/// out[j] = pool(x[j − kernel/2 .. j + kernel/2]) for j in [0, n). kernel 1 is the identity.
/// \param x      [n] scores of one head
/// \param kernel odd window length ≥ 1
/// \param out    [n]; must not overlap x (each output reads kernel inputs)
inline void pool_scores(const float* x, std::size_t n, int kernel, PoolKind kind, float* out) {
  const char* where = "evict::common::pool_scores";
  detail::require(kernel >= 1 && kernel % 2 == 1, where, "kernel", kernel, "an odd value >= 1");
  const std::less_equal<const float*> le;
  detail::require(n == 0 || le(out + n, x) || le(x + n, out), where, "out", "overlaps x",
                  "a separate [n] buffer");
  const std::size_t half = static_cast<std::size_t>(kernel / 2);
  for (std::size_t j = 0; j < n; ++j) {
    const std::size_t lo = j >= half ? j - half : 0;
    const std::size_t hi = std::min(n, j + half + 1);
    if (kind == PoolKind::kMax) {
      float m = x[lo];
      for (std::size_t t = lo + 1; t < hi; ++t) m = std::max(m, x[t]);
      out[j] = m;
    } else {
      float s = 0.0f;
      for (std::size_t t = lo; t < hi; ++t) s += x[t];
      out[j] = kind == PoolKind::kAvg ? s / float(kernel) : s;
    }
  }
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
