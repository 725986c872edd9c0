// SPDX-License-Identifier: Apache-2.0
// SnapKV (eviction spec §13.3) against an independent double-precision scorer: causal softmax of
// every observation-window query (per query head), summed over the window rows, pooled over the
// prefix slots (PyTorch avg_pool1d count_include_pad / max_pool1d semantics, written out here),
// averaged over the GQA group; keep the top (C − W) prefix slots + the window. First on a
// hand-built PrefillContext, then end to end through KVCache (dense fp32, and KIVI-2 where the
// prompt stays full precision until the selection).

#include "kvcompress/policies/evict/snapkv.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "support/cache_test_support.hpp"
#include "support/expect_invalid.hpp"
#include "support/prefill_fixture.hpp"
#include "support/snapkv_oracle.hpp"

namespace {

using namespace kvcompress;
using kvtest::PrefillFixture;

using kvtest::snapkv::Oracle;
using kvtest::snapkv::oracle_keep;

evict::SnapKV::Config make_config(std::size_t C, std::size_t window, int kernel = 5,
                                  evict::common::PoolKind pool = evict::common::PoolKind::kAvg) {
  evict::SnapKV::Config c;
  c.budget.tokens = C;
  c.window = window;
  c.kernel = kernel;
  c.pool = pool;
  return c;
}

void expect_matches_oracle(PrefillFixture& f, const evict::SnapKV::Config& c, const Oracle& o, std::size_t C) {
  auto ctx = f.context();
  evict::SnapKV::on_prefill_end(c, ctx);
  for (int l = 0; l < f.shape.num_layers; ++l)
    for (int h = 0; h < f.shape.num_kv_heads; ++h)
      EXPECT_EQ(f.kept(l, h), oracle_keep(f, l, h, o, C)) << "layer " << l << " kv_head " << h;
}

TEST(SnapKV, MatchesDoubleOracleAvgPoolGqa) {
  PrefillFixture f({2, 4, 2, 64, 512}, true, 96, 8, 11);
  Oracle o;
  o.window = 8;
  expect_matches_oracle(f, make_config(40, 8), o, 40);
}

TEST(SnapKV, MatchesDoubleOracleMaxPoolKernel7) {
  PrefillFixture f({1, 6, 2, 64, 512}, true, 120, 16, 12);
  Oracle o;
  o.window = 16;
  o.kernel = 7;
  o.max_pool = true;
  expect_matches_oracle(f, make_config(50, 16, 7, evict::common::PoolKind::kMax), o, 50);
}

TEST(SnapKV, KernelOneIsRawWindowScores) {
  // Spec oracle: pooling with kernel 1 = raw scores.
  PrefillFixture f({1, 2, 2, 64, 512}, true, 70, 10, 13);
  Oracle o;
  o.window = 10;
  o.kernel = 1;
  expect_matches_oracle(f, make_config(30, 10, 1), o, 30);
}

TEST(SnapKV, WindowKeptAndPerHeadCountIsCapacity) {
  PrefillFixture f({2, 8, 4, 64, 512}, true, 100, 12, 14);
  auto ctx = f.context();
  evict::SnapKV::on_prefill_end(make_config(37, 12), ctx);
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 4; ++h) {
      const auto kept = f.kept(l, h);
      EXPECT_EQ(kept.size(), 37u);
      for (std::int32_t p = 88; p < 100; ++p) EXPECT_TRUE(std::binary_search(kept.begin(), kept.end(), p)) << p;
      EXPECT_TRUE(std::is_sorted(kept.begin(), kept.end()));
    }
}

TEST(SnapKV, SkipsCompressionWhenPromptFitsAndIdentityAtRatioOne) {
  for (int mode = 0; mode < 2; ++mode) {
    PrefillFixture f({1, 4, 2, 64, 512}, true, 50, 8, 15);
    auto c = make_config(50, 8);
    if (mode == 1) c.budget = {1.0, 0};
    auto ctx = f.context();
    evict::SnapKV::on_prefill_end(c, ctx);
    for (int h = 0; h < 2; ++h) EXPECT_EQ(f.kept(0, h).size(), 50u);
  }
}

