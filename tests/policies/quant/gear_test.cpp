// SPDX-License-Identifier: Apache-2.0
// GEAR in the cache (quantization.md §7): the §7 test oracles (full-rank exactness, rank-1
// recovery, orthonormal Q, exact sparse entries with the [rec] per-vector count, error
// monotonicity), the buffer-n_b streaming rule, fused attention against the double-precision
// oracle over what the store holds, exact memory accounting, bad configs, truncate and
// composition with H2O / StreamingLLM. Independent references: select_extremes (outliers.hpp),
// kivi_reference.hpp, double-precision re-implementations below.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "kvcompress/policies/quant/common/extremes_inplace.hpp"
#include "kvcompress/policies/quant/common/outliers.hpp"
#include "kvcompress/policies/quant/common/power_iteration.hpp"
#include "kvcompress/policies/quant/gear.hpp"
#include "reference/float16_reference.hpp"
#include "reference/kivi_reference.hpp"
#include "support/cache_test_support.hpp"
#include "support/expect_invalid.hpp"

namespace {

using namespace kvcompress;
template <class Q>
using Cache = KVCache<Policy<evict::None, merge::None, Q>>;
using G2 = quant::Gear2;

float f16(float x) { return f16_bits_to_f32(f32_to_f16_bits(x)); }

std::vector<float> fp16_data(std::size_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(n);
  for (auto& v : x) v = f16(nd(g) * scale);
  return x;
}

// ---------------------------------------------------------------- BB-11 (allocation-free version)

// §7 oracle: a rank-1 residual E = u vᵀ is recovered exactly with r = 1, loop = 3 (6×4, fp64).
TEST(GearPowerIteration, RankOneSixByFourIsExact) {
  const double u[6] = {1.0, -2.0, 0.5, 3.0, -1.5, 2.5}, v[4] = {0.25, -1.0, 2.0, 0.75};
  double e[24], q[6], p[4];
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 4; ++j) e[i * 4 + j] = u[i] * v[j];
  quant::common::power_iteration_low_rank_inplace<double>(e, 6, 4, 4, 1, 3, 0, q, p);
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_NEAR(q[i] * p[j], e[i * 4 + j], 1e-14);
  double nq = 0;
  for (double x : q) nq += x * x;
  EXPECT_NEAR(nq, 1.0, 1e-14);
}

// §7 oracles: Q has orthonormal columns; with r = min(n, d) Q·Pᵀ = E.
TEST(GearPowerIteration, OrthonormalQAndFullRankExactness) {
  const std::size_t n = 12, d = 9;
  std::mt19937 g(5);
  std::normal_distribution<double> nd;
  std::vector<double> e(n * d);
  for (auto& x : e) x = nd(g);
  for (std::size_t r : {std::size_t{3}, d}) {
    std::vector<double> q(n * r), p(d * r);
    quant::common::power_iteration_low_rank_inplace<double>(e.data(), n, d, d, r, 3, 7, q.data(), p.data());
    for (std::size_t a = 0; a < r; ++a)
      for (std::size_t b = 0; b < r; ++b) {
        double dot = 0;
        for (std::size_t t = 0; t < n; ++t) dot += q[t * r + a] * q[t * r + b];
        EXPECT_NEAR(dot, a == b ? 1.0 : 0.0, 1e-12) << r << " " << a << " " << b;
      }
    if (r == d)
      for (std::size_t t = 0; t < n; ++t)
        for (std::size_t c = 0; c < d; ++c) {
          double l = 0;
          for (std::size_t i = 0; i < r; ++i) l += q[t * r + i] * p[c * r + i];
          EXPECT_NEAR(l, e[t * d + c], 1e-12);
        }
  }
}

