// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Deterministic top-k selection as a mask: the k largest scores, ties → lower index (BB-12 maps:
/// VidKV's range-based 2-bit key channels and its STP protected visual tokens, §6 oracles
/// "exactly ⌊k·d⌋ channels, the largest ranges, deterministic tie-break by index" and "protected
/// set size and membership match a brute-force ranking"). Allocation-free with caller scratch.

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// mask[i] = 1 for the k highest score[i] (ties: lower i first), 0 otherwise; k ≤ n.
/// \param idx scratch of n uint32.
inline void top_k_mask(const float* score, std::size_t n, std::size_t k, std::uint8_t* mask, std::uint32_t* idx) {
  kvcompress::detail::require(k <= n, "quant::common::top_k_mask", "k", k, "<= n = " + std::to_string(n));
  for (std::size_t i = 0; i < n; ++i) {
    idx[i] = static_cast<std::uint32_t>(i);
    mask[i] = 0;
  }
  auto before = [score](std::uint32_t a, std::uint32_t b) { return score[a] > score[b] || (score[a] == score[b] && a < b); };
  if (k > 0 && k < n) std::nth_element(idx, idx + (k - 1), idx + n, before);
  for (std::size_t i = 0; i < k; ++i) mask[idx[i]] = 1;
}

/// Range-based channel selection (VidKV §6 step 1): mask[c] = 1 for the `count` channels with the
/// largest max_t x[t·ld + c] − min_t x[t·ld + c] over n tokens, ties → lower channel.
/// \param range scratch of d floats; \param idx scratch of d uint32.
inline void select_range_channels(const float* x, std::size_t n, std::size_t ld, std::size_t d, std::size_t count,
                                  std::uint8_t* mask, float* range, std::uint32_t* idx) {
  for (std::size_t c = 0; c < d; ++c) {
    float lo = x[c], hi = x[c];
    for (std::size_t t = 1; t < n; ++t) {
      lo = std::min(lo, x[t * ld + c]);
      hi = std::max(hi, x[t * ld + c]);
    }
    range[c] = hi - lo;
  }
  top_k_mask(range, d, count, mask, idx);
}

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
