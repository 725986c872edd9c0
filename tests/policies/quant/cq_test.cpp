// SPDX-License-Identifier: Apache-2.0
// CQ (quantization.md §3): the spec's test oracles (worked example, exact encoding of centroids,
// brute-force nearest index, equal-weight k-means = unweighted, packed size), the pre-RoPE store
// (positions kept per slot through compaction/truncation, RoPE commutation), fused attention
// against a double-precision reference built independently (nearest centroid by brute force,
// RoPE in double), the fp16 recent window, the calibration file round trip, the data-free
// fallback, exact memory_bytes and bad configs. The Store is tested directly until the cache
// passes TokenInfo (the 6-argument append).

#include "support/expect_invalid.hpp"
#include "support/store_harness.hpp"
#include "kvcompress/policies/quant/cq.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

namespace kq = kvcompress::quant;
namespace qc = kvcompress::quant::common;
using kvcompress::BlockPool;
using kvcompress::BlockTable;
using kvcompress::CacheShape;
using kvcompress::Modality;
using kvcompress::TokenInfo;

std::vector<float> randn(std::size_t n, std::uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

// ---------------------------------------------------------------- independent double reference

/// Nearest centroid by brute force in double (ties → lowest index).
std::size_t ref_nearest(const float* x, const float* cb, std::size_t K, int c) {
  std::size_t best = 0;
  double bd = std::numeric_limits<double>::infinity();
  for (std::size_t k = 0; k < K; ++k) {
    double s = 0;
    for (int t = 0; t < c; ++t) {
      const double e = static_cast<double>(x[t]) - cb[k * c + t];
      s += e * e;
    }
    if (s < bd) {
      bd = s;
      best = k;
    }
  }
  return best;
}

/// VQ reconstruction of a d-vector with natural codebooks [G][K][c].
std::vector<double> ref_vq(const float* x, std::size_t d, int c, const float* cb, std::size_t K) {
  std::vector<double> y(d);
  for (std::size_t g = 0; g < d / c; ++g) {
    const std::size_t k = ref_nearest(x + g * c, cb + g * K * c, K, c);
    for (int t = 0; t < c; ++t) y[g * c + t] = cb[(g * K + k) * c + t];
  }
  return y;
}

/// Rotate-half RoPE in double.
void ref_rope(std::vector<double>& x, double base, std::int64_t pos) {
  const std::size_t d = x.size(), h = d / 2;
  for (std::size_t i = 0; i < h; ++i) {
    const double th = std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(d));
    const double cs = std::cos(pos * th), sn = std::sin(pos * th);
    const double a = x[i], b = x[i + h];
    x[i] = a * cs - b * sn;
    x[i + h] = a * sn + b * cs;
  }
}

double half_round(float x) { return kvcompress::f16_bits_to_f32(kvcompress::f32_to_f16_bits(x)); }

/// Softmax attention of one query row over reference keys/values in double.
std::vector<double> ref_attention(const std::vector<double>& q, const std::vector<std::vector<double>>& K,
                                  const std::vector<std::vector<double>>& V) {
  std::vector<double> l(K.size());
  double m = -std::numeric_limits<double>::infinity();
  for (std::size_t j = 0; j < K.size(); ++j) {
    double s = 0;
    for (std::size_t c = 0; c < q.size(); ++c) s += q[c] * K[j][c];
    l[j] = s;
    m = std::max(m, s);
  }
  double z = 0;
  for (double& x : l) z += (x = std::exp(x - m));
  std::vector<double> o(q.size(), 0.0);
  for (std::size_t j = 0; j < K.size(); ++j)
    for (std::size_t c = 0; c < q.size(); ++c) o[c] += l[j] / z * V[j][c];
  return o;
}

// ---------------------------------------------------------------- store harness