// Rank-deficient input (rank 2, r = 4): the dependent columns vanish and Q·Pᵀ is still E.
TEST(GearPowerIteration, RankDeficientInputStillReconstructs) {
  const std::size_t n = 10, d = 6, r = 4;
  std::vector<double> e(n * d);
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t c = 0; c < d; ++c) e[t * d + c] = double(t + 1) * double(c % 3) - 0.5 * double(t % 2) * double(c);
  std::vector<double> q(n * r), p(d * r);
  quant::common::power_iteration_low_rank_inplace<double>(e.data(), n, d, d, r, 3, 0, q.data(), p.data());
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t c = 0; c < d; ++c) {
      double l = 0;
      for (std::size_t i = 0; i < r; ++i) l += q[t * r + i] * p[c * r + i];
      EXPECT_NEAR(l, e[t * d + c], 1e-9);
    }
}

// The allocation-free selector returns exactly what the allocating one does (ties, strides).
TEST(GearOutlierSelection, InplaceMatchesSelectExtremes) {
  std::mt19937 g(3);
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t n = 1 + g() % 80, per = g() % 5, stride = 1 + g() % 3;
    std::vector<float> x(n * stride, 99.0f), dense(n);
    for (std::size_t i = 0; i < n; ++i) dense[i] = x[i * stride] = static_cast<float>(static_cast<int>(g() % 7) - 3);
    std::vector<std::uint16_t> a(n + 2 * per), b(n + 2 * per);
    const std::size_t na = quant::common::select_extremes(dense.data(), n, per, a.data());
    const std::size_t nb = quant::common::select_extremes_inplace(x.data(), n, stride, per, b.data());
    ASSERT_EQ(na, nb);
    for (std::size_t i = 0; i < na; ++i) ASSERT_EQ(a[i], b[i]) << trial;
  }
}

// ---------------------------------------------------------------- store: oracles of §7

// Reads the live slots of (layer 0, head h) as [n][d] K and V.
template <class C>
void read_all(C& c, int h, std::vector<float>& k, std::vector<float>& v) {
  const auto s = kvtest::live_slots(c, 0, h);
  k = s.k;
  v = s.v;
}

// §7: k = max(1, round(s·len/2)) per side → 2 per 64-token key channel and 2 per 128-channel
// value token at s = 2 %; entries equal the independent selection and read back bit exact.
TEST(GearSparse, CountsPositionsAndExactness) {
  const int d = 128;
  const CacheShape s{1, 1, 1, d, 256};
  Cache<G2> c(s);
  const auto k = fp16_data(128 * d, 1), v = fp16_data(128 * d, 2);
  c.append(0, k.data(), v.data(), 128);
  const auto& st = c.stream(0, 0);
  ASSERT_EQ(st.compressed(), 128u);
  EXPECT_EQ(st.layout().per_k, 2);
  EXPECT_EQ(st.layout().per_v, 2);
  std::vector<float> kk, vv;
  read_all(c, 0, kk, vv);
  for (std::size_t b = 0; b < 2; ++b) {
    const std::uint8_t* blk = st.block_data(b);
    for (int ch = 0; ch < d; ++ch) {
      std::vector<float> col(64);
      for (int t = 0; t < 64; ++t) col[t] = k[(b * 64 + t) * d + ch];
      std::uint16_t want[2];
      ASSERT_EQ(quant::common::select_extremes(col.data(), 64, 1, want), 2u);
      for (int e = 0; e < 2; ++e) {
        std::uint16_t idx, bits;
        std::memcpy(&idx, blk + st.layout().out_k + (ch * 2 + e) * 4, 2);
        std::memcpy(&bits, blk + st.layout().out_k + (ch * 2 + e) * 4 + 2, 2);
        ASSERT_EQ(idx, want[e]);
        ASSERT_EQ(f16_bits_to_f32(bits), col[idx]);
        ASSERT_EQ(kk[(b * 64 + idx) * d + ch], col[idx]);  // exact in the reconstruction
      }
    }
    for (int t = 0; t < 64; ++t) {
      const float* row = v.data() + (b * 64 + t) * d;
      std::uint16_t want[2];
      ASSERT_EQ(quant::common::select_extremes(row, d, 1, want), 2u);
      for (int e = 0; e < 2; ++e) {
        std::uint16_t idx;
        std::memcpy(&idx, blk + st.layout().out_v + (t * 2 + e) * 4, 2);
        ASSERT_EQ(idx, want[e]);
        ASSERT_EQ(vv[(b * 64 + t) * d + idx], row[idx]);
      }
    }
  }
  EXPECT_EQ(G2::outliers_per_side(0.02f, 64), 1);
  EXPECT_EQ(G2::outliers_per_side(0.02f, 128), 1);
  EXPECT_EQ(G2::outliers_per_side(0.1f, 128), 6);  // round(6.4)
  EXPECT_EQ(G2::outliers_per_side(0.0f, 128), 0);
}

