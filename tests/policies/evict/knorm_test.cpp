// SPDX-License-Identifier: Apache-2.0
// KNorm (eviction spec §13.7) against an independent double-precision oracle: per KV head the
// kept set is the floor(r·n) live keys with the smallest L2 norm (spec oracle), ties to the lower
// position, sinks (optional) protected. Hand-built PrefillContext first, then end to end
// through KVCache (dense fp32 and KIVI-2).

#include "kvcompress/policies/evict/knorm.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "support/cache_test_support.hpp"
#include "support/expect_invalid.hpp"
#include "support/prefill_fixture.hpp"

namespace {

using namespace kvcompress;
using kvtest::PrefillFixture;

evict::KNorm::Config make_config(double ratio, std::size_t tokens = 0, std::size_t sinks = 0) {
  evict::KNorm::Config c;
  c.budget = {ratio, tokens};
  c.sinks = sinks;
  return c;
}

std::vector<std::int32_t> oracle_keep(PrefillFixture& f, int l, int h, std::size_t k, std::size_t sinks = 0) {
  const auto live = f.live();
  std::vector<double> score(live.size());
  for (std::size_t t = 0; t < live.size(); ++t) {
    double ss = 0;
    for (std::size_t c = 0; c < f.d(); ++c) ss += double(f.key(l, h, live[t])[c]) * f.key(l, h, live[t])[c];
    score[t] = -std::sqrt(ss);
  }
  std::vector<std::size_t> cand;
  for (std::size_t t = sinks; t < live.size(); ++t) cand.push_back(t);
  auto top = kvtest::top_indices(score, cand, k - sinks);
  for (std::size_t t = 0; t < sinks; ++t) top.push_back(t);
  std::sort(top.begin(), top.end());
  std::vector<std::int32_t> out;
  for (auto t : top) out.push_back(f.pos[live[t]]);
  return out;
}

TEST(KNorm, KeepsTheSmallestNormKeysPerHead) {
  PrefillFixture f({2, 4, 2, 64, 512}, true, 101, 1, 61);
  for (std::size_t j = 0; j < 101; j += 3)  // spread the norms
    for (std::size_t c = 0; c < 64; ++c) f.key(0, 1, j)[c] *= 0.5f;
  auto ctx = f.context(false);
  evict::KNorm::on_prefill_end(make_config(0.3), ctx);  // floor(30.3) = 30
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h) {
      EXPECT_EQ(f.kept(l, h).size(), 30u);
      EXPECT_EQ(f.kept(l, h), oracle_keep(f, l, h, 30)) << l << "/" << h;
    }
}

TEST(KNorm, AbsoluteBudgetSinksAndDeadSlots) {
  PrefillFixture f({1, 4, 2, 64, 512}, true, 80, 1, 62, /*pos_stride=*/2);
  f.alive[3] = f.alive[40] = 0;
  auto ctx = f.context(false);
  evict::KNorm::on_prefill_end(make_config(1.0, 25, 4), ctx);
  for (int h = 0; h < 2; ++h) {
    EXPECT_EQ(f.kept(0, h), oracle_keep(f, 0, h, 25, 4));
    const auto kept = f.kept(0, h);
    EXPECT_EQ((std::vector<std::int32_t>(kept.begin(), kept.begin() + 4)), (std::vector<std::int32_t>{0, 2, 4, 8}));
  }
}

TEST(KNorm, IdentityAtRatioOne) {
  PrefillFixture f({1, 4, 2, 64, 512}, true, 50, 1, 63);
  auto ctx = f.context(false);
  evict::KNorm::on_prefill_end(make_config(1.0), ctx);
  for (int h = 0; h < 2; ++h) EXPECT_EQ(f.kept(0, h).size(), 50u);
}

