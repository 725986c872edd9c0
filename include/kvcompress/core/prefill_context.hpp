// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// What `KVCache::end_prefill()` hands to an eviction policy once every layer of the prompt has
/// been appended: the slot views of all layers at once (cross-layer budget allocators need them
/// together) and one keep mask per view to fill. The cache owns all memory; this is a view.

#include <cstddef>
#include <cstdint>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/slot_view.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// All slot tables of a cache at the end of prefill. `views_per_layer()` is num_kv_heads for a
/// per-head policy and 1 for a per-layer policy. keep(l, v) starts as a copy of alive; a policy
/// clears entries to evict them (setting a dead slot to 1 is ignored).
class PrefillContext {
 public:
  PrefillContext(const CacheShape& shape, int views_per_layer, const SlotView* views,
                 std::uint8_t* keep, std::size_t keep_stride)
      : shape_(shape), views_per_layer_(views_per_layer), views_(views), keep_(keep),
        keep_stride_(keep_stride) {}

  const CacheShape& shape() const { return shape_; }
  int num_layers() const { return shape_.num_layers; }
  int views_per_layer() const { return views_per_layer_; }
  const SlotView& slots(int layer, int view) const { return views_[index(layer, view)]; }
  std::uint8_t* keep(int layer, int view) { return keep_ + index(layer, view) * keep_stride_; }

 private:
  std::size_t index(int layer, int view) const {
    return static_cast<std::size_t>(layer) * static_cast<std::size_t>(views_per_layer_) +
           static_cast<std::size_t>(view);
  }
  CacheShape shape_;
  int views_per_layer_;
  const SlotView* views_;
  std::uint8_t* keep_;
  std::size_t keep_stride_;
};

KVCOMPRESS_NAMESPACE_END