template <class Q>
struct Harness : kvtest::StoreHarness<Q> {
  using kvtest::StoreHarness<Q>::StoreHarness;
  using kvtest::StoreHarness<Q>::store;
  using kvtest::StoreHarness<Q>::d;
  void append(const std::vector<float>& k, const std::vector<float>& v, const std::vector<std::int32_t>& pos) {
    std::vector<Modality> mod(pos.size(), Modality::kText);
    kvtest::StoreHarness<Q>::append(k.data(), v.data(), pos.size(), TokenInfo{pos.data(), mod.data()});
  }
  /// Full attention through the store for one query row (what KVCache does: logits, softmax in
  /// double here, accumulate of the probabilities).
  std::vector<double> attend(const std::vector<float>& q) const {
    const std::size_t n = store->size();
    std::vector<float> l(n);
    store->logits(q.data(), 1, l.data(), n);
    double m = -1e300;
    for (float x : l) m = std::max<double>(m, x);
    double z = 0;
    std::vector<float> p(n);
    for (std::size_t j = 0; j < n; ++j) z += std::exp(l[j] - m);
    for (std::size_t j = 0; j < n; ++j) p[j] = static_cast<float>(std::exp(l[j] - m) / z);
    std::vector<float> out(static_cast<std::size_t>(d), 0.0f);
    store->accumulate(p.data(), n, 1, out.data());
    return std::vector<double>(out.begin(), out.end());
  }
};

// ---------------------------------------------------------------- tests

TEST(Cq, WorkedExampleTwoChannelsTwoBits) {
  // §3: centroids [(.5,.5), (−.5,−.5), (.5,−.5), (−.5,.5)], input (0.4, 0.7) → distances
  // [0.05, 2.25, 1.45, 0.85] → idx 0 → (0.5, 0.5).
  const float cb[8] = {0.5f, 0.5f, -0.5f, -0.5f, 0.5f, -0.5f, -0.5f, 0.5f};
  const float x[2] = {0.4f, 0.7f};
  const double expect_d[4] = {0.05, 2.25, 1.45, 0.85};
  for (int k = 0; k < 4; ++k) {
    const double dx = 0.4 - cb[2 * k], dy = 0.7 - cb[2 * k + 1];
    EXPECT_NEAR(dx * dx + dy * dy, expect_d[k], 1e-6);
  }
  std::uint8_t idx = 9;
  kvcompress::kernels::cq_encode(x, 2, 2, cb, 4, &idx, 1, kvcompress::isa::scalar{});
  EXPECT_EQ(idx, 0);
  kvcompress::kernels::cq_encode(x, 2, 2, cb, 4, &idx, 1, kvcompress::best_isa{});
  EXPECT_EQ(idx, 0);
  float y[2];
  kvcompress::kernels::cq_dequantize(&idx, 1, 2, 2, cb, 4, y, kvcompress::isa::scalar{});
  EXPECT_EQ(y[0], 0.5f);
  EXPECT_EQ(y[1], 0.5f);

  // Same through a post-RoPE Store with this codebook in all 8 groups (d = 16, 1 bit/channel).
  using Q = kq::Cq<2, 2>;
  std::vector<float> books;
  for (int g = 0; g < 8; ++g) books.insert(books.end(), cb, cb + 8);
  Q::Config cfg;
  cfg.codebooks = std::make_shared<kq::CqCodebooks>(1, 1, 16, 2, 2, books, books);
  cfg.key_space = qc::KeySpace::kPostRope;
  Harness<Q> h(16, cfg, 8);
  std::vector<float> kin(16), vin(16);
  for (int g = 0; g < 8; ++g) {
    kin[2 * g] = g % 2 ? -0.3f : 0.4f;
    kin[2 * g + 1] = g % 2 ? -0.9f : 0.7f;
    vin[2 * g] = g % 2 ? 0.6f : 0.4f;
    vin[2 * g + 1] = g % 2 ? -0.2f : 0.7f;
  }
  h.append(kin, vin, {0});
  std::vector<float> k(16), v(16);
  h.store->read(0, 1, k.data(), v.data(), 16, nullptr);
  for (int g = 0; g < 8; ++g) {
    EXPECT_EQ(k[2 * g], g % 2 ? -0.5f : 0.5f);  // (−.3, −.9) → (−.5, −.5)
    EXPECT_EQ(k[2 * g + 1], g % 2 ? -0.5f : 0.5f);
    EXPECT_EQ(v[2 * g], 0.5f);                  // (.6, −.2) → (.5, −.5)
    EXPECT_EQ(v[2 * g + 1], g % 2 ? -0.5f : 0.5f);
  }
}

