// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The two steps every one-shot prefill-end selector shares (eviction spec §1.5, §1.8), on the
/// *live* slots of a view:
///   - `read_live_rows`: the full-precision K/V of a stream's live slots (PrefillContext::read,
///     dead slots dropped), with their physical indices and positions, so scorers work on
///     contiguous rows and never see evicted slots (a softmax over live keys matches what
///     KVCache::attend computes);
///   - `keep_top_k`: protection (protected_set.hpp) + top-k (score_selection.hpp) over one score
///     per live slot, written back to the view's keep mask; an infeasible budget under
///     ProtectedOverflow::kError throws naming the caller's budget field.
/// Runs once per prefill, so it allocates.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/modality.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/core/slot_view.hpp"
#include "kvcompress/policies/evict/common/protected_set.hpp"
#include "kvcompress/policies/evict/common/score_selection.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

/// The live slots of one stream, contiguous, in ascending position.
struct LiveRows {
  std::vector<std::size_t> index;  ///< [n] physical slot index of live row r
  std::vector<std::int32_t> pos;   ///< [n] original positions
  std::vector<float> k, v;         ///< [n][d] full-precision keys / values (post-RoPE keys)
  std::size_t size() const { return index.size(); }
};

/// Physical indices of the live slots of a view.
inline std::vector<std::size_t> live_indices(const SlotView& s) {
  std::vector<std::size_t> idx;
  idx.reserve(s.n_alive);
  for (std::size_t j = 0; j < s.n; ++j)
    if (s.alive[j]) idx.push_back(j);
  return idx;
}

/// Reads the live rows of stream (layer, kv_head); `view` is the PrefillContext view that holds
/// the stream's slot table (kv_head for per-head policies, 0 for per-layer ones).
inline LiveRows read_live_rows(const PrefillContext& ctx, int layer, int view, int kv_head) {
  const SlotView& s = ctx.slots(layer, view);
  const std::size_t d = static_cast<std::size_t>(ctx.shape().head_dim);
  std::vector<float> k(s.n * d), v(s.n * d);
  ctx.read(layer, kv_head, k.data(), v.data());
  LiveRows r;
  r.index = live_indices(s);
  r.pos.resize(r.size());
  r.k.resize(r.size() * d);
  r.v.resize(r.size() * d);
  for (std::size_t t = 0; t < r.size(); ++t) {
    const std::size_t j = r.index[t];
    r.pos[t] = s.pos[j];
    std::copy(k.begin() + static_cast<std::ptrdiff_t>(j * d), k.begin() + static_cast<std::ptrdiff_t>((j + 1) * d),
              r.k.begin() + static_cast<std::ptrdiff_t>(t * d));
    std::copy(v.begin() + static_cast<std::ptrdiff_t>(j * d), v.begin() + static_cast<std::ptrdiff_t>((j + 1) * d),
              r.v.begin() + static_cast<std::ptrdiff_t>(t * d));
  }
  return r;
}

/// Keeps `k` live slots of view `s`: the protected ones (`pc`, counted in live slots: sinks,
/// recent, and the mandatory range given in live-slot indices) plus the highest `live_score`
/// among the others, ties to the lower position; clears keep[] for every other live slot.
/// k ≥ live slots changes nothing. If the protected set alone exceeds k: kError throws
/// InvalidArgument from `where` naming `budget_field`; kKeepAll / kTruncate act as in
/// select_top_k. Returns the selection outcome (counts in live slots).
/// \param live_score [s.n_alive] one score per live slot, in ascending position
inline Selection keep_top_k(const SlotView& s, const float* live_score, const ProtectionConfig& pc, std::size_t k,
                            ProtectedOverflow overflow, std::uint8_t* keep, const char* where,
                            const char* budget_field) {
  const std::vector<std::size_t> idx = live_indices(s);
  const std::size_t n = idx.size();
  Selection r;
  if (n == 0) return r;
  std::vector<std::int32_t> pos(n);
  std::vector<Modality> mod(n, Modality::kText);
  for (std::size_t t = 0; t < n; ++t) {
    pos[t] = s.pos[idx[t]];
    if (s.mod != nullptr) mod[t] = s.mod[idx[t]];
  }
  std::vector<Protection> prot(n);
  mark_protected(pc, n, nullptr, mod.data(), prot.data());
  const std::size_t n_protected = count_protected(prot.data(), n);
  if (k < n && n_protected > k)
    detail::require(overflow != ProtectedOverflow::kError, where, budget_field, std::to_string(k) + " slots", [&] {
      return ">= the protected set of layer " + std::to_string(s.layer) + " (" + std::to_string(n_protected) +
             " slots: sinks, window, recent), or on_protected_overflow = keep_all / truncate";
    });
  std::vector<std::size_t> out(n), scratch(n);
  r = select_top_k(live_score, pos.data(), nullptr, prot.data(), n, static_cast<std::ptrdiff_t>(k), overflow,
                   out.data(), scratch.data());
  std::vector<std::uint8_t> kept(n, 0);
  for (std::size_t t = 0; t < r.count; ++t) kept[out[t]] = 1;
  for (std::size_t t = 0; t < n; ++t)
    if (!kept[t]) keep[idx[t]] = 0;
  return r;
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