double frob(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return std::sqrt(s);
}

// §7 oracle: with r = min(n, d) and loop ≥ 1, Q̂ + L + S = X up to the fp16 storage of the
// factors; and error monotonicity ||X − X̂|| ≤ ||X − (Q̂ + S)|| (rank 0 = no low-rank part).
TEST(GearLowRank, FullRankIsExactAndLowRankNeverHurts) {
  const int d = 64;
  const CacheShape s{1, 1, 1, d, 256};
  const auto k = fp16_data(128 * d, 11, 2.0f), v = fp16_data(128 * d, 12);
  auto run = [&](int rank, int loops, std::vector<float>& kk, std::vector<float>& vv) {
    Cache<G2>::Config cfg{};
    cfg.quant.rank_prefill = cfg.quant.rank_decode = rank;
    cfg.quant.loops = loops;
    Cache<G2> c(s, cfg);
    c.append(0, k.data(), v.data(), 128);
    read_all(c, 0, kk, vv);
  };
  std::vector<float> k0, v0, kf, vf, k4, v4;
  run(0, 3, k0, v0);
  run(64, 1, kf, vf);
  run(4, 3, k4, v4);
  double max_e = 0, max_err = 0;
  for (std::size_t i = 0; i < k.size(); ++i) {
    max_e = std::max(max_e, std::fabs(double(k[i]) - k0[i]));
    max_err = std::max(max_err, std::fabs(double(k[i]) - kf[i]));
  }
  EXPECT_GT(max_e, 0.05);
  EXPECT_LE(max_err, 0.01 * max_e);  // fp16 factors: relative ~1e-3 of the residual
  EXPECT_LE(frob(vf, v), 0.01 * frob(v0, v));
  EXPECT_LE(frob(k4, k), frob(k0, k));
  EXPECT_LE(frob(v4, v), frob(v0, v));
  EXPECT_LT(frob(k4, k), 0.99 * frob(k0, k));
}

// The rank-0, s = 0 store is exactly KIVI's codec per block (independent re-quantization).
TEST(GearBackbone, RankZeroNoSparseEqualsKiviCodec) {
  const int d = 128;
  const CacheShape s{1, 1, 1, d, 256};
  Cache<G2>::Config cfg{};
  cfg.quant.rank_prefill = cfg.quant.rank_decode = 0;
  cfg.quant.sparsity = 0.0f;
  Cache<G2> c(s, cfg);
  const auto k = fp16_data(64 * d, 21), v = fp16_data(64 * d, 22);
  c.append(0, k.data(), v.data(), 64);
  std::vector<float> kk, vv;
  read_all(c, 0, kk, vv);
  const auto kq = kvref::kivi_quantize_keys(k.data(), d, 64, d, 2);
  const auto vq = kvref::kivi_quantize_values(v.data(), d, 64, d, 64, 2);
  for (int t = 0; t < 64; ++t)
    for (int x = 0; x < d; ++x) {
      ASSERT_NEAR(kk[t * d + x], kq.dequant(t, x), 1e-6);
      ASSERT_NEAR(vv[t * d + x], vq.dequant(t, x), 1e-6);
    }
}