TEST(Cq, EncodingIsExactOnCentroidsAndMinimizesDistance) {
  const int d = 64, c = 4, bits = 6;
  const std::size_t K = 64;
  auto cb = kq::cq_gaussian_codebooks(d, c, bits, 1.0f, 1.0f);
  const float* nat = cb->keys(0, 0);
  // Input = centroid k of every group → index k, reconstruction exact.
  for (std::size_t k : {std::size_t{0}, std::size_t{17}, K - 1}) {
    std::vector<float> x(d);
    for (int g = 0; g < d / c; ++g)
      for (int t = 0; t < c; ++t) x[g * c + t] = nat[(g * K + k) * c + t];
    std::vector<std::uint8_t> idx(d / c);
    kvcompress::kernels::cq_encode(x.data(), d, c, nat, K, idx.data(), 1, kvcompress::best_isa{});
    for (int g = 0; g < d / c; ++g) EXPECT_EQ(idx[g], k);
  }
  // Random inputs: the index is the brute-force minimizer (double distances).
  const auto x = randn(200 * d, 3);
  for (int t = 0; t < 200; ++t) {
    std::vector<std::uint8_t> idx(d / c);
    kvcompress::kernels::cq_encode(x.data() + t * d, d, c, nat, K, idx.data(), 1, kvcompress::best_isa{});
    for (int g = 0; g < d / c; ++g) {
      const std::size_t r = ref_nearest(x.data() + t * d + g * c, nat + g * K * c, K, c);
      if (idx[g] != r) {  // only an fp32 near-tie may differ: distances equal to fp32 rounding
        auto dist = [&](std::size_t k) {
          double s = 0;
          for (int u = 0; u < c; ++u) {
            const double e = x[t * d + g * c + u] - nat[(g * K + k) * c + u];
            s += e * e;
          }
          return s;
        };
        EXPECT_NEAR(dist(idx[g]), dist(r), 1e-5 * (1 + dist(r)));
      }
    }
  }
}

TEST(Cq, EqualWeightKMeansReproducesUnweighted) {
  // Fisher-guided CQ with all gradient sums equal (grads ≡ 1 → w = c = 4, a power of two, so
  // every weighted sum is the unweighted one scaled exactly) gives the uniform-CQ codebooks.
  const int d = 8, c = 4, bits = 3;
  const std::size_t n = 300;
  const auto K = randn(n * d, 5), V = randn(n * d, 6);
  const std::vector<float> ones(n * d, 1.0f);
  auto uni = kq::cq_fit_codebooks(1, 1, d, c, bits, {{K.data(), V.data(), n, nullptr, nullptr}});
  auto fis = kq::cq_fit_codebooks(1, 1, d, c, bits, {{K.data(), V.data(), n, ones.data(), ones.data()}});
  for (std::size_t i = 0; i < uni->stream_floats(); ++i) {
    EXPECT_EQ(uni->keys(0, 0)[i], fis->keys(0, 0)[i]) << i;
    EXPECT_EQ(uni->values(0, 0)[i], fis->values(0, 0)[i]) << i;
  }
  // Non-uniform weights change the result (the weights are used).
  std::vector<float> g(n * d, 1.0f);
  for (std::size_t t = 0; t < n / 2; ++t)
    for (int j = 0; j < d; ++j) g[t * d + j] = 5.0f;
  auto w = kq::cq_fit_codebooks(1, 1, d, c, bits, {{K.data(), V.data(), n, g.data(), nullptr}});
  bool differs = false;
  for (std::size_t i = 0; i < uni->stream_floats(); ++i) differs |= uni->keys(0, 0)[i] != w->keys(0, 0)[i];
  EXPECT_TRUE(differs);
}

TEST(Cq, CalibrationFitsCodebooksThatReduceError) {
  // Centroids learned from correlated data beat the Gaussian fallback on that data.
  const int d = 16, c = 4, bits = 4;
  const std::size_t n = 512;
  auto base = randn(n * d, 11);
  for (std::size_t t = 0; t < n; ++t)  // couple channels: x_{4g+1..3} ≈ x_{4g}
    for (int g = 0; g < d / c; ++g)
      for (int u = 1; u < c; ++u) base[t * d + g * c + u] = base[t * d + g * c] + 0.1f * base[t * d + g * c + u];
  auto fit = kq::cq_fit_codebooks(1, 1, d, c, bits, {{base.data(), base.data(), n}});
  auto gauss = kq::cq_gaussian_codebooks(d, c, bits);
  auto mse = [&](const kq::CqCodebooks& cb) {
    double s = 0;
    for (std::size_t t = 0; t < n; ++t) {
      auto y = ref_vq(base.data() + t * d, d, c, cb.keys(0, 0), 16);
      for (int j = 0; j < d; ++j) s += (y[j] - base[t * d + j]) * (y[j] - base[t * d + j]);
    }
    return s;
  };
  EXPECT_LT(mse(*fit), 0.5 * mse(*gauss));
}

