// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-10 of methods/quantization.md, extraction half: choose the outlier positions of one vector
/// (a token's channels, or a key channel's tokens within a block) before dense quantization.
///   - select_extremes: the `per_side` largest and `per_side` smallest values (GEAR §7 with
///     per_side = max(1, round(s·len/2)) [rec]; KVQuant values' count rule ⌊(p/2)(n−1)⌋ + 1).
///   - select_beyond: values beyond calibrated thresholds (KVQuant keys: strictly above t_hi or
///     below t_lo; KVQuant values' quantile rule is inclusive).
/// Both return ascending channel indices (uint16, the TokenSparse index type), each position
/// once. Equal values at a selection boundary are taken lowest index first. The
/// selected values go into a TokenSparse (token_sparse.hpp), which reproduces them exactly.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Comparison used by select_beyond.
enum class ThresholdRule {
  kStrict,     ///< x > t_hi or x < t_lo (KVQuant keys)
  kInclusive,  ///< x ≥ t_hi or x ≤ t_lo (KVQuant values' quantile comparison)
};

/// Stable name of a ThresholdRule.
inline const char* to_string(ThresholdRule r) { return r == ThresholdRule::kStrict ? "strict" : "inclusive"; }

/// Largest vector length an outlier index can address (uint16 indices).
inline constexpr std::size_t kMaxOutlierVectorLength = 65536;

namespace detail {

inline void check_outlier_input(const char* where, const float* x, std::size_t n) {
  kvcompress::detail::require(n > 0 && n <= kMaxOutlierVectorLength, where, "n", n,
                              "a vector length in [1, 65536] (uint16 indices)");
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i]))
      kvcompress::detail::require(false, where, ("x[" + std::to_string(i) + "]").c_str(), x[i], "a finite value");
  }
}

}  // namespace detail

/// Writes the ascending indices of the per_side largest values of x[0..n), then of the per_side
/// smallest among the rest, to idx and returns their number, min(n, 2·per_side) (so a fixed-size
/// outlier buffer is always filled, even when many values are equal).
/// \param idx capacity ≥ min(n, 2·per_side).
inline std::size_t select_extremes(const float* x, std::size_t n, std::size_t per_side, std::uint16_t* idx) {
  detail::check_outlier_input("quant::common::select_extremes", x, n);
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  const auto top = order.begin() + static_cast<std::ptrdiff_t>(std::min(per_side, n));
  std::partial_sort(order.begin(), top, order.end(),
                    [x](std::size_t a, std::size_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
  const auto bottom = top + static_cast<std::ptrdiff_t>(std::min(per_side, static_cast<std::size_t>(order.end() - top)));
  std::partial_sort(top, bottom, order.end(),
                    [x](std::size_t a, std::size_t b) { return x[a] < x[b] || (x[a] == x[b] && a < b); });
  std::vector<std::uint8_t> chosen(n, 0);
  for (auto it = order.begin(); it != bottom; ++it) chosen[*it] = 1;
  std::size_t count = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (chosen[i]) idx[count++] = static_cast<std::uint16_t>(i);
  return count;
}

/// Writes the ascending indices of the values of x[0..n) beyond [t_lo, t_hi] under `rule` to
/// idx and returns their number. Throws InvalidArgument unless t_lo ≤ t_hi (NaN rejected).
/// \param idx capacity ≥ n.
inline std::size_t select_beyond(const float* x, std::size_t n, float t_lo, float t_hi, ThresholdRule rule,
                                 std::uint16_t* idx) {
  constexpr const char* where = "quant::common::select_beyond";
  detail::check_outlier_input(where, x, n);
  kvcompress::detail::require(t_lo <= t_hi, where, "t_hi", t_hi, "≥ t_lo = " + std::to_string(t_lo));
  std::size_t count = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const bool out = rule == ThresholdRule::kStrict ? (x[i] > t_hi || x[i] < t_lo) : (x[i] >= t_hi || x[i] <= t_lo);
    if (out) idx[count++] = static_cast<std::uint16_t>(i);
  }
  return count;
}

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
