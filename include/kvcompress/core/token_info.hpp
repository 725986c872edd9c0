// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Per-token facts a store may need when it encodes tokens: the original absolute position (a
/// pre-RoPE store rotates keys with it at read time, quantization spec BB-14) and the engine's
/// modality label (mixed-precision plans by modality: CalibQuant, AKVQ-VL, VidKV).
///
/// A `Quant::Store` that wants them declares the six-argument append
/// `append(const float* k, const float* v, size_t ld, size_t n, const TokenInfo& info, float* scratch)`
/// instead of the five-argument one; the cache calls whichever exists (core/policy_traits.hpp).

#include <cstdint>

#include "kvcompress/core/modality.hpp"
#include "kvcompress/core/precision_tier.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// Facts about the n tokens of one Store::append call. Both arrays have n entries and stay valid
/// only for the duration of the call. Positions ascend strictly; after eviction they have gaps
/// (positions are never renumbered, eviction spec §0 rule 3).
struct TokenInfo {
  const std::int32_t* pos = nullptr;  ///< [n] original absolute positions
  const Modality* mod = nullptr;      ///< [n] modality labels from the engine
  /// [n] precision tiers (core/precision_tier.hpp); nullptr = all kPending. Set only for stores
  /// whose Quant declares `kPrecisionTiers`.
  const PrecisionTier* tier = nullptr;
};

KVCOMPRESS_NAMESPACE_END
