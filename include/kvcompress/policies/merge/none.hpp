// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The empty merge axis: evicted slots are dropped, nothing is folded into kept slots.
///
/// Merge contract (core/policy_traits.hpp): `kName`, `struct Config { validate(shape) }` and
///   `static void merge(const Config&, const SlotView& view, const uint8_t* keep, float* k,
///                      float* v, std::size_t d);`
/// called by KVCache::end_prefill once per (layer, KV head), after the eviction policy decided
/// `keep` (1 = kept anchor, 0 = evicted; dead slots have view.alive[j] == 0 and must be ignored).
/// k and v are the full-precision rows of every physical slot of that head, [view.n][d]; the
/// policy rewrites kept rows in place (evicted rows are then dropped). The cache re-encodes the
/// kept rows with the store's own quantizer, so merged slots are quantized like fresh tokens
/// (quantization spec BB-16 rules 1 and 4). Keys are post-RoPE (eviction spec §0 rule 4).

#include <cstddef>
#include <cstdint>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/slot_view.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace merge {

/// Drop evicted slots without merging.
struct None {
  static constexpr const char* kName = "none";
  struct Config {
    void validate(const CacheShape&) const {}
  };
  static void merge(const Config&, const SlotView&, const std::uint8_t*, float*, float*, std::size_t) {}
};

}  // namespace merge
KVCOMPRESS_NAMESPACE_END
