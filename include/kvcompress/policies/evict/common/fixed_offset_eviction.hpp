// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Fixed-offset decode eviction (eviction spec §1.10 "decode-time schedulers"; Elastic Cache
/// arXiv 2407.18121 §3.3, PrefixKV arXiv 2412.03409 code): after each decode step, while
/// int(cache_len − r·n_seen) ≥ 1, delete the slot at a fixed index t = (post-prefill length) −
/// distance (half the post-prefill length when that is < 1). The prompt part before t is frozen;
/// the slots from t on form a FIFO of recent tokens, so the cache tracks r·n_seen.
///
/// The index depends on the post-prefill length, which a SlotView does not carry: the policy
/// records a FixedOffsetState per layer at prefill end and passes it back at each make_room. A
/// state is honoured only while it still describes the stream (tokens_seen not below the prompt
/// length, the last frozen slot still at its ordinal), so a stale record after clear() and a new
/// prompt is ignored. Indices are live-slot ordinals (dead slots inside quantized groups are
/// skipped). Allocation-free.

#include <cstddef>
#include <cstdint>

#include "kvcompress/core/slot_view.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

/// Decode bookkeeping of one stream, recorded at prefill end.
struct FixedOffsetState {
  bool valid = false;
  std::int64_t prompt_tokens = 0;  ///< tokens_seen at prefill end
  std::size_t offset = 0;          ///< t: live ordinal of the removal point
  std::int32_t frozen_pos = -1;    ///< position of live ordinal t − 1 (−1 when t = 0)
};

/// The state after a prefill-end selection kept the slots at ascending positions
/// kept_pos[0..kept) of a stream that had seen `prompt_tokens` tokens:
/// t = kept − distance if kept > distance, else kept / 2.
inline FixedOffsetState fixed_offset_state(std::int64_t prompt_tokens, const std::int32_t* kept_pos, std::size_t kept,
                                           std::size_t distance) {
  FixedOffsetState st;
  st.valid = true;
  st.prompt_tokens = prompt_tokens;
  st.offset = kept > distance ? kept - distance : kept / 2;
  st.frozen_pos = st.offset > 0 ? kept_pos[st.offset - 1] : -1;
  return st;
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
/// at live ordinals t, t+1, … (the FIFO's oldest slots). Does nothing for an invalid or stale
/// state. Never removes more slots than exist from t on.
inline void fixed_offset_evict(const FixedOffsetState& st, const SlotView& s, std::size_t n_incoming, double ratio,
                               std::uint8_t* keep) {
  if (!st.valid || s.tokens_seen < st.prompt_tokens || s.n_alive < st.offset) return;
  std::size_t remove = fixed_offset_removals(s.n_alive, s.tokens_seen, n_incoming, ratio);
  if (remove == 0) return;
  std::size_t ordinal = 0;
  for (std::size_t j = 0; j < s.n && remove > 0; ++j) {
    if (s.alive != nullptr && !s.alive[j]) continue;
    if (ordinal + 1 == st.offset && s.pos[j] != st.frozen_pos) return;  // stale record
    if (ordinal >= st.offset) keep[j] = 0, --remove;
    ++ordinal;
  }
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