// With sparsity the backbone quantizes the mean-replaced copy: non-outlier entries match KIVI
// on X with each vector's outliers replaced by its mean (rank 0), independent re-implementation.
TEST(GearBackbone, OutliersReplacedByVectorMeanBeforeQuantizing) {
  const int d = 64;
  const CacheShape s{1, 1, 1, d, 256};
  Cache<G2>::Config cfg{};
  cfg.quant.rank_prefill = cfg.quant.rank_decode = 0;
  Cache<G2> c(s, cfg);
  const auto k = fp16_data(64 * d, 31, 3.0f), v = fp16_data(64 * d, 32);
  c.append(0, k.data(), v.data(), 64);
  std::vector<float> kk, vv;
  read_all(c, 0, kk, vv);
  std::vector<float> kw = k, vw = v;
  std::vector<char> kout(k.size()), vout(v.size());
  for (int ch = 0; ch < d; ++ch) {  // keys: per channel over 64 tokens, 1 per side
    int hi = 0, lo = -1;
    double sum = 0;
    for (int t = 0; t < 64; ++t) {
      sum += k[t * d + ch];
      if (k[t * d + ch] > k[hi * d + ch]) hi = t;
    }
    for (int t = 0; t < 64; ++t)
      if (t != hi && (lo < 0 || k[t * d + ch] < k[lo * d + ch])) lo = t;
    for (int t : {hi, lo}) {
      kw[t * d + ch] = static_cast<float>(sum / 64);
      kout[t * d + ch] = 1;
    }
  }
  for (int t = 0; t < 64; ++t) {
    int hi = 0, lo = -1;
    double sum = 0;
    for (int x = 0; x < d; ++x) {
      sum += v[t * d + x];
      if (v[t * d + x] > v[t * d + hi]) hi = x;
    }
    for (int x = 0; x < d; ++x)
      if (x != hi && (lo < 0 || v[t * d + x] < v[t * d + lo])) lo = x;
    for (int x : {hi, lo}) {
      vw[t * d + x] = static_cast<float>(sum / d);
      vout[t * d + x] = 1;
    }
  }
  const auto kq = kvref::kivi_quantize_keys(kw.data(), d, 64, d, 2);
  const auto vq = kvref::kivi_quantize_values(vw.data(), d, 64, d, 64, 2);
  for (int t = 0; t < 64; ++t)
    for (int x = 0; x < d; ++x) {
      const std::size_t i = static_cast<std::size_t>(t) * d + x;
      ASSERT_NEAR(kk[i], kout[i] ? k[i] : kq.dequant(t, x), 1e-6) << t << " " << x;
      ASSERT_NEAR(vv[i], vout[i] ? v[i] : vq.dequant(t, x), 1e-6) << t << " " << x;
    }
}

// ---------------------------------------------------------------- streaming (BB-13 buffer-n_b)

TEST(GearStreaming, BufferFlushesEveryNbAndRanksFollowPhase) {
  for (std::size_t prompt : {1u, 63u, 64u, 65u, 200u}) {
    const CacheShape s{1, 2, 1, 64, 700};
    Cache<G2> c(s);
    auto k = kvtest::random_kv(prompt + 150, 1, 64, 7);
    c.append(0, k.data(), k.data(), prompt);
    const auto& st = c.stream(0, 0);
    EXPECT_EQ(st.compressed(), prompt - prompt % 64);
    for (std::size_t t = prompt; t < prompt + 150; ++t) {
      c.append(0, k.data() + t * 64, k.data() + t * 64, 1);
      ASSERT_EQ(st.size(), t + 1);
      ASSERT_EQ(st.compressed(), (t + 1) / 64 * 64);
      ASSERT_LT(st.buffered(), 64u);
    }
    for (std::size_t b = 0; b < st.compressed() / 64; ++b) {
      const int want = (b + 1) * 64 <= prompt ? 4 : 2;
      EXPECT_EQ(st.key_rank(b), want) << prompt << " block " << b;
      EXPECT_EQ(st.value_rank(b), want);
    }
  }
}