TEST(KNorm, TiesKeepTheLowerPositionAndAreDeterministic) {
  PrefillFixture f({1, 2, 1, 64, 512}, true, 20, 1, 64);
  for (std::size_t j = 0; j < 20; ++j)  // same norm, different directions: a permuted copy
    for (std::size_t c = 0; c < 64; ++c) f.key(0, 0, j)[c] = f.key(0, 0, 0)[(c + j) % 64];
  auto ctx = f.context(false);
  evict::KNorm::on_prefill_end(make_config(0.25), ctx);
  EXPECT_EQ(f.kept(0, 0), (std::vector<std::int32_t>{0, 1, 2, 3, 4}));
}

TEST(KNorm, MonotoneInTheBudget) {
  std::vector<std::int32_t> prev;
  for (double r : {0.1, 0.25, 0.5, 0.8, 1.0}) {
    PrefillFixture f({1, 2, 1, 64, 512}, true, 64, 1, 65);
    auto ctx = f.context(false);
    evict::KNorm::on_prefill_end(make_config(r, 0, 2), ctx);
    const auto kept = f.kept(0, 0);
    for (auto p : prev) EXPECT_TRUE(std::binary_search(kept.begin(), kept.end(), p));
    prev = kept;
  }
}

TEST(KNorm, BadConfigsAndInfeasibleBudgets) {
  const CacheShape s{1, 4, 2, 64, 512};
  kvtest::expect_invalid_argument([&] { make_config(0.0).validate(s); }, "budget.ratio");
  kvtest::expect_invalid_argument([&] { make_config(-0.5).validate(s); }, "budget.ratio");
  kvtest::expect_invalid_argument([&] { make_config(2.0).validate(s); }, "budget.ratio");
  kvtest::expect_invalid_argument([&] { make_config(1.0, 3, 4).validate(s); }, "budget.tokens");
  PrefillFixture f({1, 4, 2, 64, 512}, true, 40, 1, 66);
  {
    auto ctx = f.context(false);  // floor(0.05·40) = 2 < 4 sinks
    kvtest::expect_invalid_argument([&] { evict::KNorm::on_prefill_end(make_config(0.05, 0, 4), ctx); },
                                    "budget.ratio");
  }
  auto c = make_config(0.05, 0, 4);
  c.on_protected_overflow = evict::common::ProtectedOverflow::kTruncate;
  auto ctx = f.context(false);
  evict::KNorm::on_prefill_end(c, ctx);
  EXPECT_EQ(f.kept(0, 0), (std::vector<std::int32_t>{0, 1}));  // first sinks first
}

template <class Quant>
void end_to_end() {
  using Cache = KVCache<Policy<evict::KNorm, merge::None, Quant>>;
  const CacheShape s{2, 4, 2, 64, 512};
  typename Cache::Config cfg{};
  cfg.evict = make_config(0.4);
  Cache c(s, cfg);
  const auto prompt = kvtest::random_prompt(s, 200, 67);
  kvtest::feed_prompt(c, prompt);
  c.end_prefill();
  auto f = kvtest::oracle_view(s, true, prompt, 1);
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h) EXPECT_EQ(kvtest::cache_positions(c, l, h), oracle_keep(f, l, h, 80)) << l << "/" << h;
  const auto kv = kvtest::random_kv(1, 2, 64, 68, false);
  const auto q = kvtest::random_kv(1, 4, 64, 69, false);
  std::vector<float> out(4 * 64);
  for (int l = 0; l < 2; ++l) {
    c.append(l, kv.data(), kv.data(), 1);
    c.attend(l, q.data(), 1, out.data());
    kvtest::expect_attention_matches(c, l, q, 1, out, 1e-4, 1e-4);
    EXPECT_EQ(kvtest::cache_positions(c, l, 0).back(), 200);
  }
}

TEST(KNorm, EndToEndDenseCache) { end_to_end<quant::DenseF32>(); }
TEST(KNorm, EndToEndKivi2) { end_to_end<quant::Kivi2>(); }

}  // namespace
