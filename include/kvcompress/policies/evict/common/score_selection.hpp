// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Score-based selection shared by eviction policies (eviction spec §1.5): keep the highest
/// scores among the live, unprotected slots; ties prefer the lower original position (§0 rule 2);
/// protected slots (here: the most recent ones) are always kept and count against the budget.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

#include "kvcompress/core/slot_view.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

/// Index of the first live slot among the last `recent` live slots of `s` (s.n if recent == 0):
/// every live slot at or after it is protected.
inline std::size_t recent_start(const SlotView& s, std::size_t recent) {
  std::size_t j = s.n;
  for (std::size_t seen = 0; j > 0 && seen < recent; --j) seen += s.alive[j - 1] ? 1 : 0;
  return j;
}

/// True if slot a should be evicted before slot b: lower score first, then lower position.
inline bool evict_before(const SlotView& s, std::size_t a, std::size_t b) {
  return s.score[a] < s.score[b] || (s.score[a] == s.score[b] && s.pos[a] > s.pos[b]);
}

/// Clears keep[] for the `count` lowest-scoring live slots before the protected recent ones
/// (decode path: one argmin scan per evicted slot, no allocation). Ties evict the later
/// position first, so equal scores keep the lower position (§0 rule 2).
inline void evict_lowest_scores(const SlotView& s, std::size_t count, std::size_t protected_recent,
                                std::uint8_t* keep) {
  const std::size_t end = recent_start(s, protected_recent);
  for (std::size_t e = 0; e < count; ++e) {
    std::size_t worst = end;
    for (std::size_t j = 0; j < end; ++j) {
      if (!s.alive[j] || !keep[j]) continue;
      if (worst == end || evict_before(s, j, worst)) worst = j;
    }
    if (worst == end) return;  // nothing unprotected left
    keep[worst] = 0;
  }
}

/// Keeps the `budget` highest-scoring live slots before the protected recent ones and clears
/// keep[] for the other unprotected live slots (prefill end: O(n log n), allocates, not on the
/// decode path).
inline void keep_top_scores(const SlotView& s, std::size_t budget, std::size_t protected_recent,
                            std::uint8_t* keep) {
  const std::size_t end = recent_start(s, protected_recent);
  std::vector<std::size_t> idx;
  idx.reserve(end);
  for (std::size_t j = 0; j < end; ++j)
    if (s.alive[j]) idx.push_back(j);
  if (idx.size() <= budget) return;
  std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) {
    return s.score[a] > s.score[b];  // stable: equal scores stay in ascending position
  });
  for (std::size_t i = budget; i < idx.size(); ++i) keep[idx[i]] = 0;
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