// ---------------------------------------------------------------- fused attention

struct AttnCase {
  int q_heads, kv_heads, d;
  bool flag;
  float sparsity;
};
class GearAttention : public testing::TestWithParam<AttnCase> {};
TEST_P(GearAttention, MatchesOracleOverStoredContents) {
  const AttnCase p = GetParam();
  const CacheShape s{1, p.q_heads, p.kv_heads, p.d, 600};
  Cache<G2>::Config cfg{};
  cfg.quant.lowrank_at_outliers = p.flag;
  cfg.quant.sparsity = p.sparsity;
  Cache<G2> c(s, cfg);
  std::uint32_t seed = 100;
  for (int chunk = 0; chunk < 2; ++chunk) {
    auto k = kvtest::random_kv(100, p.kv_heads, p.d, seed++);
    auto v = kvtest::random_kv(100, p.kv_heads, p.d, seed++, false);
    auto q = kvtest::random_kv(100, p.q_heads, p.d, seed++);
    std::vector<float> out(q.size());
    c.append(0, k.data(), v.data(), 100);
    c.attend(0, q.data(), 100, out.data());
    kvtest::expect_attention_matches(c, 0, q, 100, out, 2e-3, 2e-3);
  }
  for (int step = 0; step < 90; ++step) {
    auto k = kvtest::random_kv(1, p.kv_heads, p.d, seed++);
    auto v = kvtest::random_kv(1, p.kv_heads, p.d, seed++, false);
    auto q = kvtest::random_kv(1, p.q_heads, p.d, seed++);
    std::vector<float> out(q.size());
    c.append(0, k.data(), v.data(), 1);
    c.attend(0, q.data(), 1, out.data());
    if (step % 15 == 0 || step == 89) kvtest::expect_attention_matches(c, 0, q, 1, out, 2e-3, 2e-3);
  }
}
INSTANTIATE_TEST_SUITE_P(Shapes, GearAttention,
                         testing::Values(AttnCase{8, 2, 128, false, 0.02f}, AttnCase{4, 4, 64, true, 0.02f},
                                         AttnCase{6, 2, 96, false, 0.1f}, AttnCase{4, 1, 80, false, 0.0f}),
                         [](const testing::TestParamInfo<AttnCase>& i) {
                           return "q" + std::to_string(i.param.q_heads) + "_kv" + std::to_string(i.param.kv_heads) +
                                  "_d" + std::to_string(i.param.d) + (i.param.flag ? "_refflag" : "") +
                                  "_s" + std::to_string(static_cast<int>(i.param.sparsity * 100));
                         });

// ---------------------------------------------------------------- memory accounting

// Default block (n_b = 64, d = 128, 2-bit, G = Gv = 64, r = 4, 1 outlier per side):
//   keys   64·128·2/8 codes + 128·4 meta                 = 2560   (2 + 0.5 bpe)
//   values 64·(128·2/8 + 2·4)                            = 2560   (2 + 0.5 bpe)
//   factors 2·(64·4·2 + 128·4·2)                         = 3072   (1.5 bpe each of K, V)
//   outliers 128·2·4 (K) + 64·2·4 (V)                    = 1536   (1.0 / 0.5 bpe)
//   ranks 2 bytes → 9730 → 64-byte aligned 9792.
TEST(GearStorage, BitsPerElementAndMemoryBytes) {
  const CacheShape s{1, 1, 1, 128, 4096};
  EXPECT_EQ(G2::Store::block_bytes(128, {}), 9792u);
  EXPECT_DOUBLE_EQ(Cache<G2>::bytes_per_token(s), 9792.0 / 64);
  // The spec's example block (r = 2): K 2 + 0.5 + 0.75 + 1.0 = 4.25, V 2.5 + 0.75 + 0.5 = 3.75 bpe.
  G2::Config r2{};
  r2.rank_prefill = r2.rank_decode = 2;
  EXPECT_EQ(G2::Store::geometry(128, r2).bytes, (4.25 + 3.75) * 64 * 128 / 8 + 2);
  const CacheShape s2{2, 8, 2, 128, 4096};
  Cache<G2> c(s2);
  auto k = kvtest::random_kv(1000, 2, 128, 3);
  for (int l = 0; l < 2; ++l) c.append(l, k.data(), k.data(), 1000);
  // 1000 tokens: 15 blocks of 64 compressed + 40 in the buffer per stream.
  EXPECT_EQ(c.memory_bytes(), 4 * (15 * 9792 + 2 * 64 * 128 * 2) + 2 * 1000 * Cache<G2>::kMetadataBytesPerSlot);
}