TEST(Cq, GaussianFallbackIsDeterministicScaledAndShared) {
  auto a = kq::cq_gaussian_codebooks(32, 8, 4, 2.0f, 0.5f, 7);
  auto b = kq::cq_gaussian_codebooks(32, 8, 4, 2.0f, 0.5f, 7);
  auto c = kq::cq_gaussian_codebooks(32, 8, 4, 2.0f, 0.5f, 8);
  ASSERT_TRUE(a->shared());
  bool diff_seed = false;
  for (std::size_t i = 0; i < a->stream_floats(); ++i) {
    EXPECT_EQ(a->keys(0, 0)[i], b->keys(0, 0)[i]);
    EXPECT_FLOAT_EQ(a->keys(0, 0)[i], 4.0f * a->values(0, 0)[i]);  // σ_K / σ_V = 4
    diff_seed |= a->keys(0, 0)[i] != c->keys(0, 0)[i];
  }
  EXPECT_TRUE(diff_seed);
  // Every group uses the same codebook; centroids are distinct.
  const std::size_t per = 16 * 8;
  for (std::size_t i = 0; i < per; ++i) EXPECT_EQ(a->keys(0, 0)[i], a->keys(0, 0)[per * 3 + i]);
}

TEST(Cq, CalibrationFileRoundTrip) {
  const int L = 2, H = 2, d = 16, c = 4, bits = 3;
  const std::size_t n = 64;
  std::vector<std::vector<float>> data;
  std::vector<kq::CqStreamSamples> s;
  for (int i = 0; i < L * H; ++i) data.push_back(randn(n * d, 100 + i));
  for (int i = 0; i < L * H; ++i) s.push_back({data[i].data(), data[(i + 1) % 4].data(), n});
  auto cb = kq::cq_fit_codebooks(L, H, d, c, bits, s);
  const auto bytes = kvcompress::calib::serialize(cb->to_calibration_set());
  auto back = kq::cq_codebooks_from(kvcompress::calib::deserialize(bytes.data(), bytes.size(), "cq"));
  EXPECT_EQ(back->num_layers(), L);
  EXPECT_EQ(back->num_kv_heads(), H);
  EXPECT_EQ(back->head_dim(), d);
  EXPECT_EQ(back->c(), c);
  EXPECT_EQ(back->bits(), bits);
  for (int l = 0; l < L; ++l)
    for (int h = 0; h < H; ++h)
      for (std::size_t i = 0; i < cb->stream_floats(); ++i) {
        ASSERT_EQ(cb->keys(l, h)[i], back->keys(l, h)[i]);
        ASSERT_EQ(cb->values(l, h)[i], back->values(l, h)[i]);
        ASSERT_EQ(cb->keys_t(l, h)[i], back->keys_t(l, h)[i]);
      }
  // Distinct streams got distinct codebooks.
  EXPECT_NE(cb->keys(0, 0)[0], cb->keys(1, 1)[0]);
  const std::string path = ::testing::TempDir() + "/cq_roundtrip.kvcc";
  kq::cq_save(*cb, path);
  auto loaded = kq::cq_load(path);
  for (std::size_t i = 0; i < cb->stream_floats(); ++i) EXPECT_EQ(cb->values(1, 0)[i], loaded->values(1, 0)[i]);
  // Another method's file is rejected.
  auto other = cb->to_calibration_set();
  other.method = "kvquant";
  const auto ob = kvcompress::calib::serialize(other);
  EXPECT_THROW(kvcompress::calib::deserialize(ob.data(), ob.size(), "cq"), kvcompress::InvalidArgument);
  std::remove(path.c_str());
}

/// Builds the reference post-RoPE keys / values of the stored tokens (window tokens fp16).
struct RefContents {
  std::vector<std::vector<double>> K, V;
};

