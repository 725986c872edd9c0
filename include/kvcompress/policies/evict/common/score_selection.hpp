// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Score-based selection shared by eviction policies (eviction spec §1.5): keep the highest
/// scores among the live, unprotected slots; ties prefer the lower original position (§0 rule 2);
/// protected slots (protected_set.hpp) are always kept and count against the budget.
/// `select_top_k` is the one top-k implementation (prefill end, allocation-free with caller
/// scratch); `keep_top_scores` is its keep-mask form for a SlotView with a recent window, and
/// `evict_lowest_scores` the one-at-a-time decode path (argmin scans, no sort).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/slot_view.hpp"
#include "kvcompress/policies/evict/common/protected_set.hpp"

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

/// Clears keep[] for the `count` live slots with the lowest score(j) before the protected recent
/// ones (decode path: one argmin scan per evicted slot, no allocation). Ties evict the later
/// position first, so equal scores keep the lower position (§0 rule 2). `score` is any callable
/// j → float, so policies that derive their ranking from SlotView::score on the fly (pooling,
/// biases: Inf-MLLM) share this loop.
template <class ScoreFn>
void evict_lowest(const SlotView& s, ScoreFn&& score, std::size_t count, std::size_t protected_recent,
                  std::uint8_t* keep) {
  const std::size_t end = recent_start(s, protected_recent);
  for (std::size_t e = 0; e < count; ++e) {
    std::size_t worst = end;
    float worst_score = 0.0f;
    for (std::size_t j = 0; j < end; ++j) {
      if (!s.alive[j] || !keep[j]) continue;
      const float x = score(j);
      if (worst == end || x < worst_score || (x == worst_score && s.pos[j] > s.pos[worst])) {
        worst = j;
        worst_score = x;
      }
    }
    if (worst == end) return;  // nothing unprotected left
    keep[worst] = 0;
  }
}

/// evict_lowest ranked by the accumulated attention SlotView::score (H2O decode).
inline void evict_lowest_scores(const SlotView& s, std::size_t count, std::size_t protected_recent,
                                std::uint8_t* keep) {
  evict_lowest(s, [&](std::size_t j) { return s.score[j]; }, count, protected_recent, keep);
}

/// What select_top_k does when the protected set alone exceeds the budget k (§1.5 [rec]).
enum class ProtectedOverflow : std::uint8_t {
  kError,     ///< throw InvalidArgument: the caller asked for an infeasible budget (default)
  kKeepAll,   ///< keep every protected slot, exceed the budget and report it
  kTruncate,  ///< keep the first k protected slots in the order sinks → mandatory → recent
              ///< (newest first) → modality-protected (by score, ties to the lower position)
};

/// Stable name for logs and test output.
constexpr const char* to_string(ProtectedOverflow o) {
  switch (o) {
    case ProtectedOverflow::kError: return "error";
    case ProtectedOverflow::kKeepAll: return "keep_all";
    case ProtectedOverflow::kTruncate: return "truncate";
  }
  return "invalid";
}

/// Outcome of select_top_k.
struct Selection {
  std::size_t count = 0;            ///< indices written to `out`
  std::size_t protected_count = 0;  ///< live protected slots |P|
  bool over_budget = false;         ///< kKeepAll kept |P| > k slots
  bool truncated = false;           ///< kTruncate dropped protected slots
};

namespace detail_selection {

/// Score used for ranking: NaN ranks below every number so the order stays strict-weak.
inline float rank_score(float x) { return std::isnan(x) ? -std::numeric_limits<float>::infinity() : x; }

}  // namespace detail_selection

