// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// What `KVCache::end_prefill()` hands to an eviction policy once every layer of the prompt has
/// been appended: the slot views of all layers at once (cross-layer budget allocators need them
/// together), one keep mask per view to fill, and the two attention sources of eviction spec
/// §1.1 that are not the accumulated column sums of SlotView::score:
///  - `queries(layer)`: the last `Evict::query_window(config)` query rows the cache was given for
///    that layer (through attend or observe), for window scorers (SnapKV, CSP, VL-Cache, AirCache,
///    ZipVL) via evict::common::attention_rows_from_window — FlashAttention-compatible, since an
///    engine that runs its own attention passes the window to `observe`;
///  - `read(layer, kv_head, k, v)`: the full-precision keys/values of a stream (post-RoPE, as the
///    engine appended them). With a lossy store and an eviction policy that selects at prefill
///    end, the prompt is held in fp16 until end_prefill (quantization spec BB-16 rule 1), so
///    scorers and mergers never see dequantized prompt KV.
/// The cache owns all memory; this is a view.

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/precision_tier.hpp"
#include "kvcompress/core/query_rows.hpp"
#include "kvcompress/core/slot_view.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// Where a PrefillContext gets query windows and full-precision K/V. Tests of a policy can fill
/// it with their own data; KVCache fills it with its own.
struct PrefillSources {
  /// [num_layers] query windows (rows = 0 where none were kept); nullptr = none at all.
  const QueryRows* queries = nullptr;
  /// Reads all physical slots of stream (layer, kv_head) as fp32 rows: k and v are [n][d] with
  /// n = slots(layer, view).n. `self` is passed back unchanged.
  void (*read)(const void* self, int layer, int kv_head, float* k, float* v) = nullptr;
  const void* self = nullptr;
  /// Logit scale the engine used in attend (1/√d when it passed none).
  float scale = 0.0f;
};

/// All slot tables of a cache at the end of prefill. `views_per_layer()` is num_kv_heads for a
/// per-head policy and 1 for a per-layer policy. keep(l, v) starts as a copy of alive; a policy
/// clears entries to evict them (setting a dead slot to 1 is ignored).
class PrefillContext {
 public:
  /// `tiers` (optional) has the same layout as `keep`: one precision tier per slot and view, for
  /// a store that encodes at two precisions (core/precision_tier.hpp); nullptr otherwise.
  PrefillContext(const CacheShape& shape, int views_per_layer, const SlotView* views,
                 std::uint8_t* keep, std::size_t keep_stride, const PrefillSources& sources = {},
                 PrecisionTier* tiers = nullptr)
      : shape_(shape), views_per_layer_(views_per_layer), views_(views), keep_(keep),
        keep_stride_(keep_stride), src_(sources), tiers_(tiers) {}

  const CacheShape& shape() const { return shape_; }
  int num_layers() const { return shape_.num_layers; }
  int views_per_layer() const { return views_per_layer_; }
  const SlotView& slots(int layer, int view) const { return views_[index(layer, view)]; }
  std::uint8_t* keep(int layer, int view) { return keep_ + index(layer, view) * keep_stride_; }
  /// Precision tier per slot of the view (all kPending on entry), writable: a policy may demote
  /// slots to PrecisionTier::kLow instead of evicting them. nullptr when the store has a single
  /// precision — such a policy then evicts.
  PrecisionTier* tier(int layer, int view) {
    return tiers_ ? tiers_ + index(layer, view) * keep_stride_ : nullptr;
  }

  /// The query window kept for `layer` ([Hq][rows][d], unscaled, post-RoPE); rows = 0 if none.
  QueryRows queries(int layer) const {
    if (src_.queries == nullptr) return QueryRows{nullptr, nullptr, shape_.num_q_heads, 0, shape_.head_dim};
    return src_.queries[layer];
  }

  /// Full-precision keys and values of every physical slot of (layer, kv_head): k and v must
  /// hold slots(layer, view).n × head_dim floats each (view = kv_head for per-head policies, 0
  /// otherwise). Throws InvalidArgument if this context has no K/V source.
  void read(int layer, int kv_head, float* k, float* v) const {
    detail::require(src_.read != nullptr, "PrefillContext::read", "sources.read", "nullptr",
                    "a K/V source (KVCache always provides one)");
    src_.read(src_.self, layer, kv_head, k, v);
  }

  /// Logit scale of the engine's attention (1/√head_dim unless it passed another).
  float scale() const {
    return src_.scale > 0.0f ? src_.scale : 1.0f / std::sqrt(static_cast<float>(shape_.head_dim));
  }

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
  PrefillSources src_;
  PrecisionTier* tiers_;
};

KVCOMPRESS_NAMESPACE_END
