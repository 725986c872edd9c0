// SPDX-License-Identifier: Apache-2.0
// Expected Attention (eviction spec §13.6, kvpress ExpectedAttentionPress) against an independent
// double-precision oracle that starts from the *pre-RoPE* queries (the tests apply RoPE
// themselves, with their own rotation code, before handing post-RoPE rows to the policy):
// mean and population covariance over the rows at positions ≥ n_sink, R̄ from the mean cos/sin
// of the next n_future positions as a dense matrix, μ̄ = R̄μ, Σ̄ = R̄ΣR̄ᵀ, z = s·kᵀμ̄ + s²·kᵀΣ̄k/2,
// softmax over the non-sink keys, mean over the GQA group, × (a + ε)·‖v‖, sinks kept.
// Spec oracles: with Σ = 0 and identical keys the scores are ∝ ‖v‖; permutation-equivariant
// over slots.

#include "kvcompress/policies/evict/expected_attention.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "support/cache_test_support.hpp"
#include "support/expect_invalid.hpp"
#include "support/prefill_fixture.hpp"

namespace {

using namespace kvcompress;
using kvtest::PrefillFixture;
using Rope = quant::common::RopeParams;

// The test's own RoPE in double: pairs (i, i + d/2) or (2i, 2i + 1), θ_i = base^(−2i/d).
void rotate(std::vector<double>& x, double p, double base, bool interleaved) {
  const std::size_t d = x.size(), half = d / 2;
  for (std::size_t i = 0; i < half; ++i) {
    const double th = p * std::pow(base, -2.0 * double(i) / double(d));
    const std::size_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
    const double xa = x[a], xb = x[b];
    x[a] = xa * std::cos(th) - xb * std::sin(th);
    x[b] = xa * std::sin(th) + xb * std::cos(th);
  }
}

struct Params {
  std::size_t n_sink = 4, n_future = 512;
  bool cov = true, vnorm = true, interleaved = false;
  double eps = 0.0, base = 10000.0;
};

evict::ExpectedAttention::Config make_config(double ratio, const Params& p, std::size_t window, int d = 64) {
  evict::ExpectedAttention::Config c;
  c.budget = {ratio, 0};
  c.n_sink = p.n_sink;
  c.n_future = p.n_future;
  c.use_covariance = p.cov;
  c.use_vnorm = p.vnorm;
  c.epsilon = p.eps;
  c.query_window = window;
  c.rope.head_dim = static_cast<std::size_t>(d);
  c.rope.base = p.base;
  c.rope.layout = p.interleaved ? quant::common::RopeLayout::kInterleaved : quant::common::RopeLayout::kRotateHalf;
  return c;
}

// Pre-RoPE window queries [L][Hq][rows][d] in double; writes the post-RoPE rows into f.
struct PreRope {
  std::vector<std::vector<double>> q;
};

PreRope install_window(PrefillFixture& f, const Params& p) {
  PreRope pre;
  const std::size_t d = f.d();
  for (int l = 0; l < f.shape.num_layers; ++l) {
    std::vector<double> ql(static_cast<std::size_t>(f.shape.num_q_heads) * f.rows * d);
    for (int g = 0; g < f.shape.num_q_heads; ++g)
      for (std::size_t i = 0; i < f.rows; ++i) {
        std::vector<double> x(f.query(l, g, i), f.query(l, g, i) + d);  // random data = pre-RoPE
        std::copy(x.begin(), x.end(), ql.begin() + static_cast<std::ptrdiff_t>((g * f.rows + i) * d));
        rotate(x, f.qpos[i], p.base, p.interleaved);
        for (std::size_t c = 0; c < d; ++c) f.query(l, g, i)[c] = static_cast<float>(x[c]);
      }
    pre.q.push_back(ql);
  }
  return pre;
}

// Oracle scores of the live slots of (l, h) (sinks: 0).
std::vector<double> oracle_scores(PrefillFixture& f, const PreRope& pre, int l, int h, const Params& p) {
  const std::size_t d = f.d();
  const int rep = f.rep();
  const auto live = f.live();
  const std::size_t n = live.size(), sinks = std::min(p.n_sink, n);
  const double s = f.logit_scale();
  // R̄ (dense).
  std::vector<double> R(d * d, 0.0);
  const double p0 = f.pos.back() + 1;
  for (std::size_t i = 0; i < d / 2; ++i) {
    double cs = 0, sn = 0;
    for (std::size_t t = 0; t < p.n_future; ++t) {
      const double th = (p0 + double(t)) * std::pow(p.base, -2.0 * double(i) / double(d));
      cs += std::cos(th) / double(p.n_future);
      sn += std::sin(th) / double(p.n_future);
    }
    const std::size_t a = p.interleaved ? 2 * i : i, b = p.interleaved ? 2 * i + 1 : i + d / 2;
    R[a * d + a] = cs, R[a * d + b] = -sn, R[b * d + a] = sn, R[b * d + b] = cs;
  }
  std::vector<double> out(n, 0.0), group(n, 0.0);
  for (int g = h * rep; g < (h + 1) * rep; ++g) {
    std::vector<std::size_t> rows;
    for (std::size_t i = 0; i < f.rows; ++i)
      if (f.qpos[i] >= static_cast<std::int32_t>(p.n_sink)) rows.push_back(i);
    std::vector<double> mu(d, 0.0), cov(d * d, 0.0);
    auto qv = [&](std::size_t i, std::size_t c) { return pre.q[l][(g * f.rows + i) * d + c]; };
    for (auto i : rows)
      for (std::size_t c = 0; c < d; ++c) mu[c] += qv(i, c) / double(rows.size());
    if (p.cov)
      for (auto i : rows)
        for (std::size_t a = 0; a < d; ++a)
          for (std::size_t b = 0; b < d; ++b)
            cov[a * d + b] += (qv(i, a) - mu[a]) * (qv(i, b) - mu[b]) / double(rows.size());
    std::vector<double> mb(d, 0.0), RC(d * d, 0.0), cb(d * d, 0.0);
    for (std::size_t a = 0; a < d; ++a)
      for (std::size_t t = 0; t < d; ++t) mb[a] += R[a * d + t] * mu[t];
    for (std::size_t a = 0; a < d; ++a)
      for (std::size_t b = 0; b < d; ++b)
        for (std::size_t t = 0; t < d; ++t) RC[a * d + b] += R[a * d + t] * cov[t * d + b];
    for (std::size_t a = 0; a < d; ++a)
      for (std::size_t b = 0; b < d; ++b)
        for (std::size_t t = 0; t < d; ++t) cb[a * d + b] += RC[a * d + t] * R[b * d + t];
    std::vector<double> z(n, 0.0);
    double zmax = -HUGE_VAL;
    for (std::size_t j = sinks; j < n; ++j) {
      const float* k = f.key(l, h, live[j]);
      double lin = 0, quad = 0;
      for (std::size_t a = 0; a < d; ++a) {
        lin += k[a] * mb[a];
        for (std::size_t b = 0; b < d; ++b) quad += k[a] * cb[a * d + b] * k[b];
      }
      z[j] = s * lin + s * s * quad / 2;
      zmax = std::max(zmax, z[j]);
    }
    double sum = 0;
    for (std::size_t j = sinks; j < n; ++j) sum += std::exp(z[j] - zmax);
    for (std::size_t j = sinks; j < n; ++j) group[j] += std::exp(z[j] - zmax) / sum / rep;
  }
  for (std::size_t j = sinks; j < n; ++j) {
    double vn = 0;
    for (std::size_t c = 0; c < d; ++c) vn += double(f.value(l, h, live[j])[c]) * f.value(l, h, live[j])[c];
    out[j] = p.vnorm ? (group[j] + p.eps) * std::sqrt(vn) : group[j];
  }
  return out;
}

std::vector<std::int32_t> oracle_keep(PrefillFixture& f, const PreRope& pre, int l, int h, const Params& p,
                                      std::size_t k) {
  const auto live = f.live();
  const auto score = oracle_scores(f, pre, l, h, p);
  std::vector<std::size_t> cand;
  for (std::size_t t = p.n_sink; t < live.size(); ++t) cand.push_back(t);
  auto top = kvtest::top_indices(score, cand, k - p.n_sink);
  for (std::size_t t = 0; t < p.n_sink; ++t) top.push_back(t);
  std::sort(top.begin(), top.end());
  std::vector<std::int32_t> out;
  for (auto t : top) out.push_back(f.pos[live[t]]);
  return out;
}

void expect_matches_oracle(const CacheShape& s, std::size_t n, std::size_t rows, double ratio, const Params& p,
                           std::uint32_t seed) {
  PrefillFixture f(s, true, n, rows, seed);
  const auto pre = install_window(f, p);
  auto ctx = f.context();
  evict::ExpectedAttention::on_prefill_end(make_config(ratio, p, rows, s.head_dim), ctx);
  const std::size_t k = static_cast<std::size_t>(std::floor(ratio * double(n)));
  for (int l = 0; l < s.num_layers; ++l)
    for (int h = 0; h < s.num_kv_heads; ++h) EXPECT_EQ(f.kept(l, h), oracle_keep(f, pre, l, h, p, k)) << l << "/" << h;
}

TEST(ExpectedAttention, MatchesDoubleOracleWithCovarianceAndValueNorm) {
  expect_matches_oracle({2, 4, 2, 64, 512}, 90, 24, 0.4, Params{}, 71);
}

TEST(ExpectedAttention, MatchesDoubleOracleMeanOnlyNoVnorm) {
  Params p;
  p.cov = false;
  p.vnorm = false;
  p.n_future = 64;
  expect_matches_oracle({1, 4, 2, 64, 512}, 70, 16, 0.3, p, 72);
}

TEST(ExpectedAttention, MatchesDoubleOracleInterleavedRopeEpsilonNoSinks) {
  Params p;
  p.interleaved = true;
  p.eps = 0.05;
  p.n_sink = 0;
  p.base = 500000.0;
  expect_matches_oracle({1, 6, 2, 64, 512}, 64, 12, 0.5, p, 73);
}

TEST(ExpectedAttention, ZeroCovarianceAndIdenticalKeysScoreByValueNorm) {
  // Spec oracle: Σ = 0 and identical keys ⇒ uniform predicted attention ⇒ scores ∝ ‖v‖.
  PrefillFixture f({1, 4, 2, 64, 512}, true, 60, 8, 74);
  Params p;
  p.cov = false;
  for (int h = 0; h < 2; ++h)
    for (std::size_t j = 0; j < 60; ++j) std::copy(f.key(0, h, 0), f.key(0, h, 0) + 64, f.key(0, h, j));
  install_window(f, p);
  auto ctx = f.context();
  evict::ExpectedAttention::on_prefill_end(make_config(0.5, p, 8), ctx);
  for (int h = 0; h < 2; ++h) {
    std::vector<double> vn(60, 0.0);
    for (std::size_t j = 4; j < 60; ++j)
      for (std::size_t c = 0; c < 64; ++c) vn[j] += double(f.value(0, h, j)[c]) * f.value(0, h, j)[c];
    std::vector<std::size_t> cand(56);
    std::iota(cand.begin(), cand.end(), std::size_t{4});
    auto top = kvtest::top_indices(vn, cand, 26);
    std::vector<std::int32_t> expect{0, 1, 2, 3};
    for (auto t : top) expect.push_back(static_cast<std::int32_t>(t));
    std::sort(expect.begin(), expect.end());
    EXPECT_EQ(f.kept(0, h), expect);
  }
}

TEST(ExpectedAttention, PermutationEquivariantOverSlots) {
  Params p;
  PrefillFixture a({1, 4, 2, 64, 512}, true, 50, 10, 75);
  PrefillFixture b = a;
  // Reverse the K/V of the non-sink slots before the window in b (positions stay).
  for (int h = 0; h < 2; ++h)
    for (std::size_t j = 4; j < 40; ++j) {
      std::copy(a.key(0, h, j), a.key(0, h, j) + 64, b.key(0, h, 43 - j));
      std::copy(a.value(0, h, j), a.value(0, h, j) + 64, b.value(0, h, 43 - j));
    }
  install_window(a, p);
  install_window(b, p);
  auto ca = a.context();
  auto cb = b.context();
  evict::ExpectedAttention::on_prefill_end(make_config(0.5, p, 10), ca);
  evict::ExpectedAttention::on_prefill_end(make_config(0.5, p, 10), cb);
  for (int h = 0; h < 2; ++h) {
    std::vector<std::int32_t> mapped;
    for (auto q : a.kept(0, h)) mapped.push_back(q >= 4 && q < 40 ? 43 - q : q);
    std::sort(mapped.begin(), mapped.end());
    EXPECT_EQ(b.kept(0, h), mapped);
  }
}

TEST(ExpectedAttention, IdentityAtRatioOneAndSinksKept) {
  PrefillFixture f({1, 4, 2, 64, 512}, true, 40, 8, 76);
  Params p;
  install_window(f, p);
  {
    auto ctx = f.context();
    evict::ExpectedAttention::on_prefill_end(make_config(1.0, p, 8), ctx);
    EXPECT_EQ(f.kept(0, 0).size(), 40u);
  }
  auto ctx = f.context();
  evict::ExpectedAttention::on_prefill_end(make_config(0.2, p, 8), ctx);
  for (int h = 0; h < 2; ++h) {
    const auto kept = f.kept(0, h);
    EXPECT_EQ(kept.size(), 8u);
    EXPECT_EQ((std::vector<std::int32_t>(kept.begin(), kept.begin() + 4)), (std::vector<std::int32_t>{0, 1, 2, 3}));
  }
}

TEST(ExpectedAttention, IdenticalQueryHeadsInAGroupEqualTheMhaResult) {
  Params p;
  PrefillFixture gqa({1, 6, 2, 64, 512}, true, 60, 12, 81);
  PrefillFixture mha({1, 2, 2, 64, 512}, true, 60, 12, 81);
  mha.k = gqa.k;
  mha.v = gqa.v;
  for (int g = 0; g < 6; ++g)
    for (std::size_t i = 0; i < 12; ++i)
      std::copy(mha.query(0, g / 3, i), mha.query(0, g / 3, i) + 64, gqa.query(0, g, i));
  install_window(gqa, p);
  install_window(mha, p);
  auto a = gqa.context();
  auto b = mha.context();
  evict::ExpectedAttention::on_prefill_end(make_config(0.4, p, 12), a);
  evict::ExpectedAttention::on_prefill_end(make_config(0.4, p, 12), b);
  for (int h = 0; h < 2; ++h) EXPECT_EQ(gqa.kept(0, h), mha.kept(0, h));
}

TEST(ExpectedAttention, MonotoneInTheBudget) {
  Params p;
  std::vector<std::int32_t> prev;
  for (double r : {0.15, 0.3, 0.5, 0.75, 1.0}) {
    PrefillFixture f({1, 4, 2, 64, 512}, true, 64, 8, 82);
    install_window(f, p);
    auto ctx = f.context();
    evict::ExpectedAttention::on_prefill_end(make_config(r, p, 8), ctx);
    const auto kept = f.kept(0, 1);
    EXPECT_EQ(kept.size(), static_cast<std::size_t>(std::floor(r * 64)));
    for (auto q : prev) EXPECT_TRUE(std::binary_search(kept.begin(), kept.end(), q)) << "r " << r << " lost " << q;
    prev = kept;
  }
}

TEST(ExpectedAttention, DefaultsAreKvpress) {
  const evict::ExpectedAttention::Config c;
  EXPECT_EQ(c.n_sink, 4u);
  EXPECT_EQ(c.n_future, 512u);
  EXPECT_TRUE(c.use_covariance);
  EXPECT_TRUE(c.use_vnorm);
  EXPECT_EQ(c.epsilon, 0.0);
}

TEST(ExpectedAttention, BadConfigsNameTheField) {
  const CacheShape s{1, 4, 2, 64, 512};
  Params p;
  kvtest::expect_invalid_argument([&] { make_config(0.0, p, 8).validate(s); }, "budget.ratio");
  kvtest::expect_invalid_argument([&] { make_config(1.2, p, 8).validate(s); }, "budget.ratio");
  kvtest::expect_invalid_argument([&] { make_config(0.5, p, 0).validate(s); }, "query_window");
  kvtest::expect_invalid_argument([&] { make_config(0.5, p, 8, 128).validate(s); }, "rope.head_dim");
  auto c = make_config(0.5, p, 8);
  c.n_future = 0;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "n_future");
  c = make_config(0.5, p, 8);
  c.epsilon = -1.0;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "epsilon");
  c = make_config(0.5, p, 8);
  c.rope.base = 1.0;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "rope.base");
  c = make_config(1.0, p, 8);
  c.budget.tokens = 2;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "budget.tokens");
  EXPECT_NO_THROW(make_config(0.5, p, 8).validate(s));
  EXPECT_EQ(evict::ExpectedAttention::query_window(make_config(0.5, p, 33)), 33u);
}

