// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// What an eviction policy sees of one slot table: per-slot original positions, modality labels,
/// liveness and accumulated attention, plus the keep mask it writes. Policies never touch
/// storage; the cache applies their decisions (mark dead, compact, free blocks).

#include <cstddef>
#include <cstdint>

#include "kvcompress/core/modality.hpp"
#include "kvcompress/core/precision_tier.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// Read-only view of the slots of one (layer, KV head) — or of one layer when the eviction
/// policy decides per layer. Slots are in ascending original position; dead slots (evicted but
/// still physically present inside a quantized group) have alive[j] == 0.
struct SlotView {
  std::size_t n = 0;                   ///< physical slots
  std::size_t n_alive = 0;             ///< slots with alive[j] != 0
  const std::int32_t* pos = nullptr;   ///< [n] original absolute positions (never renumbered)
  const Modality* mod = nullptr;       ///< [n] modality labels from the engine
  const std::uint8_t* alive = nullptr; ///< [n] 1 = attended, 0 = evicted
  /// [n] attention accumulated per slot (mean over the query heads of a KV head, summed over
  /// every query the cache attended or observed); nullptr unless the policy asked for scores.
  const float* score = nullptr;
  std::int64_t tokens_seen = 0;        ///< tokens ever appended to this layer (next position)
  int layer = 0;
  /// tokens_seen when end_prefill() last ran, −1 before it (and after clear() or a truncate
  /// into the prompt). Decode-time schedulers that act relative to the compressed prompt
  /// (fixed-offset eviction: Elastic Cache, PrefixKV) read this instead of keeping state.
  std::int64_t prefill_tokens = -1;
  /// Live slots right after that end_prefill: the compressed prompt's length.
  std::size_t prefill_slots = 0;
  /// [n] precision tier of each slot, writable: set only in the view make_room receives when the
  /// store encodes at two precisions (core/precision_tier.hpp); a policy may then demote slots to
  /// PrecisionTier::kLow instead of evicting them. nullptr otherwise.
  PrecisionTier* tier = nullptr;
};

KVCOMPRESS_NAMESPACE_END
