// SPDX-License-Identifier: Apache-2.0
// Real-model quality, with kvc_eval's protocol (teacher_forcing.hpp) at context 512 on the
// license-text evaluation corpus: dense perplexity is finite and where it was measured, and the
// KIVI caches stay within stated margins of the dense fp32 reference.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "real_model.hpp"
#include "policy_table.hpp"
#include "teacher_forcing.hpp"

namespace {

namespace kvc = kvcompress;
constexpr int kContext = 512;

// Measured (x86-64 AVX-512, g++ 12, Release): PPL 16.09 over the 256 decoded predictions, for
// dense fp32 and fp16 alike. The band allows other compilers/ISAs and distributions whose
// license files differ in whitespace; a wrong RoPE convention gives ~150, a broken cache > 100.
TEST(Quality, DensePerplexityIsPlausible) {
  KVC_REQUIRE_MODEL();
  const auto& m = *kvtest::real_model();
  kvc::KVCache<kvc::Policy<>> dense(m.model.cache_shape(kContext));
  const auto stats = kvllama::teacher_forced_quality<kvc::KVCache<kvc::Policy<>>>(
      m.model, m.eval_tokens, kContext, 256, {&dense});
  const double ppl = stats[0].perplexity();
  ASSERT_TRUE(std::isfinite(ppl));
  EXPECT_GT(ppl, 15.0);
  EXPECT_LT(ppl, 17.5);
}

// Measured against dense fp32 (library of 2026-11-29; successive KIVI kernel versions moved the
// KIVI numbers within the ranges given):
//   dense fp16: mean KL ≈ 1.7e-6, PPL ratio 1.000;
//   KIVI-4 (G32 R128): mean KL ≈ 5.7e-3–6.8e-3, PPL ratio ≈ 1.00 ± 0.01, top-1 ≈ 95 %;
//   KIVI-2 (G32 R128): mean KL ≈ 0.21–0.35, PPL ratio ≈ 1.17–1.33, top-1 ≈ 65–74 %.
// KIVI-2 is far from lossless on this 135M model (head_dim 64, 3 KV heads); the margins below
// catch regressions, not the method's inherent loss.
TEST(Quality, KiviStaysWithinMarginOfDense) {
  KVC_REQUIRE_MODEL();
  const auto& m = *kvtest::real_model();
  const kvc::CacheShape shape = m.model.cache_shape(kContext);
  using Ref = kvc::Policy<kvc::evict::None, kvc::merge::None, kvc::quant::DenseF32>;
  kvllama::PolicyCache<Ref> ref(shape, {});
  kvllama::PolicyCache<kvc::Policy<>> f16(shape, {});
  kvllama::PolicyCache<kvc::Policy<kvc::evict::None, kvc::merge::None, kvc::quant::Kivi<4, 4, 32, 128>>> kivi4(shape, {});
  kvllama::PolicyCache<kvc::Policy<kvc::evict::None, kvc::merge::None, kvc::quant::Kivi<2, 2, 32, 128>>> kivi2(shape, {});
  const auto s = kvllama::teacher_forced_quality<kvllama::AnyCache>(m.model, m.eval_tokens, kContext, 256,
                                                                    {&ref, &f16, &kivi4, &kivi2});
  const double ppl = s[0].perplexity();
  EXPECT_LT(s[1].mean_kl(), 1e-4);
  EXPECT_NEAR(s[1].perplexity() / ppl, 1.0, 1e-3);
  EXPECT_LT(s[2].mean_kl(), 0.015);
  EXPECT_NEAR(s[2].perplexity() / ppl, 1.0, 0.03);
  EXPECT_GT(s[2].top1_agreement(), 0.90);
  EXPECT_LT(s[3].mean_kl(), 0.45);
  EXPECT_LT(s[3].perplexity() / ppl, 1.45);
  EXPECT_GT(s[3].top1_agreement(), 0.55);
}

}  // namespace