TEST(ExpectedAttention, NoQueryPastTheSinksIsAnError) {
  PrefillFixture f({1, 4, 2, 64, 512}, true, 6, 3, 77);  // window rows at positions 3, 4, 5
  Params p;
  p.n_sink = 5;
  auto c = make_config(0.5, p, 3);
  c.budget = {1.0, 5};
  f.qpos = {2, 3, 4};
  auto ctx = f.context();
  kvtest::expect_invalid_argument([&] { evict::ExpectedAttention::on_prefill_end(c, ctx); }, "queries(layer).rows");
}

// End to end: the "engine" applies RoPE to q and k (test code) before handing them over; the
// policy un-rotates the query window with Config::rope.
template <class Quant>
void end_to_end() {
  using Cache = KVCache<Policy<evict::ExpectedAttention, merge::None, Quant>>;
  const CacheShape s{2, 4, 2, 64, 512};
  Params p;
  p.n_future = 128;
  const std::size_t m = 150, W = 150;  // window = whole prompt: kvpress's statistics exactly
  typename Cache::Config cfg{};
  cfg.evict = make_config(0.3, p, W);
  Cache c(s, cfg);
  auto prompt = kvtest::random_prompt(s, m, 78);
  const auto pre_q = prompt.q;
  auto f16 = [](double x) { return to_float(half{f32_to_f16_bits(static_cast<float>(x))}); };
  for (int l = 0; l < 2; ++l)
    for (std::size_t t = 0; t < m; ++t) {
      for (int h = 0; h < 2; ++h) {
        float* k = prompt.k[l].data() + (t * 2 + h) * 64;
        std::vector<double> x(k, k + 64);
        rotate(x, double(t), p.base, false);
        for (int i = 0; i < 64; ++i) k[i] = f16(x[i]);
      }
      for (int g = 0; g < 4; ++g) {
        float* q = prompt.q[l].data() + (t * 4 + g) * 64;
        std::vector<double> x(q, q + 64);
        rotate(x, double(t), p.base, false);
        for (int i = 0; i < 64; ++i) q[i] = static_cast<float>(x[i]);
      }
    }
  kvtest::feed_prompt(c, prompt);
  c.end_prefill();
  kvtest::Prompt pre = prompt;
  pre.q = pre_q;
  auto f = kvtest::oracle_view(s, true, pre, W);
  PreRope pr;
  for (int l = 0; l < 2; ++l) pr.q.emplace_back(f.q[l].begin(), f.q[l].end());
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h)
      EXPECT_EQ(kvtest::cache_positions(c, l, h), oracle_keep(f, pr, l, h, p, 45)) << l << "/" << h;
  const auto kv = kvtest::random_kv(1, 2, 64, 79, false);
  const auto q = kvtest::random_kv(1, 4, 64, 80, false);
  std::vector<float> out(4 * 64);
  for (int l = 0; l < 2; ++l) {
    c.append(l, kv.data(), kv.data(), 1);
    c.attend(l, q.data(), 1, out.data());
    kvtest::expect_attention_matches(c, l, q, 1, out, 1e-4, 1e-4);
    EXPECT_EQ(c.size(l, 1), 46u);
  }
}

TEST(ExpectedAttention, EndToEndDenseCache) { end_to_end<quant::DenseF32>(); }
TEST(ExpectedAttention, EndToEndKivi2) { end_to_end<quant::Kivi2>(); }

}  // namespace
