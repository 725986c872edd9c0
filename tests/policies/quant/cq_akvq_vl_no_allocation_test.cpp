// SPDX-License-Identifier: Apache-2.0
// CQ (pre-RoPE keys, fp16 window) and AKVQ-VL (PSA pivots, TSA) decode without heap allocation
// once the cache is built and prefilled, alone and under StreamingLLM.

#include "support/allocation_counter.hpp"

namespace {

using namespace kvcompress;
const CacheShape kShape{2, 4, 2, 64, 1024};

TEST(CqAkvqVlNoAllocation, CqPreRopeWindowAndStreamingLlm) {
  using Cache = KVCache<Policy<evict::StreamingLLM, merge::None, quant::Cq4c8b>>;
  Cache::Config cfg;
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 200;
  cfg.quant.codebooks = quant::cq_gaussian_codebooks(64, 4, 8);
  cfg.quant.recent_window = 32;
  cfg.quant.rope.head_dim = 64;
  kvtest::expect_decode_without_allocation<Cache>(kShape, cfg, nullptr, 300, 300);
}

TEST(CqAkvqVlNoAllocation, AkvqVlPaperLayerTableAndStreamingLlm) {
  using Cache = KVCache<Policy<evict::StreamingLLM, merge::None, quant::AkvqVl>>;
  Cache::Config cfg;
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 200;
  cfg.quant.tsa_layers = 1;  // layer 0 TSA, layer 1 PSA with pivots
  kvtest::expect_decode_without_allocation<Cache>(kShape, cfg, nullptr, 300, 300);
}

TEST(CqAkvqVlNoAllocation, AkvqVlTsaNoEviction) {
  using Cache = KVCache<Policy<evict::None, merge::None, quant::AkvqVl>>;
  Cache::Config cfg;
  cfg.quant.layer_types.assign(2, quant::AkvqLayerType::kTsa);
  kvtest::expect_decode_without_allocation<Cache>(kShape, cfg, nullptr, 300, 300);
}

}  // namespace
