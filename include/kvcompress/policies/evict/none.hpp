// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The empty eviction axis: every slot is kept. Also the base class whose no-op hooks other
/// eviction policies inherit when they only act at one point of the lifecycle.

#include <cstddef>
#include <cstdint>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/core/slot_view.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// No-op hooks: keep everything at prefill end and before every append.
struct Base {
  /// Decides per KV head (true) or once per layer for all heads (false).
  static constexpr bool kPerHead = false;
  /// Asks the cache to accumulate attention per slot (SlotView::score).
  static constexpr bool kNeedsScores = false;

  template <class Config>
  static void make_room(const Config&, const SlotView&, std::size_t, std::uint8_t*) {}
  template <class Config>
  static void on_prefill_end(const Config&, PrefillContext&) {}
};

/// Keep every slot.
struct None : Base {
  static constexpr const char* kName = "none";
  struct Config {
    void validate(const CacheShape&) const {}
  };
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
