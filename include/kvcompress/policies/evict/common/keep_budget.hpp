// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// How many slots a view keeps at a one-shot selection (eviction spec §1.5, §1.6 "uniform"):
/// either a retained fraction of its live slots, k = floor(ratio·n) (the uniform allocator of
/// layer_budget.hpp; kvpress `int(n·(1 − compression_ratio))`), or an absolute slot count
/// (SnapKV `max_capacity_prompt`), k = min(tokens, n). Protected slots count against k (§1.4).
/// A view with k ≥ n is left unchanged ("skip compression when m < C", identity at ratio 1).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "kvcompress/core/errors.hpp"
#include "kvcompress/policies/evict/common/layer_budget.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

/// A per-view retained budget: a ratio of the live slots, or an absolute count when tokens > 0.
struct KeepBudget {
  double ratio = 1.0;      ///< retained fraction r ∈ (0, 1]; used when tokens == 0
  std::size_t tokens = 0;  ///< absolute slots kept per view, protected ones included; 0 = use ratio

  /// Throws InvalidArgument naming `<prefix>.ratio` for a ratio outside (0, 1] (when the ratio is
  /// the active budget).
  void validate(const char* where) const {
    if (tokens == 0)
      detail::require(ratio > 0.0 && ratio <= 1.0, where, "budget.ratio", ratio,
                      "in (0, 1] (retained fraction), or budget.tokens > 0");
  }

  /// Name of the active field, for error messages.
  const char* field() const { return tokens > 0 ? "budget.tokens" : "budget.ratio"; }

  /// Slots a view with `n_live` live slots keeps: min(tokens, n) or floor(r·n) (at least 1),
  /// the latter through the uniform allocator. 0 for an empty view.
  std::size_t resolve(std::size_t n_live) const {
    if (n_live == 0) return 0;
    if (tokens > 0) return std::min(tokens, n_live);
    return uniform_budgets({n_live}, ratio).kept[0];
  }
};

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