template <class Q>
void check_attention(const Harness<Q>& h, const RefContents& ref, std::uint32_t seed) {
  const int d = h.d;
  for (int trial = 0; trial < 3; ++trial) {
    auto q = randn(static_cast<std::size_t>(d), seed + trial, 0.25f);
    std::vector<double> qd(q.begin(), q.end());
    const auto want = ref_attention(qd, ref.K, ref.V);
    const auto got = h.attend(q);
    double mag = 0;
    for (double x : want) mag = std::max(mag, std::fabs(x));
    for (int c = 0; c < d; ++c) EXPECT_NEAR(got[c], want[c], 2e-5 * (1 + mag)) << "channel " << c;
    // logits against the reference dot products
    std::vector<float> l(h.store->size());
    h.store->logits(q.data(), 1, l.data(), l.size());
    for (std::size_t j = 0; j < l.size(); ++j) {
      double s = 0, a = 0;
      for (int c = 0; c < d; ++c) {
        s += qd[c] * ref.K[j][c];
        a += std::fabs(qd[c] * ref.K[j][c]);
      }
      EXPECT_NEAR(l[j], s, 1e-5 * (1 + a)) << "slot " << j;
    }
  }
}

template <class Q>
RefContents reference_of(const typename Q::Config& cfg, const std::vector<float>& k, const std::vector<float>& v,
                         const std::vector<std::int32_t>& pos, const std::vector<std::size_t>& slots,
                         std::size_t first_window, int d) {
  RefContents r;
  const std::size_t K = std::size_t{1} << Q::kBits;
  for (std::size_t s = 0; s < slots.size(); ++s) {
    const std::size_t t = slots[s];
    std::vector<double> kk, vv;
    if (s < first_window) {
      // Tokens that passed through the fp16 window are encoded from their fp16 rows.
      std::vector<float> kin(k.begin() + t * d, k.begin() + (t + 1) * d), vin(v.begin() + t * d, v.begin() + (t + 1) * d);
      if (cfg.recent_window > 0)
        for (int c = 0; c < d; ++c) {
          kin[c] = static_cast<float>(half_round(kin[c]));
          vin[c] = static_cast<float>(half_round(vin[c]));
        }
      kk = ref_vq(kin.data(), d, Q::kChannels, cfg.codebooks->keys(0, 0), K);
      vv = ref_vq(vin.data(), d, Q::kChannels, cfg.codebooks->values(0, 0), K);
    } else {
      for (int c = 0; c < d; ++c) {
        kk.push_back(half_round(k[t * d + c]));
        vv.push_back(half_round(v[t * d + c]));
      }
    }
    if (cfg.key_space == qc::KeySpace::kPreRope) ref_rope(kk, cfg.rope.base, pos[t]);
    r.K.push_back(kk);
    r.V.push_back(vv);
  }
  return r;
}

template <class Q>
typename Q::Config make_cfg(int d, qc::KeySpace ks, std::size_t window) {
  typename Q::Config cfg;
  if (Q::kBits <= 8) {
    cfg.codebooks = kq::cq_gaussian_codebooks(d, Q::kChannels, Q::kBits, 1.0f, 1.0f);
  } else {  // 2^10 centroids: random normal centroids (a Lloyd fit would dominate the test time)
    const std::size_t n = static_cast<std::size_t>(d) << Q::kBits;
    cfg.codebooks = std::make_shared<kq::CqCodebooks>(1, 1, d, Q::kChannels, Q::kBits, randn(n, 901), randn(n, 902));
  }
  cfg.key_space = ks;
  cfg.recent_window = window;
  cfg.rope.head_dim = static_cast<std::size_t>(d);
  return cfg;
}

