// SPDX-License-Identifier: Apache-2.0
// KVQuant decodes without heap allocation once the cache is built and prefilled (calibrated and
// data-free, alone and under H2O / StreamingLLM eviction).

#include "support/allocation_counter.hpp"

namespace {

using namespace kvcompress;
using Q = quant::KVQuant<3>;

template <class Evict>
void decode_without_allocation(typename Evict::Config ecfg, bool calibrated) {
  const CacheShape s{1, 4, 1, 128, 512};
  Q::Config qc;
  qc.rope.head_dim = 128;
  if (calibrated) {
    auto c = std::make_shared<quant::KVQuantCalibration>();
    c->bits = 3;
    c->num_layers = c->num_kv_heads = 1;
    c->head_dim = 128;
    c->lut_k = quant::nf_lut(3);
    c->lut_v = c->lut_k;
    c->t_lo.assign(128, -2.0f);
    c->t_hi.assign(128, 2.5f);
    qc.calibration = c;
  }
  using P = Policy<Evict, merge::None, Q>;
  kvtest::expect_decode_without_allocation<KVCache<P>>(s, typename P::Config{ecfg, {}, qc}, nullptr, 200, 300);
}

TEST(KVQuantNoAllocation, Decode) {
  decode_without_allocation<evict::None>({}, true);
  decode_without_allocation<evict::None>({}, false);
  evict::H2O::Config h;
  h.heavy_budget = 60;
  h.recent_budget = 60;
  decode_without_allocation<evict::H2O>(h, true);
  evict::StreamingLLM::Config st;
  st.sink_tokens = 4;
  st.window_tokens = 100;
  decode_without_allocation<evict::StreamingLLM>(st, false);
}

}  // namespace
