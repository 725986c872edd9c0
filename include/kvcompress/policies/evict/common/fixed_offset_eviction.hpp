// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Fixed-offset decode eviction (eviction spec §1.10 "decode-time schedulers"; Elastic Cache
/// arXiv 2407.18121 §3.3, PrefixKV arXiv 2412.03409 code): after each decode step, while
/// int(cache_len − r·n_seen) ≥ 1, delete the slot at a fixed index t = (post-prefill length) −
/// distance (half the post-prefill length when that is < 1). The prompt part before t is frozen;
/// the slots from t on form a FIFO of recent tokens, so the cache tracks r·n_seen.
///
/// The index depends on the post-prefill length, which the cache records in every SlotView at
/// end_prefill (prefill_tokens, prefill_slots), so the policies stay stateless. Before
/// end_prefill (prefill_tokens < 0) nothing is removed. Indices are live-slot ordinals (dead
/// slots inside quantized groups are skipped). Allocation-free.

#include <cstddef>
#include <cstdint>

#include "kvcompress/core/slot_view.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

/// The removal point t for a compressed prompt of `prefill_slots` slots: prefill_slots −
/// distance if that is ≥ 1, else prefill_slots / 2.
inline std::size_t fixed_offset(std::size_t prefill_slots, std::size_t distance) {
  return prefill_slots > distance ? prefill_slots - distance : prefill_slots / 2;
}

/// Removals for appending n_incoming tokens to a stream of `len` live slots that has seen
/// `seen` tokens: one per token whose step ends with int(len − ratio·n_seen) ≥ 1 (the codes'
/// per-step rule applied token by token).
inline std::size_t fixed_offset_removals(std::size_t len, std::int64_t seen, std::size_t n_incoming, double ratio) {
  std::int64_t l = static_cast<std::int64_t>(len);
  std::size_t remove = 0;
  for (std::size_t i = 0; i < n_incoming; ++i) {
    ++l, ++seen;
    if (double(l) - ratio * double(seen) >= 1.0) --l, ++remove;
  }
  return remove;
}

/// make_room body: clears keep[] for the removals due before n_incoming tokens are appended,
/// at live ordinals t, t+1, … (the FIFO's oldest slots), t = fixed_offset(s.prefill_slots,
/// distance). Nothing before end_prefill; never more slots than exist from t on.
inline void fixed_offset_evict(const SlotView& s, std::size_t distance, std::size_t n_incoming, double ratio,
                               std::uint8_t* keep) {
  if (s.prefill_tokens < 0) return;
  const std::size_t t = fixed_offset(s.prefill_slots, distance);
  if (s.n_alive < t) return;
  std::size_t remove = fixed_offset_removals(s.n_alive, s.tokens_seen, n_incoming, ratio);
  std::size_t ordinal = 0;
  for (std::size_t j = 0; j < s.n && remove > 0; ++j) {
    if (s.alive != nullptr && !s.alive[j]) continue;
    if (ordinal >= t) keep[j] = 0, --remove;
    ++ordinal;
  }
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