template <class Q>
void run_attention_case(int d, qc::KeySpace ks, std::size_t window, std::size_t T, std::uint32_t seed) {
  auto cfg = make_cfg<Q>(d, ks, window);
  Harness<Q> h(d, cfg, T + 8);
  const auto k = randn(T * d, seed), v = randn(T * d, seed + 1);
  std::vector<std::int32_t> pos(T);
  for (std::size_t t = 0; t < T; ++t) pos[t] = static_cast<std::int32_t>(3 * t + 5);  // gapped positions
  // prefill chunk, then decode steps one token at a time
  const std::size_t pre = T * 2 / 3;
  h.append(std::vector<float>(k.begin(), k.begin() + pre * d), std::vector<float>(v.begin(), v.begin() + pre * d),
           std::vector<std::int32_t>(pos.begin(), pos.begin() + pre));
  for (std::size_t t = pre; t < T; ++t)
    h.append(std::vector<float>(k.begin() + t * d, k.begin() + (t + 1) * d),
             std::vector<float>(v.begin() + t * d, v.begin() + (t + 1) * d), {pos[t]});
  ASSERT_EQ(h.store->size(), T);
  const std::size_t nw = std::min(window, T);
  EXPECT_EQ(h.store->quantized(), T - nw);
  std::vector<std::size_t> slots(T);
  for (std::size_t t = 0; t < T; ++t) slots[t] = t;
  check_attention(h, reference_of<Q>(cfg, k, v, pos, slots, T - nw, d), seed + 7);
  for (std::size_t j = 0; j < T; ++j) EXPECT_EQ(h.store->position(j), pos[j]);
}

TEST(Cq, AttentionPreRopeOneBit) { run_attention_case<kq::Cq8c8b>(64, qc::KeySpace::kPreRope, 0, 300, 21); }
TEST(Cq, AttentionPreRopeTwoBitWithWindow) {
  run_attention_case<kq::Cq4c8b>(128, qc::KeySpace::kPreRope, 16, 200, 31);
}
TEST(Cq, AttentionPostRopeTables) {
  run_attention_case<kq::Cq8c8b>(128, qc::KeySpace::kPostRope, 0, 277, 41);
  run_attention_case<kq::Cq4c8b>(64, qc::KeySpace::kPostRope, 8, 150, 43);
  run_attention_case<kq::Cq<8, 10>>(64, qc::KeySpace::kPostRope, 0, 140, 45);
}

TEST(Cq, RopeCommutationReadReturnsRotatedDequantizedKeys) {
  // RoPE(dequant(k_pre)) at the ORIGINAL positions (after eviction gaps) equals dense RoPE of
  // the centroid reconstruction; within quant error of RoPE(k_pre).
  using Q = kq::Cq4c8b;
  const int d = 64;
  auto cfg = make_cfg<Q>(d, qc::KeySpace::kPreRope, 0);
  Harness<Q> h(d, cfg, 64);
  const std::size_t T = 40;
  const auto k = randn(T * d, 51), v = randn(T * d, 52);
  std::vector<std::int32_t> pos(T);
  for (std::size_t t = 0; t < T; ++t) pos[t] = static_cast<std::int32_t>(1000 + 7 * t);
  h.append(k, v, pos);
  std::vector<std::uint8_t> keep(T), ret(T);
  for (std::size_t t = 0; t < T; ++t) keep[t] = (t % 3 != 1);
  const std::size_t kept = h.store->plan_compact(keep.data(), ret.data());
  h.store->compact(ret.data(), nullptr);
  ASSERT_EQ(h.store->size(), kept);
  std::vector<float> kk(kept * d), vv(kept * d);
  h.store->read(0, kept, kk.data(), vv.data(), d, nullptr);
  std::size_t s = 0;
  for (std::size_t t = 0; t < T; ++t) {
    if (!keep[t]) continue;
    EXPECT_EQ(h.store->position(s), pos[t]);
    auto want = ref_vq(k.data() + t * d, d, 4, cfg.codebooks->keys(0, 0), 256);
    ref_rope(want, cfg.rope.base, pos[t]);
    auto vw = ref_vq(v.data() + t * d, d, 4, cfg.codebooks->values(0, 0), 256);
    for (int c = 0; c < d; ++c) {
      EXPECT_NEAR(kk[s * d + c], want[c], 1e-5);
      EXPECT_EQ(vv[s * d + c], static_cast<float>(vw[c]));
    }
    ++s;
  }
}