// ---------------------------------------------------------------- config validation

TEST(GearConfig, BadConfigsAreRejected) {
  const CacheShape s{1, 2, 1, 128, 256};
  auto bad = [&](auto mutate, const char* arg) {
    Cache<G2>::Config cfg{};
    mutate(cfg.quant);
    kvtest::expect_invalid_argument([&] { Cache<G2> c(s, cfg); }, arg);
  };
  bad([](G2::Config& q) { q.group = 24; }, "group");
  bad([](G2::Config& q) { q.buffer = 100; }, "buffer");
  bad([](G2::Config& q) { q.buffer = 32; }, "buffer");
  bad([](G2::Config& q) { q.rank_prefill = 65; }, "rank_prefill");
  bad([](G2::Config& q) { q.rank_decode = -1; }, "rank_decode");
  bad([](G2::Config& q) { q.sparsity = -0.1f; }, "sparsity");
  bad([](G2::Config& q) { q.sparsity = std::nanf(""); }, "sparsity");
  bad([](G2::Config& q) { q.loops = 0; }, "loops");
  bad([](G2::Config& q) { q.value_group = 8; }, "value_group");
  const CacheShape odd{1, 2, 1, 72, 256};  // 72 % 16 != 0
  kvtest::expect_invalid_argument([&] { Cache<G2> c(odd); }, "head_dim");
}

// ---------------------------------------------------------------- truncate

TEST(GearTruncate, IntoCompressedBlockKeepsSurvivorsAndContinues) {
  for (std::size_t m : {100u, 64u, 130u, 20u}) {
    const CacheShape s{1, 4, 2, 64, 800};
    Cache<G2> c(s);
    auto k = kvtest::random_kv(200, 2, 64, 21);
    auto v = kvtest::random_kv(200, 2, 64, 22);
    c.append(0, k.data(), v.data(), 200);
    const auto before = kvtest::live_slots(c, 0, 1);
    c.truncate(m);
    const auto after = kvtest::live_slots(c, 0, 1);
    ASSERT_EQ(after.pos.size(), m);
    for (std::size_t j = 0; j < m * 64; ++j) {
      ASSERT_TRUE(after.k[j] == before.k[j] || after.k[j] == f16(before.k[j])) << m << " " << j;
      ASSERT_TRUE(after.v[j] == before.v[j] || after.v[j] == f16(before.v[j])) << m << " " << j;
    }
    auto k2 = kvtest::random_kv(100, 2, 64, 23);
    auto q = kvtest::random_kv(1, 4, 64, 24);
    std::vector<float> out(q.size());
    for (int t = 0; t < 100; ++t) c.append(0, k2.data() + t * 128, k2.data() + t * 128, 1);
    c.attend(0, q.data(), 1, out.data());
    kvtest::expect_attention_matches(c, 0, q, 1, out, 2e-3, 2e-3);
    EXPECT_EQ(c.size(0, 0), m + 100);
  }
}

// ---------------------------------------------------------------- composition (BB-16)

