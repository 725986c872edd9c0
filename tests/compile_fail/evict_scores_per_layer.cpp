// SPDX-License-Identifier: Apache-2.0
// Attention scores are kept per KV head: a per-layer policy that asks for them is rejected.
// KVCOMPRESS_EXPECT_ERROR: must set kPerHead = true
#include "kvcompress/kvcompress.hpp"

namespace {
struct LayerScores : kvcompress::evict::H2O {
#ifdef KVCOMPRESS_SHOULD_FAIL
  static constexpr bool kPerHead = false;
#endif
};
}  // namespace

std::size_t evict_scores_per_layer_probe() { return sizeof(kvcompress::KVCache<kvcompress::Policy<LayerScores>>); }