TEST(Cq, EvictionAndTruncationKeepPositionsAndWindowInStep) {
  using Q = kq::Cq8c8b;
  const int d = 64;
  auto cfg = make_cfg<Q>(d, qc::KeySpace::kPreRope, 12);
  Harness<Q> h(d, cfg, 400);
  const std::size_t T = 300;
  const auto k = randn(T * d, 61), v = randn(T * d, 62);
  std::vector<std::int32_t> pos(T);
  for (std::size_t t = 0; t < T; ++t) pos[t] = static_cast<std::int32_t>(t);
  h.append(k, v, pos);
  // evict every 5th slot (quantized and window slots alike) and the slots 130..200
  std::vector<std::uint8_t> keep(T), ret(T);
  std::vector<std::size_t> slots;
  for (std::size_t t = 0; t < T; ++t) {
    keep[t] = (t % 5 != 2) && !(t >= 130 && t < 200);
    if (keep[t]) slots.push_back(t);
  }
  EXPECT_EQ(h.store->plan_compact(keep.data(), ret.data()), slots.size());
  h.store->compact(ret.data(), nullptr);
  ASSERT_EQ(h.store->size(), slots.size());
  const std::size_t window_kept = 10;  // window = slots 288..299, of which 292 and 297 evicted
  EXPECT_EQ(h.store->size() - h.store->quantized(), window_kept);
  check_attention(h, reference_of<Q>(cfg, k, v, pos, slots, slots.size() - window_kept, d), 71);
  // truncate into the window, then into the quantized part
  h.store->truncate(slots.size() - 3, nullptr);
  slots.resize(slots.size() - 3);
  check_attention(h, reference_of<Q>(cfg, k, v, pos, slots, slots.size() - (window_kept - 3), d), 73);
  h.store->truncate(100, nullptr);
  slots.resize(100);
  EXPECT_EQ(h.store->quantized(), 100u);
  check_attention(h, reference_of<Q>(cfg, k, v, pos, slots, 100, d), 75);
  // appending after truncation: the window refills, positions continue from the host's values
  std::vector<float> k2(20 * d), v2(20 * d);
  std::copy(k.begin() + 280 * d, k.end(), k2.begin());
  std::copy(v.begin() + 280 * d, v.end(), v2.begin());
  std::vector<std::int32_t> p2(pos.begin() + 280, pos.end());
  h.append(k2, v2, p2);
  for (std::size_t t = 280; t < 300; ++t) slots.push_back(t);
  check_attention(h, reference_of<Q>(cfg, k, v, pos, slots, slots.size() - 12, d), 77);
  h.store->clear();
  EXPECT_EQ(h.store->size(), 0u);
}

TEST(Cq, PackedSizeAndExactMemoryBytes) {
  // §3: T·(d/c)·b/8 bytes of indices per head (b = 8: one byte per group); the block adds the
  // int32 position of every slot (BB-14), regions 64-byte aligned.
  using Q = kq::Cq8c8b;
  const int d = 128;
  auto cfg = make_cfg<Q>(d, qc::KeySpace::kPreRope, 0);
  const std::size_t idx_bytes = 128 * (d / 8) * 8 / 8;  // 128 slots per block
  EXPECT_EQ(Q::Store::block_bytes(d, cfg), 128 * 4 + 2 * idx_bytes);
  Harness<Q> h(d, cfg, 1000);
  const std::size_t fixed = (d / 8) * 256 * sizeof(float) + (3 * d / 2) * sizeof(double);  // table + RoPE θ and unit steps
  EXPECT_EQ(Q::Store::fixed_bytes(d, cfg), fixed);
  EXPECT_EQ(h.store->memory_bytes(), fixed);
  const auto k = randn(300 * d, 81), v = randn(300 * d, 82);
  std::vector<std::int32_t> pos(300);
  for (int t = 0; t < 300; ++t) pos[t] = t;
  h.append(k, v, pos);
  EXPECT_EQ(h.store->memory_bytes(), 3 * (128 * 4 + 2 * idx_bytes) + fixed);  // 300 slots → 3 blocks
  EXPECT_EQ(h.pool.num_used(), 3u);
  // 10-bit indices are stored as uint16; with a window, its fp16 rows are counted.
  using Q10 = kq::Cq8c10b;
  auto cfg10 = make_cfg<Q10>(64, qc::KeySpace::kPostRope, 32);
  EXPECT_EQ(Q10::Store::block_bytes(64, cfg10), 128 * 4 + 2 * (8 * 128 * 2));
  Harness<Q10> h10(64, cfg10, 100);
  EXPECT_EQ(h10.store->memory_bytes(),
            Q10::Store::fixed_bytes(64, cfg10));
  EXPECT_EQ(Q10::Store::fixed_bytes(64, cfg10), 2 * 32 * 64 * 2 + 32 * 2 + 32 * 2 + 8 * 1024 * 4);
}