/// Top-k with protection (§1.5): writes the slot indices to keep, ascending, to out[0..count).
///  1. P = live slots with prot[j] != kNone. If |P| > k, `overflow` decides (an exactly full
///     budget, |P| == k, is feasible and returns P).
///  2. Otherwise the k − |P| highest-scoring live unprotected slots join P; equal scores keep the
///     lower position (§0 rule 2).
/// k ≤ 0 always throws; k ≥ live slots returns every live slot. Slots are assumed to be stored in
/// ascending position (§0 rule 1), so ascending index = ascending position. O(n log n) worst case,
/// no allocation.
/// \param score   [n] importance, higher = keep (NaN ranks lowest)
/// \param pos     [n] original positions for the tie rule, or nullptr to use slot indices
/// \param alive   [n] liveness, or nullptr when all slots are live
/// \param prot    [n] protection classes (mark_protected), or nullptr for none
/// \param k       budget: slots to keep including the protected ones
/// \param out     [n] receives the kept indices
/// \param scratch [n] work space
inline Selection select_top_k(const float* score, const std::int32_t* pos, const std::uint8_t* alive,
                              const Protection* prot, std::size_t n, std::ptrdiff_t k, ProtectedOverflow overflow,
                              std::size_t* out, std::size_t* scratch) {
  const char* where = "evict::common::select_top_k";
  detail::require(k > 0, where, "k", k, "> 0 (a budget of zero slots is never valid)");
  auto live = [&](std::size_t j) { return alive == nullptr || alive[j] != 0; };
  auto is_protected = [&](std::size_t j) { return prot != nullptr && prot[j] != Protection::kNone; };
  auto position = [&](std::size_t j) { return pos ? std::int64_t(pos[j]) : std::int64_t(j); };
  // Strict total order "a is kept before b": higher score, then lower position.
  auto better = [&](std::size_t a, std::size_t b) {
    const float sa = detail_selection::rank_score(score[a]), sb = detail_selection::rank_score(score[b]);
    return sa > sb || (sa == sb && position(a) < position(b));
  };
  Selection r;
  std::size_t n_live = 0;
  for (std::size_t j = 0; j < n; ++j) {
    n_live += live(j) ? 1 : 0;
    r.protected_count += live(j) && is_protected(j) ? 1 : 0;
  }
  const std::size_t budget = static_cast<std::size_t>(k);
  if (budget >= n_live) {
    for (std::size_t j = 0; j < n; ++j)
      if (live(j)) out[r.count++] = j;
    return r;
  }
  if (r.protected_count > budget) {
    detail::require(overflow != ProtectedOverflow::kError, where, "k", k, [&] {
      return ">= the protected set (" + std::to_string(r.protected_count) +
             " slots), or on_protected_overflow = keep_all / truncate";
    });
    for (std::size_t j = 0; j < n; ++j)
      if (live(j) && is_protected(j)) out[r.count++] = j;
    if (overflow == ProtectedOverflow::kKeepAll) {
      r.over_budget = true;
      return r;
    }
    // Truncate: order P by class, then sinks/mandatory oldest first, recent newest first,
    // modality slots by score; keep the first k and return them in ascending order.
    std::sort(out, out + r.count, [&](std::size_t a, std::size_t b) {
      if (prot[a] != prot[b]) return static_cast<int>(prot[a]) < static_cast<int>(prot[b]);
      if (prot[a] == Protection::kRecent) return position(a) > position(b);
      if (prot[a] == Protection::kModality) return better(a, b);
      return position(a) < position(b);
    });
    r.count = budget;
    r.truncated = true;
    std::sort(out, out + r.count);
    return r;
  }
  std::size_t n_cand = 0;
  for (std::size_t j = 0; j < n; ++j) {
    if (!live(j)) continue;
    if (is_protected(j)) out[r.count++] = j;
    else scratch[n_cand++] = j;
  }
  const std::size_t take = budget - r.count;  // < n_cand because budget < n_live
  std::nth_element(scratch, scratch + take, scratch + n_cand, better);
  std::copy(scratch, scratch + take, out + r.count);
  r.count += take;
  std::sort(out, out + r.count);
  return r;
}

/// Keeps the `budget` highest-scoring live slots before the protected recent ones and clears
/// keep[] for the other unprotected live slots (H2O prefill end; select_top_k over s.score with
/// the last `protected_recent` live slots protected; allocates, not on the decode path).
inline void keep_top_scores(const SlotView& s, std::size_t budget, std::size_t protected_recent,
                            std::uint8_t* keep) {
  ProtectionConfig pc;
  pc.recent = protected_recent;
  std::vector<Protection> prot(s.n);
  mark_protected(pc, s.n, s.alive, nullptr, prot.data());
  const std::size_t k = budget + count_protected(prot.data(), s.n);
  std::vector<std::uint8_t> kept(s.n, 0);
  if (k > 0) {
    std::vector<std::size_t> idx(s.n), scratch(s.n);
    const Selection r = select_top_k(s.score, s.pos, s.alive, prot.data(), s.n, static_cast<std::ptrdiff_t>(k),
                                     ProtectedOverflow::kError, idx.data(), scratch.data());
    for (std::size_t t = 0; t < r.count; ++t) kept[idx[t]] = 1;
  }
  for (std::size_t j = 0; j < s.n; ++j)
    if (s.alive[j] && !kept[j]) keep[j] = 0;
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