TEST(SnapKV, RatioBudgetKeepsFloorOfLiveSlots) {
  PrefillFixture f({1, 4, 2, 64, 512}, true, 90, 8, 16);
  auto c = make_config(0, 8);
  c.budget = {0.35, 0};  // floor(0.35·90) = 31
  Oracle o;
  o.window = 8;
  expect_matches_oracle(f, c, o, 31);
}

TEST(SnapKV, PositionsWithGapsAndDeadSlotsAreNeverRenumberedOrRevived) {
  PrefillFixture f({1, 4, 2, 64, 512}, true, 80, 8, 17, /*pos_stride=*/3);
  for (std::size_t j : {5u, 6u, 20u, 41u}) f.alive[j] = 0;  // evicted earlier
  Oracle o;
  o.window = 8;
  expect_matches_oracle(f, make_config(30, 8), o, 30);
  for (int h = 0; h < 2; ++h)
    for (auto p : f.kept(0, h)) EXPECT_EQ(p % 3, 0);
}

TEST(SnapKV, SinksAreProtectedAndCountAgainstTheBudget) {
  PrefillFixture f({1, 4, 2, 64, 512}, true, 80, 8, 18);
  auto c = make_config(30, 8);
  c.sinks = 4;
  Oracle o;
  o.window = 8;
  o.sinks = 4;
  expect_matches_oracle(f, c, o, 30);
}

TEST(SnapKV, IdenticalQueryHeadsInAGroupEqualTheMhaResult) {
  // GQA (n_rep = 3) with the three query heads of each group equal ⇒ same as MHA with one.
  PrefillFixture gqa({1, 6, 2, 64, 512}, true, 90, 8, 19);
  PrefillFixture mha({1, 2, 2, 64, 512}, true, 90, 8, 19);
  mha.k = gqa.k;
  mha.v = gqa.v;
  for (int h = 0; h < 2; ++h)
    for (std::size_t i = 0; i < 8; ++i)
      for (int g = 0; g < 3; ++g)
        std::copy(mha.query(0, h, 0 + 0) + i * 64, mha.query(0, h, 0) + (i + 1) * 64, gqa.query(0, h * 3 + g, i));
  auto c = make_config(33, 8);
  auto a = gqa.context();
  auto b = mha.context();
  evict::SnapKV::on_prefill_end(c, a);
  evict::SnapKV::on_prefill_end(c, b);
  for (int h = 0; h < 2; ++h) EXPECT_EQ(gqa.kept(0, h), mha.kept(0, h));
}

TEST(SnapKV, MonotoneInTheBudget) {
  std::vector<std::int32_t> prev;
  for (std::size_t C : {20u, 30u, 45u, 70u, 100u}) {
    PrefillFixture f({1, 4, 2, 64, 512}, true, 100, 8, 20);
    auto ctx = f.context();
    evict::SnapKV::on_prefill_end(make_config(C, 8), ctx);
    const auto kept = f.kept(0, 1);
    EXPECT_EQ(kept.size(), C);
    for (auto p : prev) EXPECT_TRUE(std::binary_search(kept.begin(), kept.end(), p)) << "C " << C << " lost " << p;
    prev = kept;
  }
}