TEST(Cq, BadConfigsAreRejected) {
  using Q = kq::Cq8c8b;
  CacheShape shape{2, 4, 2, 128, 256};
  Q::Config cfg;
  kvtest::expect_invalid_argument([&] { cfg.validate(shape); }, "codebooks");
  cfg.codebooks = kq::cq_gaussian_codebooks(128, 4, 8);
  kvtest::expect_invalid_argument([&] { cfg.validate(shape); }, "codebooks");  // 4c8b set for an 8c8b policy
  cfg.codebooks = kq::cq_gaussian_codebooks(64, 8, 8);
  kvtest::expect_invalid_argument([&] { cfg.validate(shape); }, "codebooks.head_dim");
  cfg.codebooks = kq::cq_gaussian_codebooks(128, 8, 8);
  cfg.rope.head_dim = 64;
  kvtest::expect_invalid_argument([&] { cfg.validate(shape); }, "rope.head_dim");
  cfg.rope.head_dim = 128;
  cfg.rope.base = 0.5;
  kvtest::expect_invalid_argument([&] { cfg.validate(shape); }, "base");
  cfg.rope.base = 10000.0;
  cfg.validate(shape);
  cfg.recent_window = 5000;
  kvtest::expect_invalid_argument([&] { cfg.validate(shape); }, "recent_window");
  cfg.recent_window = 0;
  // per-stream codebooks of the wrong model shape
  const std::size_t per = 128 * 256;
  cfg.codebooks = std::make_shared<kq::CqCodebooks>(3, 2, 128, 8, 8, std::vector<float>(6 * per, 0.0f),
                                                    std::vector<float>(6 * per, 0.0f));
  kvtest::expect_invalid_argument([&] { cfg.validate(shape); }, "codebooks.layers x heads");
  // per-stream codebooks need the (layer, kv_head) constructor
  cfg.codebooks = std::make_shared<kq::CqCodebooks>(2, 2, 128, 8, 8, std::vector<float>(4 * per, 0.0f),
                                                    std::vector<float>(4 * per, 0.0f));
  cfg.validate(shape);
  BlockPool pool(Q::Store::block_bytes(128, cfg), 2);
  kvtest::expect_invalid_argument([&] { Q::Store s(128, cfg, BlockTable(&pool, 2)); }, "codebooks");
  // codebook geometry
  kvtest::expect_invalid_argument([&] { kq::CqCodebooks(1, 1, 10, 4, 8, {}, {}); }, "head_dim");
  kvtest::expect_invalid_argument([&] { kq::CqCodebooks(1, 1, 8, 4, 2, std::vector<float>(31), std::vector<float>(32)); },
                                  "keys.size()");
  kvtest::expect_invalid_argument([&] { kq::cq_gaussian_codebooks(64, 8, 8, -1.0f); }, "sigma_k");
  kvtest::expect_invalid_argument(
      [&] {
        std::vector<float> x(10 * 8);
        kq::cq_fit_codebooks(1, 1, 8, 4, 8, {{x.data(), x.data(), 10}});
      },
      "n");
}

TEST(Cq, PerStreamCodebooksAreSelectedByLayerAndHead) {
  using Q = kq::Cq<4, 3>;
  const int d = 16;
  const std::size_t n = 64;
  std::vector<std::vector<float>> data;
  std::vector<kq::CqStreamSamples> s;
  for (int i = 0; i < 4; ++i) data.push_back(randn(n * d, 200 + i, 1.0f + i));
  for (int i = 0; i < 4; ++i) s.push_back({data[i].data(), data[i].data(), n});
  Q::Config cfg;
  cfg.codebooks = kq::cq_fit_codebooks(2, 2, d, 4, 3, s);
  cfg.key_space = qc::KeySpace::kPostRope;
  for (int l = 0; l < 2; ++l)
    for (int hh = 0; hh < 2; ++hh) {
      Harness<Q> h(d, cfg, 8, l, hh);
      const auto x = randn(d, 300 + l);
      h.append(x, x, {0});
      std::vector<float> k(d), v(d);
      h.store->read(0, 1, k.data(), v.data(), d, nullptr);
      const auto want = ref_vq(x.data(), d, 4, cfg.codebooks->keys(l, hh), 8);
      for (int c = 0; c < d; ++c) EXPECT_EQ(k[c], static_cast<float>(want[c]));
    }
}

}  // namespace