TEST(GearComposition, StreamingLLMKeepsSinksAndWindowAndFreesBlocks) {
  using C = KVCache<Policy<evict::StreamingLLM, merge::None, G2>>;
  const CacheShape s{1, 4, 2, 64, 1024};
  C::Config cfg{};
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 200;
  C c(s, cfg);
  auto k = kvtest::random_kv(1000, 2, 64, 31);
  auto q = kvtest::random_kv(1000, 4, 64, 32);
  std::vector<float> out(4 * 64);
  std::size_t peak = 0;
  for (std::size_t t = 0; t < 1000; ++t) {
    c.append(0, k.data() + t * 128, k.data() + t * 128, 1);
    c.attend(0, q.data() + t * 256, 1, out.data());
    peak = std::max(peak, c.memory_bytes());
    if (t % 200 == 199)
      kvtest::expect_attention_matches(c, 0, std::vector<float>(q.begin() + t * 256, q.begin() + (t + 1) * 256), 1,
                                       out, 2e-3, 2e-3);
  }
  EXPECT_EQ(c.size(0, 0), 204u);
  std::vector<std::int32_t> pos(204);
  c.positions(0, 1, pos.data());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(pos[i], i);
  for (int i = 4; i < 204; ++i) EXPECT_EQ(pos[i], 1000 - 204 + i);
  // Live 204 slots span at most 1 sink block + 5 window blocks (partially dead ones included):
  // without freeing, 1000 tokens would need 15 blocks per stream.
  const std::size_t block = G2::Store::block_bytes(64, {});
  EXPECT_LE(peak, 2 * (6 * block + C::fixed_bytes_per_stream(s)) + 2 * 1024 * C::kMetadataBytesPerSlot);
}

TEST(GearComposition, H2OSelectsAtPrefillEndThenCompresses) {
  using C = KVCache<Policy<evict::H2O, merge::None, G2>>;
  const CacheShape s{2, 4, 2, 64, 1024};
  C::Config cfg{};
  cfg.evict.heavy_budget = 100;
  cfg.evict.recent_budget = 60;
  C c(s, cfg);
  auto k = kvtest::random_kv(300, 2, 64, 41);
  auto v = kvtest::random_kv(300, 2, 64, 42, false);
  auto q = kvtest::random_kv(300, 4, 64, 43);
  std::vector<float> out(q.size());
  for (int l = 0; l < 2; ++l) {
    c.append(l, k.data(), v.data(), 300);
    c.attend(l, q.data(), 300, out.data());
  }
  c.end_prefill();
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h) {
      ASSERT_EQ(c.size(l, h), 160u);
      std::vector<std::int32_t> pos(160);
      c.positions(l, h, pos.data());
      EXPECT_TRUE(std::is_sorted(pos.begin(), pos.end()));
      for (int i = 0; i < 60; ++i) EXPECT_EQ(pos[100 + i], 240 + i);  // the recent window
      EXPECT_EQ(c.stream(l, h).compressed(), 128u);  // 160 kept slots re-encoded as the prompt
    }
  auto k2 = kvtest::random_kv(80, 2, 64, 44);
  auto q2 = kvtest::random_kv(80, 4, 64, 45);
  for (int t = 0; t < 80; ++t)
    for (int l = 0; l < 2; ++l) {
      c.append(l, k2.data() + t * 128, k2.data() + t * 128, 1);
      std::vector<float> o(4 * 64);
      c.attend(l, q2.data() + t * 256, 1, o.data());
      if (t == 79 || t == 10)
        kvtest::expect_attention_matches(c, l, std::vector<float>(q2.begin() + t * 256, q2.begin() + (t + 1) * 256),
                                         1, o, 2e-3, 2e-3);
    }
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h) {
      std::vector<std::int32_t> pos(c.size(l, h));
      c.positions(l, h, pos.data());
      EXPECT_EQ(pos.back(), 379);
    }
}

}  // namespace