TEST(SnapKV, DeterministicAndTiesKeepTheLowerPosition) {
  PrefillFixture f({1, 2, 1, 64, 512}, true, 40, 4, 21);
  for (std::size_t j = 0; j < 40; ++j) std::copy(f.key(0, 0, 0), f.key(0, 0, 0) + 64, f.key(0, 0, j));
  auto c = make_config(14, 4, 1);  // identical keys, kernel 1: every prefix score is equal
  auto ctx = f.context();
  evict::SnapKV::on_prefill_end(c, ctx);
  std::vector<std::int32_t> expect;
  for (std::int32_t p = 0; p < 10; ++p) expect.push_back(p);
  for (std::int32_t p = 36; p < 40; ++p) expect.push_back(p);
  EXPECT_EQ(f.kept(0, 0), expect);
  const auto first = f.kept(0, 0);
  auto ctx2 = f.context();
  evict::SnapKV::on_prefill_end(c, ctx2);
  EXPECT_EQ(f.kept(0, 0), first);
}

TEST(SnapKV, BadConfigsNameTheField) {
  const CacheShape s{1, 4, 2, 64, 512};
  auto c = make_config(64, 32);
  c.budget = {0.0, 0};
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "budget.ratio");
  c.budget = {1.5, 0};
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "budget.ratio");
  c = make_config(64, 0);
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "window");
  c = make_config(64, 8, 4);
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "kernel");
  c = make_config(16, 32);
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "budget.tokens");
  c.on_protected_overflow = evict::common::ProtectedOverflow::kKeepAll;
  EXPECT_NO_THROW(c.validate(s));
}

TEST(SnapKV, RatioBelowTheWindowThrowsOrFollowsTheOverflowMode) {
  PrefillFixture f({1, 4, 2, 64, 512}, true, 60, 16, 22);
  auto c = make_config(0, 16);
  c.budget = {0.2, 0};  // floor(0.2·60) = 12 < window 16
  {
    auto ctx = f.context();
    kvtest::expect_invalid_argument([&] { evict::SnapKV::on_prefill_end(c, ctx); }, "budget.ratio");
  }
  c.on_protected_overflow = evict::common::ProtectedOverflow::kKeepAll;
  {
    auto ctx = f.context();
    evict::SnapKV::on_prefill_end(c, ctx);
    std::vector<std::int32_t> window;
    for (std::int32_t p = 44; p < 60; ++p) window.push_back(p);
    EXPECT_EQ(f.kept(0, 0), window);
  }
  c.on_protected_overflow = evict::common::ProtectedOverflow::kTruncate;
  {
    auto ctx = f.context();
    evict::SnapKV::on_prefill_end(c, ctx);
    std::vector<std::int32_t> first;  // mandatory slots truncate oldest first (§1.5 order)
    for (std::int32_t p = 44; p < 56; ++p) first.push_back(p);
    EXPECT_EQ(f.kept(0, 1), first);
  }
}

TEST(SnapKV, MissingQueryWindowIsAnError) {
  PrefillFixture f({1, 4, 2, 64, 512}, true, 60, 8, 23);
  auto ctx = f.context(/*with_queries=*/false);
  kvtest::expect_invalid_argument([&] { evict::SnapKV::on_prefill_end(make_config(20, 8), ctx); },
                                  "queries(layer).rows");
}

TEST(SnapKV, DefaultsAreThePaperCode) {
  const evict::SnapKV::Config c;
  EXPECT_EQ(c.window, 32u);
  EXPECT_EQ(c.kernel, 5);
  EXPECT_EQ(c.pool, evict::common::PoolKind::kAvg);
  EXPECT_EQ(c.budget.tokens, 1024u);
  EXPECT_EQ(c.sinks, 0u);
  EXPECT_EQ(c.on_protected_overflow, evict::common::ProtectedOverflow::kError);
}

TEST(SnapKV, QueryWindowIsTheObservationWindow) { EXPECT_EQ(evict::SnapKV::query_window(make_config(64, 24)), 24u); }

