// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// FastCache grouping — "FastCache: Optimizing Multimodal LLM Serving through Lightweight
/// KV-Cache Compression Framework", Zhu, Wu, Wang, Li, Hou, Li, Zhai, arXiv 2503.08461
/// (eviction spec §10, compression part). FastCache's compress stage replaces every group of
/// `factor` consecutive slots of a segment by one slot computed by a learned MLP. In
/// `Policy<Evict, Merge, Quant>` terms the grouping is this Evict policy (keep each group's first
/// slot as its anchor, drop the others) and the MLP is the Merge policy
/// merge::FastCacheCompressor (policies/merge/fastcache_compressor.hpp), which rewrites each
/// anchor from its group before the store encodes it. Use them together:
/// `Policy<evict::FastCache, merge::FastCacheCompressor, Quant>`.
///
/// Segments: the reference splits the prompt at an index `it_len` into an "image" part and a
/// "text" part. We take segments from the engine's modality labels instead (never from token
/// counts): the visual segment is every slot labelled kImage or kVideo, the text segment every
/// other slot, each in position order (our interpretation; identical to the reference when the
/// image precedes the text). Per layer and segment, with n_seg slots: groups g = 0..⌊n_seg/c⌋−1
/// of c consecutive segment slots, the remainder n_seg mod c kept uncompressed; a segment with
/// fewer than `min_groups` groups is left untouched (the reference's `min_seq_len`). Kept slots
/// stay in ascending position (spec §0 rule 1) with the anchor at its group's first position,
/// rather than the reference's [image groups, image remainder, text groups, text remainder]
/// order; tokens_seen is unchanged (spec §10 step 4).
///
/// The serving part of the paper (three-stage scheduler, KV pool) is an engine concern and is
/// not part of this library.

#include <cstddef>
#include <cstdint>
#include <string>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/modality.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/policies/evict/none.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// FastCache's two segments.
enum class FastCacheSegment : std::uint8_t { kVisual = 0, kText = 1 };

/// Segment of a modality label.
constexpr FastCacheSegment fastcache_segment(Modality m) {
  return (m == Modality::kImage || m == Modality::kVideo) ? FastCacheSegment::kVisual : FastCacheSegment::kText;
}

/// Keeps the first slot of every `factor`-group of each segment (the group's anchor).
struct FastCache : Base {
  static constexpr const char* kName = "fastcache";
  static constexpr bool kPerHead = false;
  static constexpr bool kSelectsAtPrefillEnd = true;

  struct Config {
    std::size_t factor = 2;      ///< c: slots per group (reference class default 2; training default 5)
    std::size_t min_groups = 1;  ///< segments with fewer full groups stay uncompressed

    void validate(const CacheShape&) const {
      detail::require(factor >= 2, "evict::FastCache", "factor", factor, ">= 2 (slots per compressed group)");
      detail::require(min_groups >= 1, "evict::FastCache", "min_groups", min_groups, ">= 1");
    }
  };

  /// Clears keep[] for every group member but the anchor, per layer and segment.
  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    for (int l = 0; l < ctx.num_layers(); ++l) {
      const SlotView& s = ctx.slots(l, 0);
      std::uint8_t* keep = ctx.keep(l, 0);
      for (FastCacheSegment seg : {FastCacheSegment::kVisual, FastCacheSegment::kText}) {
        std::size_t n_seg = 0;
        for (std::size_t j = 0; j < s.n; ++j) n_seg += (s.alive[j] && fastcache_segment(s.mod[j]) == seg) ? 1 : 0;
        const std::size_t groups = n_seg / c.factor;
        if (groups < c.min_groups) continue;
        std::size_t rank = 0;  // index of slot j within its segment
        for (std::size_t j = 0; j < s.n && rank < groups * c.factor; ++j) {
          if (!s.alive[j] || fastcache_segment(s.mod[j]) != seg) continue;
          if (rank % c.factor != 0) keep[j] = 0;
          ++rank;
        }
      }
    }
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
