// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Reading the prefill-end sources of eviction spec §1.1 for window scorers (VL-Cache, CSP,
/// AirCache, ZipVL): the query window a PrefillContext kept for a layer, the full-precision keys
/// of every KV head of that layer in the [Hkv][n][d] layout of common::attention_rows_from_window,
/// and the visual/non-visual split of the engine's modality labels (never inferred, §0).
/// `live_scores` compacts a per-slot score to the live slots; `gather_rows` copies a subset of
/// query or key rows (AirCache elite rows). Prefill end only: these allocate.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/modality.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/core/query_rows.hpp"
#include "kvcompress/core/slot_view.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

/// True for the visual modalities (image patches, video frames).
constexpr bool is_visual(Modality m) { return m == Modality::kImage || m == Modality::kVideo; }

/// Keys of every KV head of `layer` into k = [Hkv][n][d] (n = the layer's physical slots, equal
/// in every head at prefill end); the values are read into a scratch buffer and dropped.
inline void read_layer_keys(const PrefillContext& ctx, int layer, std::size_t n, std::vector<float>& k) {
  const std::size_t d = static_cast<std::size_t>(ctx.shape().head_dim);
  k.resize(static_cast<std::size_t>(ctx.shape().num_kv_heads) * n * d);
  std::vector<float> v(n * d);
  for (int h = 0; h < ctx.shape().num_kv_heads; ++h)
    ctx.read(layer, h, k.data() + static_cast<std::size_t>(h) * n * d, v.data());
}

/// The query window of `layer`; InvalidArgument naming "queries(layer).rows" when it is empty
/// (the engine attended/observed no prompt rows, or the policy's query_window is 0).
inline QueryRows require_query_window(const PrefillContext& ctx, int layer, const char* where) {
  const QueryRows q = ctx.queries(layer);
  detail::require(q.rows >= 1 && q.q != nullptr && q.pos != nullptr, where, "queries(layer).rows", q.rows,
                  ">= 1 query row kept for every layer (attend or observe the prompt's last rows)");
  return q;
}

/// One value per live slot of `s` (ascending position) from a per-physical-slot array: the
/// `live_score` input of common::keep_top_k (prefill_selection.hpp).
inline std::vector<float> live_scores(const SlotView& s, const float* per_slot) {
  std::vector<float> out;
  out.reserve(s.n_alive);
  for (std::size_t j = 0; j < s.n; ++j)
    if (s.alive[j]) out.push_back(per_slot[j]);
  return out;
}

/// Owning subset of query or key rows (AirCache elite rows and keys), viewed as QueryRows/KeyRows.
struct GatheredRows {
  std::vector<float> data;        ///< [heads][count][d]
  std::vector<std::int32_t> pos;  ///< [count]
  int heads = 0, head_dim = 0;
  QueryRows queries() const { return {data.data(), pos.data(), heads, pos.size(), head_dim}; }
  KeyRows keys() const { return {data.data(), pos.data(), heads, pos.size(), head_dim}; }
};

/// Gathers rows idx[0..count) of a [heads][rows][d] block with positions pos[rows] (order kept).
inline GatheredRows gather_rows(const float* src, const std::int32_t* pos, int heads, std::size_t rows, int head_dim,
                                const std::size_t* idx, std::size_t count) {
  GatheredRows g;
  g.heads = heads;
  g.head_dim = head_dim;
  const std::size_t d = static_cast<std::size_t>(head_dim);
  g.data.resize(static_cast<std::size_t>(heads) * count * d);
  g.pos.resize(count);
  for (std::size_t t = 0; t < count; ++t) {
    detail::require(idx[t] < rows, "evict::common::gather_rows", "idx[t]", idx[t], "< rows");
    g.pos[t] = pos[idx[t]];
    for (int h = 0; h < heads; ++h)
      std::copy(src + (static_cast<std::size_t>(h) * rows + idx[t]) * d,
                src + (static_cast<std::size_t>(h) * rows + idx[t] + 1) * d,
                g.data.begin() + static_cast<std::ptrdiff_t>((static_cast<std::size_t>(h) * count + t) * d));
  }
  return g;
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