// End to end: prefill by append + attend of every prompt query, end_prefill, compare the kept
// positions with the oracle's selection, then decode steps (SnapKV does not evict while decoding).
template <class Quant>
void end_to_end(double atol, double rtol) {
  using Cache = KVCache<Policy<evict::SnapKV, merge::None, Quant>>;
  const CacheShape s{2, 4, 2, 64, 512};
  typename Cache::Config cfg{};
  cfg.evict = make_config(150, 16);
  Cache c(s, cfg);
  const auto prompt = kvtest::random_prompt(s, 300, 31);
  kvtest::feed_prompt(c, prompt);
  c.end_prefill();
  auto f = kvtest::oracle_view(s, true, prompt, 16);
  Oracle o;
  o.window = 16;
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h) {
      EXPECT_EQ(kvtest::cache_positions(c, l, h), oracle_keep(f, l, h, o, 150)) << "layer " << l << " head " << h;
      EXPECT_EQ(c.size(l, h), 150u);
    }
  const auto kv = kvtest::random_kv(8, 2, 64, 32, false);
  const auto q = kvtest::random_kv(8, 4, 64, 33, false);
  std::vector<float> out(4 * 64);
  for (std::size_t t = 0; t < 8; ++t)
    for (int l = 0; l < 2; ++l) {
      c.append(l, kv.data() + t * 128, kv.data() + t * 128, 1);
      std::vector<float> qt(q.begin() + static_cast<std::ptrdiff_t>(t * 256),
                            q.begin() + static_cast<std::ptrdiff_t>((t + 1) * 256));
      c.attend(l, qt.data(), 1, out.data());
      kvtest::expect_attention_matches(c, l, qt, 1, out, atol, rtol);
      EXPECT_EQ(c.tokens_seen(l), static_cast<std::int64_t>(301 + t));
      const auto pos = kvtest::cache_positions(c, l, 0);
      EXPECT_EQ(pos.size(), 151 + t);
      EXPECT_EQ(pos.back(), static_cast<std::int32_t>(300 + t));  // next position = n_seen
    }
}

TEST(SnapKV, EndToEndObserveOnlyTheWindowLikeAFlashAttentionEngine) {
  // An engine that runs its own attention appends the prompt and hands over just the window.
  using Cache = KVCache<Policy<evict::SnapKV, merge::None, quant::DenseF32>>;
  const CacheShape s{2, 4, 2, 64, 512};
  Cache::Config cfg{};
  cfg.evict = make_config(100, 16);
  Cache c(s, cfg);
  const auto prompt = kvtest::random_prompt(s, 260, 34);
  for (int l = 0; l < 2; ++l) {
    c.append(l, prompt.k[l].data(), prompt.v[l].data(), 260);
    c.observe(l, prompt.q[l].data() + 244 * 4 * 64, 16);
  }
  c.end_prefill();
  auto f = kvtest::oracle_view(s, true, prompt, 16);
  Oracle o;
  o.window = 16;
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h) EXPECT_EQ(kvtest::cache_positions(c, l, h), oracle_keep(f, l, h, o, 100));
}

TEST(SnapKV, EndToEndInfeasibleBudgetThrowsAndLeavesTheCacheUnchanged) {
  using Cache = KVCache<Policy<evict::SnapKV, merge::None, quant::Kivi2>>;
  const CacheShape s{2, 4, 2, 64, 512};
  Cache::Config cfg{};
  cfg.evict = make_config(0, 16);
  cfg.evict.budget = {0.1, 0};  // floor(0.1·100) = 10 < window 16
  Cache c(s, cfg);
  kvtest::feed_prompt(c, kvtest::random_prompt(s, 100, 35));
  const auto before = kvtest::snapshot(c);
  kvtest::expect_invalid_argument([&] { c.end_prefill(); }, "budget.ratio");
  EXPECT_TRUE(kvtest::snapshot(c) == before);
}

TEST(SnapKV, EndToEndDenseCacheKeepsTheOracleSelection) { end_to_end<quant::DenseF32>(1e-5, 1e-5); }

TEST(SnapKV, EndToEndWithKivi2SelectsOnFullPrecisionPrompt) { end_to_end<quant::Kivi2>(1e-4, 1e-4); }

}  // namespace
