// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Precision tier of one slot, for stores that encode each token at one of two precisions chosen
/// by the eviction axis instead of evicting it (ZipVL, eviction spec §7 step 5: important tokens
/// T at high precision, the rest U at low precision; lineage ZipCache).
///
/// Flow: a Quant whose `kPrecisionTiers` is true receives the tier of every token it is given in
/// `TokenInfo::tier` and, before each later append, the tiers of all its slots via
/// `Store::apply_tiers(const PrecisionTier*, float* scratch)`. The cache exposes the per-slot tier
/// array to the Evict axis as the writable `SlotView::tier` (decode) and `PrefillContext::tier`
/// (prefill end); both are nullptr when the store has no tiers, and a tier-aware policy then
/// falls back to evicting (core/kv_cache.hpp).

#include <cstdint>

#include "kvcompress/config.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

enum class PrecisionTier : std::uint8_t {
  kPending = 0,  ///< not decided yet: the store keeps the token in full precision meanwhile
  kLow = 1,      ///< encode at the store's low precision (ZipVL: U, 2 bits)
  kHigh = 2,     ///< encode at the store's high precision (ZipVL: T, 4 bits)
};

KVCOMPRESS_NAMESPACE_END
