// SPDX-License-Identifier: Apache-2.0
// Tests of quant::KVQuant (methods/quantization.md §2): every test oracle of §2 against an
// independent double-precision re-implementation in this file (nearest-centroid quantization,
// outlier rules, RoPE in double, softmax attention), the calibration API and its file round trip,
// the data-free fallback, exact memory accounting and Config errors.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "kvcompress/policies/quant/kvquant.hpp"
#include "reference/float16_reference.hpp"
#include "support/expect_invalid.hpp"

namespace {

using namespace kvcompress;
using quant::KVQuant;
using quant::KVQuantCalibration;

// ---------------------------------------------------------------- independent reference ----

float f16r(float x) { return f16_bits_to_f32(f32_to_f16_bits(x)); }

// Rounds to a value exactly representable in fp16 (so "exact" outliers/sinks compare bitwise).
std::vector<float> fp16_data(std::size_t n, std::uint32_t seed, float scale = 1.0f, float spike = 0.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x(n);
  for (auto& v : x) {
    v = nd(g) * scale;
    if (spike > 0.0f && u(g) < 0.02f) v *= spike;
    v = f16r(v);
  }
  return x;
}

struct RefNorm {
  double off, hr;
};
RefNorm ref_norm(double lo, double hi) { return {f16r(static_cast<float>(0.5 * (hi + lo))), f16r(static_cast<float>(0.5 * (hi - lo)))}; }

// Nearest LUT index in normalized space, ties → lowest.
int ref_nearest(const std::vector<float>& lut, double n) {
  int best = 0;
  for (int i = 1; i < static_cast<int>(lut.size()); ++i)
    if (std::fabs(lut[i] - n) < std::fabs(lut[best] - n)) best = i;
  return best;
}

// Reference dequantization of one calibrated key (pre-RoPE), uncapped outliers.
std::vector<double> ref_key_calibrated(const float* k, int d, const KVQuantCalibration& c, int layer, int head,
                                       int* n_out = nullptr) {
  std::vector<double> y(d);
  std::vector<float> lut(c.key_lut(layer), c.key_lut(layer) + c.levels());
  int cnt = 0;
  for (int ch = 0; ch < d; ++ch) {
    const std::size_t i = c.channel_index(layer, head) + ch;
    const RefNorm nr = ref_norm(c.t_lo[i], c.t_hi[i]);
    const bool out = k[ch] > c.t_hi[i] || k[ch] < c.t_lo[i] || (nr.hr == 0 && k[ch] != nr.off);
    if (out) {
      y[ch] = f16r(k[ch]);
      ++cnt;
    } else {
      const double n = nr.hr > 0 ? (k[ch] - nr.off) / nr.hr : 0.0;
      y[ch] = static_cast<float>(lut[ref_nearest(lut, n)] * static_cast<float>(nr.hr) + static_cast<float>(nr.off));
    }
  }
  if (n_out) *n_out = cnt;
  return y;
}

// Reference of the dynamic per-token rule (values; data-free keys): per_side largest and
// smallest are outliers, range of the rest.
std::vector<double> ref_dynamic(const float* x, int d, const std::vector<float>& lut, double p,
                                std::vector<int>* outliers = nullptr) {
  const int per_side = static_cast<int>(std::floor(p / 2 * (d - 1))) + 1;
  std::vector<int> idx(d);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return x[a] > x[b]; });
  std::vector<char> out(d, 0);
  for (int i = 0; i < per_side && i < d; ++i) out[idx[i]] = 1;
  std::vector<int> rest;
  for (int i = 0; i < d; ++i)
    if (!out[i]) rest.push_back(i);
  std::stable_sort(rest.begin(), rest.end(), [&](int a, int b) { return x[a] < x[b]; });
  for (int i = 0; i < per_side && i < static_cast<int>(rest.size()); ++i) out[rest[i]] = 1;
  double lo = 0, hi = 0;
  bool any = false;
  for (int i = 0; i < d; ++i)
    if (!out[i]) {
      lo = any ? std::min<double>(lo, x[i]) : x[i];
      hi = any ? std::max<double>(hi, x[i]) : x[i];
      any = true;
    }
  const RefNorm nr = ref_norm(lo, hi);
  std::vector<double> y(d);
  if (outliers) outliers->clear();
  for (int i = 0; i < d; ++i) {
    if (out[i]) {
      y[i] = f16r(x[i]);
      if (outliers) outliers->push_back(i);
    } else {
      const double n = nr.hr > 0 ? (x[i] - nr.off) / nr.hr : 0.0;
      y[i] = static_cast<float>(lut[ref_nearest(lut, n)] * static_cast<float>(nr.hr) + static_cast<float>(nr.off));
    }
  }
  return y;
}

// RoPE in double, rotate-half or interleaved, base / linear scaling.
void ref_rope(std::vector<double>& x, double pos, double base = 10000.0, bool interleaved = false,
              double linear = 1.0) {
  const int d = static_cast<int>(x.size());
  for (int i = 0; i < d / 2; ++i) {
    const double th = std::pow(base, -2.0 * i / d) * pos / linear;
    const int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + d / 2;
    const double xa = x[a], xb = x[b];
    x[a] = xa * std::cos(th) - xb * std::sin(th);
    x[b] = xa * std::sin(th) + xb * std::cos(th);
  }
}

// Standard normal inverse CDF by Newton on erf (test's own implementation).
double ref_ppf(double p) {
  double x = 0.0;
  for (int it = 0; it < 100; ++it) {
    const double cdf = 0.5 * (1.0 + std::erf(x / std::sqrt(2.0)));
    const double pdf = std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
    x -= (cdf - p) / pdf;
  }
  return x;
}

std::vector<float> ref_nf(int bits) {
  const double delta = 0.5 * (1.0 / 32 + 1.0 / 30);
  const int h = 1 << (bits - 1);
  std::vector<double> neg, pos;
  for (int i = 0; i < h; ++i) neg.push_back(ref_ppf(delta + (0.5 - delta) * i / (h - 1)));
  for (int i = 0; i <= h; ++i) pos.push_back(ref_ppf(0.5 + (0.5 - delta) * i / h));
  std::vector<float> lut;
  for (double v : neg) lut.push_back(static_cast<float>(v / std::fabs(neg[0])));
  for (int i = 1; i <= h; ++i) lut.push_back(static_cast<float>(pos[i] / pos[h]));
  return lut;
}

// Single-head attention in double over given (post-RoPE) keys and values.
std::vector<double> ref_attention(const std::vector<std::vector<double>>& k, const std::vector<std::vector<double>>& v,
                                  const float* q, int d, double scale) {
  std::vector<double> lg(k.size());
  double m = -1e300;
  for (std::size_t j = 0; j < k.size(); ++j) {
    double s = 0;
    for (int c = 0; c < d; ++c) s += q[c] * k[j][c];
    lg[j] = s * scale;
    m = std::max(m, lg[j]);
  }
  double sum = 0;
  std::vector<double> out(d, 0.0);
  for (std::size_t j = 0; j < k.size(); ++j) {
    const double w = std::exp(lg[j] - m);
    sum += w;
    for (int c = 0; c < d; ++c) out[c] += w * v[j][c];
  }
  for (auto& o : out) o /= sum;
  return out;
}

// A hand-made calibration with random LUT and thresholds (independent of calibrate_kvquant).
std::shared_ptr<KVQuantCalibration> random_calibration(int bits, int L, int H, int d, std::uint32_t seed) {
  auto c = std::make_shared<KVQuantCalibration>();
  c->bits = bits;
  c->num_layers = L;
  c->num_kv_heads = H;
  c->head_dim = d;
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f), w(1.0f, 3.0f);
  for (int l = 0; l < L; ++l)
    for (auto* lut : {&c->lut_k, &c->lut_v}) {
      std::vector<float> e(std::size_t{1} << bits);
      for (auto& x : e) x = u(g);
      std::sort(e.begin(), e.end());
      lut->insert(lut->end(), e.begin(), e.end());
    }
  for (int i = 0; i < L * H * d; ++i) {
    const float mid = 0.5f * u(g), half = w(g);
    c->t_lo.push_back(mid - half);
    c->t_hi.push_back(mid + half);
  }
  return c;
}

template <int B>
struct StoreBox {
  using Q = KVQuant<B>;
  typename Q::Config cfg;
  int d;
  BlockPool pool;
  std::unique_ptr<typename Q::Store> s;
  StoreBox(typename Q::Config c, int dim, std::size_t cap, int layer = -1, int head = -1)
      : cfg(std::move(c)), d(dim) {
    cfg.rope.head_dim = static_cast<std::size_t>(dim);
    pool = BlockPool(Q::Store::block_bytes(dim, cfg), Q::Store::max_blocks(cap, cfg));
    BlockTable t(&pool, Q::Store::max_blocks(cap, cfg));
    if (layer < 0)
      s = std::make_unique<typename Q::Store>(dim, cfg, std::move(t));
    else
      s = std::make_unique<typename Q::Store>(dim, cfg, std::move(t), layer, head);
  }
  void append(const std::vector<float>& k, const std::vector<float>& v, const std::vector<std::int32_t>& pos) {
    TokenInfo info;
    info.pos = pos.data();
    s->append(k.data(), v.data(), static_cast<std::size_t>(d), pos.size(), info, nullptr);
  }
};

// ------------------------------------------------------------------------------ tests ----

// §2 worked example: 2-bit LUT [−0.9, −0.3, 0.25, 0.85], t_lo = 0.8, t_hi = 3.2.
TEST(KVQuant, WorkedExample) {
  auto c = std::make_shared<KVQuantCalibration>();
  c->bits = 2;
  c->num_layers = c->num_kv_heads = 1;
  c->head_dim = 2;
  c->lut_k = {-0.9f, -0.3f, 0.25f, 0.85f};
  c->lut_v = c->lut_k;
  c->t_lo = {0.8f, 0.8f};
  c->t_hi = {3.2f, 3.2f};
  KVQuant<2>::Config cfg;
  cfg.calibration = c;
  cfg.n_sink = 0;
  StoreBox<2> b(cfg, 2, 8);
  b.append({1.0f, 2.0f, 3.0f, 2.0f, 2.2f, 2.0f, 9.0f, 2.0f}, std::vector<float>(8, 1.0f), {0, 1, 2, 3});
  const double expect[4] = {0.92, 3.02, 2.30, 9.0};
  for (std::size_t j = 0; j < 4; ++j) {
    float k[2], v[2];
    b.s->read_pre_rope(j, k, v);
    // hr is stored in fp16 (BB-1 [rec]): 1.2 → 1.2001953, so the hand values hold to 3e-4.
    EXPECT_NEAR(k[0], expect[j], 3e-4) << j;
    EXPECT_NEAR(k[1], 2.3, 3e-4);  // x = offset: n = 0 → nearest entry 0.25 → 2.3
  }
  EXPECT_EQ(b.s->key_outliers(3), 1u);
  float k[2], v[2];
  b.s->read_pre_rope(3, k, v);
  EXPECT_EQ(k[0], 9.0f);  // outlier exact
  // Non-outlier error bound 1.2·max(0.3, 0.1, 0.15) = 0.36.
  for (float x : {0.81f, 1.3f, 1.9f, 2.6f, 3.19f}) {
    StoreBox<2> b2(cfg, 2, 4);
    b2.append({x, 2.0f}, {1.0f, 1.0f}, {5});
    b2.s->read_pre_rope(0, k, v);
    EXPECT_LE(std::fabs(k[0] - x), 0.36 + 1e-6) << x;
  }
}

// Non-outlier error = nearest-centroid error and within the §2 bound; outliers and sinks exact.
TEST(KVQuant, CalibratedKeysMatchNearestCentroidAndBound) {
  const int d = 64, T = 150;
  auto cal = random_calibration(3, 1, 1, d, 7);
  KVQuant<3>::Config cfg;
  cfg.calibration = cal;
  cfg.key_outlier_cap = d;  // uncapped: the oracle is the plain strict threshold rule
  StoreBox<3> b(cfg, d, T);
  auto k = fp16_data(T * d, 1, 1.2f, 4.0f), v = fp16_data(T * d, 2);
  std::vector<std::int32_t> pos(T);
  std::iota(pos.begin(), pos.end(), 0);
  b.append(k, v, pos);
  std::vector<float> lut(cal->lut_k.begin(), cal->lut_k.end());
  double gap = 0;
  for (std::size_t i = 1; i < lut.size(); ++i) gap = std::max<double>(gap, lut[i] - lut[i - 1]);
  const double m = std::max({gap / 2, 1.0 + lut.front(), 1.0 - lut.back()});
  std::vector<float> kk(d), vv(d);
  std::size_t outliers = 0;
  for (int t = 0; t < T; ++t) {
    b.s->read_pre_rope(static_cast<std::size_t>(t), kk.data(), vv.data());
    if (t == 0) {  // sink (n_sink = 1): bit-exact
      for (int c = 0; c < d; ++c) {
        EXPECT_EQ(kk[c], k[c]);
        EXPECT_EQ(vv[c], v[c]);
      }
      EXPECT_TRUE(b.s->is_sink(0));
      continue;
    }
    int cnt = 0;
    const auto ref = ref_key_calibrated(&k[t * d], d, *cal, 0, 0, &cnt);
    EXPECT_EQ(b.s->key_outliers(static_cast<std::size_t>(t)), static_cast<std::size_t>(cnt));
    outliers += cnt;
    for (int c = 0; c < d; ++c) {
      EXPECT_NEAR(kk[c], ref[c], 1e-6) << t << "," << c;
      const float x = k[t * d + c];
      if (x > cal->t_hi[c] || x < cal->t_lo[c]) {
        EXPECT_EQ(kk[c], x);
      } else {
        const RefNorm nr = ref_norm(cal->t_lo[c], cal->t_hi[c]);
        EXPECT_LE(std::fabs(kk[c] - x), nr.hr * m + 1e-5);
      }
    }
  }
  EXPECT_GT(outliers, 0u);
}

// Value outlier count per token = 2·(⌊(p/2)(n_v − 1)⌋ + 1) for distinct values; they are the
// extremes and exact; the rest equals the reference's nearest-centroid reconstruction.
TEST(KVQuant, ValueOutlierCountAndReconstruction) {
  for (float p : {0.01f, 0.1f}) {
    const int d = 128, T = 20;
    auto cal = random_calibration(4, 1, 1, d, 3);
    KVQuant<4>::Config cfg;
    cfg.calibration = cal;
    cfg.outlier_fraction = p;
    cfg.n_sink = 0;
    StoreBox<4> b(cfg, d, T);
    auto k = fp16_data(T * d, 5), v = fp16_data(T * d, 6, 1.0f, 10.0f);
    std::vector<std::int32_t> pos(T);
    std::iota(pos.begin(), pos.end(), 0);
    b.append(k, v, pos);
    const std::size_t expect = 2 * (static_cast<std::size_t>(std::floor(p / 2 * (d - 1))) + 1);
    EXPECT_EQ(expect, p == 0.01f ? 2u : 14u);
    std::vector<float> lut(cal->lut_v.begin(), cal->lut_v.end()), kk(d), vv(d);
    for (int t = 0; t < T; ++t) {
      EXPECT_EQ(b.s->value_outliers(static_cast<std::size_t>(t)), expect);
      std::vector<int> outl;
      const auto ref = ref_dynamic(&v[t * d], d, lut, p, &outl);
      EXPECT_EQ(outl.size(), expect);
      b.s->read_pre_rope(static_cast<std::size_t>(t), kk.data(), vv.data());
      for (int c = 0; c < d; ++c) EXPECT_NEAR(vv[c], ref[c], 1e-5) << t << "," << c;
      for (int c : outl) EXPECT_EQ(vv[c], v[t * d + c]);
    }
  }
  // n_v = 4096 gives 42 (pure count rule).
  EXPECT_EQ(2 * (static_cast<int>(std::floor(0.005 * 4095)) + 1), 42);
}

// RoPE commutation: read() = RoPE(dequant(k_pre)) at the original positions (with gaps), in both
// pair layouts and with linear scaling; and ≈ RoPE(k_pre) within the quantization error.
TEST(KVQuant, RopeCommutesWithOriginalPositions) {
  const int d = 32, T = 12;
  auto cal = random_calibration(4, 1, 1, d, 11);
  for (int variant = 0; variant < 3; ++variant) {
    KVQuant<4>::Config cfg;
    cfg.calibration = cal;
    cfg.key_outlier_cap = d;
    cfg.rope.base = variant == 1 ? 500000.0 : 10000.0;
    cfg.rope.layout = variant == 2 ? quant::common::RopeLayout::kInterleaved : quant::common::RopeLayout::kRotateHalf;
    if (variant == 2) {
      cfg.rope.scaling = quant::common::RopeScaling::kLinear;
      cfg.rope.factor = 4.0;
    }
    StoreBox<4> b(cfg, d, T);
    auto k = fp16_data(T * d, 21), v = fp16_data(T * d, 22);
    std::vector<std::int32_t> pos;
    for (int t = 0; t < T; ++t) pos.push_back(t == 0 ? 0 : 3 + 17 * t + t * t);
    b.append(k, v, pos);
    std::vector<float> kr(T * d), vr(T * d);
    b.s->read(0, T, kr.data(), vr.data(), d, nullptr);
    for (int t = 1; t < T; ++t) {
      EXPECT_EQ(b.s->position(static_cast<std::size_t>(t)), pos[t]);
      auto ref = ref_key_calibrated(&k[t * d], d, *cal, 0, 0);
      ref_rope(ref, pos[t], cfg.rope.base, variant == 2, variant == 2 ? 4.0 : 1.0);
      std::vector<double> exact(k.begin() + t * d, k.begin() + (t + 1) * d);
      ref_rope(exact, pos[t], cfg.rope.base, variant == 2, variant == 2 ? 4.0 : 1.0);
      double qerr = 0, rerr = 0;
      for (int c = 0; c < d; ++c) {
        EXPECT_NEAR(kr[t * d + c], ref[c], 2e-5) << variant << "," << t << "," << c;
        qerr += std::pow(ref[c] - exact[c], 2);
      }
      auto pre = ref_key_calibrated(&k[t * d], d, *cal, 0, 0);
      for (int c = 0; c < d; ++c) rerr += std::pow(pre[c] - k[t * d + c], 2);
      EXPECT_NEAR(std::sqrt(qerr), std::sqrt(rerr), 1e-4);  // rotation preserves the error norm
    }
  }
}

// Attention of the store's fused kernels = double attention over RoPE(dequantized keys).
TEST(KVQuant, StoreAttentionMatchesReference) {
  const int d = 48, T = 140, rows = 3;
  auto cal = random_calibration(3, 1, 1, d, 31);
  for (bool calibrated : {true, false}) {
    KVQuant<3>::Config cfg;
    if (calibrated) cfg.calibration = cal;
    cfg.key_outlier_cap = calibrated ? d : 0;
    StoreBox<3> b(cfg, d, T);
    auto k = fp16_data(T * d, 41, 1.0f, 5.0f), v = fp16_data(T * d, 42);
    std::vector<std::int32_t> pos(T);
    for (int t = 0; t < T; ++t) pos[t] = 2 * t + (t > 50 ? 9 : 0);
    b.append(k, v, pos);
    auto nf = ref_nf(3);
    std::vector<std::vector<double>> K, V;
    for (int t = 0; t < T; ++t) {
      std::vector<double> kk, vv;
      if (t == 0) {
        kk.assign(k.begin(), k.begin() + d);
        vv.assign(v.begin(), v.begin() + d);
      } else {
        kk = calibrated ? ref_key_calibrated(&k[t * d], d, *cal, 0, 0) : ref_dynamic(&k[t * d], d, nf, 0.01);
        vv = ref_dynamic(&v[t * d], d, calibrated ? cal->lut_v : nf, 0.01);
      }
      ref_rope(kk, pos[t]);
      K.push_back(kk);
      V.push_back(vv);
    }
    auto q = fp16_data(rows * d, 43);
    std::vector<float> lg(rows * T), out(rows * d, 0.0f);
    b.s->logits(q.data(), rows, lg.data(), T);
    std::vector<float> p(rows * T);
    for (int r = 0; r < rows; ++r) {
      float m = *std::max_element(&lg[r * T], &lg[r * T] + T);
      double s = 0;
      for (int j = 0; j < T; ++j) s += (p[r * T + j] = std::exp(lg[r * T + j] - m));
      for (int j = 0; j < T; ++j) p[r * T + j] = static_cast<float>(p[r * T + j] / s);
    }
    b.s->accumulate(p.data(), T, rows, out.data());
    for (int r = 0; r < rows; ++r) {
      auto ref = ref_attention(K, V, &q[r * d], d, 1.0);
      for (int c = 0; c < d; ++c) EXPECT_NEAR(out[r * d + c], ref[c], 2e-4) << calibrated << "," << r << "," << c;
    }
  }
}

// The data-free datatype is the reference's NF signposts.
TEST(KVQuant, DataFreeNfLut) {
  for (int bits : {2, 3, 4}) {
    auto lut = quant::nf_lut(bits), ref = ref_nf(bits);
    ASSERT_EQ(lut.size(), std::size_t{1} << bits);
    for (std::size_t i = 0; i < lut.size(); ++i) EXPECT_NEAR(lut[i], ref[i], 1e-6) << bits << "," << i;
    EXPECT_FLOAT_EQ(lut.front(), -1.0f);
    EXPECT_FLOAT_EQ(lut.back(), 1.0f);
    EXPECT_EQ(lut[lut.size() / 2 - 1], 0.0f);
    EXPECT_TRUE(std::is_sorted(lut.begin(), lut.end()));
  }
  // 2-bit by hand: Φ⁻¹(1 − δ) = 1.8481, Φ⁻¹(0.5 + (0.5 − δ)/2) = 0.6245 → 0.3379.
  EXPECT_NEAR(quant::nf_lut(2)[2], 0.6245 / 1.8481, 1e-3);
}

// Calibration: thresholds are the per-channel percentiles (sinks excluded by default, included
// with sink_in_thresholds), LUTs sorted; the save/load round trip reproduces the object and the
// cache's outputs; Q-Norm restores mean/std; Fisher weights change the fit.
TEST(KVQuant, CalibrationThresholdsAndRoundTrip) {
  const int H = 2, d = 8, T = 400;
  auto k0 = fp16_data(T * H * d, 51, 2.0f, 6.0f), v0 = fp16_data(T * H * d, 52);
  k0[0] = 1000.0f;  // sink token outlier: excluded from thresholds by default
  std::vector<quant::KVQuantLayerActivations> layers(2);
  for (auto& a : layers) {
    a.k = k0.data();
    a.v = v0.data();
    a.tokens = T;
  }
  quant::KVQuantCalibrationOptions o;
  o.bits = 3;
  o.outlier_fraction = 0.02f;
  auto cal = quant::calibrate_kvquant(H, d, layers, o);
  ASSERT_EQ(cal.num_layers, 2);
  // Percentiles by hand (numpy linear), tokens 1..T−1.
  for (int h = 0; h < H; ++h)
    for (int c = 0; c < d; ++c) {
      std::vector<double> col;
      for (int t = 1; t < T; ++t) col.push_back(k0[(t * H + h) * d + c]);
      std::sort(col.begin(), col.end());
      auto qt = [&](double q) {
        const double pos = (col.size() - 1) * q;
        const std::size_t lo = static_cast<std::size_t>(pos);
        return col[lo] + (pos - lo) * (col[std::min(lo + 1, col.size() - 1)] - col[lo]);
      };
      EXPECT_NEAR(cal.t_lo[cal.channel_index(1, h) + c], qt(0.01), 1e-5);
      EXPECT_NEAR(cal.t_hi[cal.channel_index(1, h) + c], qt(0.99), 1e-5);
    }
  EXPECT_TRUE(std::is_sorted(cal.lut_k.begin(), cal.lut_k.begin() + 8));
  auto with_sink = o;
  with_sink.sink_in_thresholds = true;
  EXPECT_GT(quant::calibrate_kvquant(H, d, layers, with_sink).t_hi[0], cal.t_hi[0]);

  const std::string path = ::testing::TempDir() + "kvquant_calib_test.bin";
  cal.save(path);
  auto back = KVQuantCalibration::load(path);
  EXPECT_EQ(back.bits, 3);
  EXPECT_EQ(back.lut_k, cal.lut_k);
  EXPECT_EQ(back.lut_v, cal.lut_v);
  EXPECT_EQ(back.t_lo, cal.t_lo);
  EXPECT_EQ(back.t_hi, cal.t_hi);
  // Another method's file is rejected.
  auto set = cal.to_set();
  set.method = "cq";
  calib::save(set, path);
  EXPECT_THROW(KVQuantCalibration::load(path), InvalidArgument);
  std::remove(path.c_str());
  // A missing tensor is named.
  calib::CalibrationSet partial;
  partial.method = "kvquant";
  partial.add("lut_k", {2, 8}, std::vector<float>(16, 0.0f));
  partial.add("t_lo", {2, 2, 8}, std::vector<float>(32, 0.0f));
  try {
    KVQuantCalibration::from_set(partial);
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("lut_v"), std::string::npos);
  }

  // The loaded calibration drives a store identically.
  KVQuant<3>::Config a, bb;
  a.calibration = std::make_shared<KVQuantCalibration>(cal);
  bb.calibration = std::make_shared<KVQuantCalibration>(back);
  StoreBox<3> sa(a, d, 16, 1, 1), sb(bb, d, 16, 1, 1);
  auto k = fp16_data(16 * d, 55, 2.0f, 6.0f), v = fp16_data(16 * d, 56);
  std::vector<std::int32_t> pos(16);
  std::iota(pos.begin(), pos.end(), 0);
  sa.append(k, v, pos);
  sb.append(k, v, pos);
  std::vector<float> ka(16 * d), va(16 * d), kb(16 * d), vb(16 * d);
  sa.s->read(0, 16, ka.data(), va.data(), d, nullptr);
  sb.s->read(0, 16, kb.data(), vb.data(), d, nullptr);
  EXPECT_EQ(ka, kb);
  EXPECT_EQ(va, vb);
  // Stream (1, 1) uses layer 1 / head 1 thresholds: compare with the reference at those.
  std::vector<float> kp(d), vp(d);
  sa.s->read_pre_rope(5, kp.data(), vp.data());
  auto ref = ref_key_calibrated(&k[5 * d], d, cal, 1, 1);
  int cnt = 0;
  ref_key_calibrated(&k[5 * d], d, cal, 1, 1, &cnt);
  if (static_cast<std::size_t>(cnt) <= sa.s->format().key_cap) {
    for (int c = 0; c < d; ++c) EXPECT_NEAR(kp[c], ref[c], 1e-5);
  }
}

// Fisher plumbing (BB-8): weights F with fisher_scale_sq = false and F ≡ 1 reproduce the
// unweighted fit exactly; the paper weight F·hr² (default) weighs channels by their range, which
// moves the key LUT when channel ranges differ; the value LUT follows fisher_v.
TEST(KVQuant, FisherWeights) {
  const int H = 1, d = 8, T = 300;
  auto k = fp16_data(T * d, 141), v = fp16_data(T * d, 142);
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < d; ++c) k[t * d + c] = f16r(k[t * d + c] * (c < 4 ? 0.2f : 5.0f) + (c % 2 ? 0.3f : -0.1f) * std::fabs(k[t * d + c]));
  std::vector<float> ones(T * d, 1.0f), skew(T * d);
  for (int i = 0; i < T * d; ++i) skew[i] = v[i] > 0 ? 50.0f : 1.0f;
  quant::KVQuantLayerActivations a;
  a.k = k.data();
  a.v = v.data();
  a.tokens = T;
  quant::KVQuantCalibrationOptions o;
  o.bits = 2;
  const auto plain = quant::calibrate_kvquant(H, d, {a}, o);
  a.fisher_k = ones.data();
  a.fisher_v = ones.data();
  o.fisher_scale_sq = false;
  const auto f1 = quant::calibrate_kvquant(H, d, {a}, o);
  EXPECT_EQ(f1.lut_k, plain.lut_k);
  EXPECT_EQ(f1.lut_v, plain.lut_v);
  EXPECT_EQ(f1.t_lo, plain.t_lo);
  o.fisher_scale_sq = true;
  const auto f2 = quant::calibrate_kvquant(H, d, {a}, o);
  EXPECT_NE(f2.lut_k, plain.lut_k);
  a.fisher_v = skew.data();
  o.fisher_scale_sq = false;
  const auto f3 = quant::calibrate_kvquant(H, d, {a}, o);
  EXPECT_NE(f3.lut_v, plain.lut_v);
  EXPECT_EQ(f3.lut_k, plain.lut_k);
}

TEST(KVQuant, QNormRestoresMeanAndStd) {
  std::mt19937 g(3);
  std::normal_distribution<float> nd(0.0f, 0.35f);
  std::vector<float> x(3000), w(3000, 1.0f);
  for (auto& v : x) v = std::clamp(nd(g), -1.0f, 1.0f);
  quant::KVQuantCalibrationOptions o;
  o.bits = 2;
  auto plain = quant::detail::kvq_fit_lut(x, w, o, "x");
  o.q_norm = true;
  auto qn = quant::detail::kvq_fit_lut(x, w, o, "x");
  double m1 = 0, s1 = 0, m2 = 0, s2 = 0;
  for (float v : x) m1 += v;
  m1 /= x.size();
  for (float v : x) s1 += (v - m1) * (v - m1);
  s1 = std::sqrt(s1 / x.size());
  std::vector<double> qv;
  for (float v : x) qv.push_back(qn[ref_nearest(plain, v)]);
  for (double v : qv) m2 += v;
  m2 /= qv.size();
  for (double v : qv) s2 += (v - m2) * (v - m2);
  s2 = std::sqrt(s2 / qv.size());
  EXPECT_NEAR(m2, m1, 1e-5);
  EXPECT_NEAR(s2, s1, 1e-5);
  // Fisher weights (here: heavy on positive samples) move the centroids.
  std::vector<float> fw(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) fw[i] = x[i] > 0 ? 100.0f : 1.0f;
  o.q_norm = false;
  auto weighted = quant::detail::kvq_fit_lut(x, fw, o, "x");
  EXPECT_NE(weighted, plain);
}

// Reference-compatibility flags: residual encoding reconstructs dense + sparse ≈ x; zero-code
// reconstructs x + LUT[2^b/2 − 1]·hr; cap_outliers keeps ⌊(p/2)d⌋ + 1 per side.
TEST(KVQuant, ReferenceOutlierFlags) {
  const int d = 16;
  auto cal = random_calibration(4, 1, 1, d, 61);
  auto k = fp16_data(4 * d, 62, 1.0f, 8.0f), v = fp16_data(4 * d, 63);
  for (int c = 0; c < d; c += 3) k[d + c] = 40.0f + c;  // token 1: many outliers
  std::vector<std::int32_t> pos = {1, 2, 3, 4};
  for (auto enc : {quant::KVQuantOutlierEncoding::kRefResidual, quant::KVQuantOutlierEncoding::kRefZeroCode}) {
    KVQuant<4>::Config cfg;
    cfg.calibration = cal;
    cfg.key_outlier_cap = d;
    cfg.outlier_encoding = enc;
    StoreBox<4> b(cfg, d, 4);
    b.append(k, v, pos);
    std::vector<float> kk(d), vv(d);
    b.s->read_pre_rope(1, kk.data(), vv.data());
    for (int c = 0; c < d; ++c) {
      const float x = k[d + c];
      if (!(x > cal->t_hi[c] || x < cal->t_lo[c])) continue;
      const RefNorm nr = ref_norm(cal->t_lo[c], cal->t_hi[c]);
      if (enc == quant::KVQuantOutlierEncoding::kRefResidual)
        EXPECT_NEAR(kk[c], x, 0.02 + 1e-3 * std::fabs(x));  // fp16 residual
      else
        EXPECT_NEAR(kk[c], x + cal->lut_k[7] * nr.hr, 0.05);
    }
  }
  KVQuant<4>::Config cfg;
  cfg.calibration = cal;
  cfg.cap_outliers = true;
  cfg.outlier_fraction = 0.01f;
  StoreBox<4> b(cfg, d, 4);
  b.append(k, v, pos);
  EXPECT_EQ(b.s->format().key_cap, 2u);  // ⌊0.005·16⌋ + 1 = 1 per side
  EXPECT_LE(b.s->key_outliers(1), 2u);
  std::vector<float> kk(d), vv(d);
  b.s->read_pre_rope(1, kk.data(), vv.data());
  // The kept high-side outlier is the largest normalized value.
  int best = -1;
  double bn = 0;
  for (int c = 0; c < d; ++c) {
    const RefNorm nr = ref_norm(cal->t_lo[c], cal->t_hi[c]);
    const double n = (k[d + c] - nr.off) / nr.hr;
    if (k[d + c] > cal->t_hi[c] && (best < 0 || n > bn)) best = c, bn = n;
  }
  ASSERT_GE(best, 0);
  EXPECT_EQ(kk[best], k[d + best]);
}

// Exact memory: d = 128, nuq3, p = 1%: key row 6 + 48 + 4·4 = 70 B, value row 6 + 48 + 4·2 = 62 B;
// a 64-slot block = 64·70 + 64·62 = 8448 B; sink table 2·1·128·2 = 512 B.
TEST(KVQuant, ExactMemoryBytes) {
  const int d = 128;
  KVQuant<3>::Config cfg;
  cfg.calibration = random_calibration(3, 1, 1, d, 71);
  cfg.rope.head_dim = d;
  EXPECT_EQ(KVQuant<3>::Store::block_bytes(d, cfg), 8448u);
  EXPECT_EQ(KVQuant<3>::Store::fixed_bytes(d, cfg), 512u);
  // Stored bits per element: (70 + 62)·8 / 256 = 4.125 (b + 32·4/128 + 32·2/128 + 96/256).
  EXPECT_DOUBLE_EQ((70 + 62) * 8.0 / (2 * d), 3 + 32.0 * 4 / d / 2 + 32.0 * 2 / d / 2 + 96.0 / (2 * d));
  StoreBox<3> b(cfg, d, 200);
  EXPECT_EQ(b.s->memory_bytes(), 512u);
  auto k = fp16_data(65 * d, 72), v = fp16_data(65 * d, 73);
  std::vector<std::int32_t> pos(65);
  std::iota(pos.begin(), pos.end(), 0);
  b.append(k, v, pos);
  EXPECT_EQ(b.s->memory_bytes(), 2 * 8448u + 512u);
  b.s->truncate(64, nullptr);
  EXPECT_EQ(b.s->memory_bytes(), 8448u + 512u);
  // Through the cache: + 6 metadata bytes per slot (position, modality, alive).
  CacheShape s{1, 2, 1, d, 256};
  KVCache<Policy<evict::None, merge::None, KVQuant<3>>> cache(s, {{}, {}, cfg});
  std::vector<float> kc = fp16_data(70 * d, 74), vc = fp16_data(70 * d, 75);
  cache.append(0, kc.data(), vc.data(), 70);
  EXPECT_EQ(cache.memory_bytes(), 2 * 8448u + 512u + 70u * 6u);
  // Data-free: key row also holds (offset, hr) and 2 outliers: 6 + 4 + 48 + 8 = 66.
  KVQuant<3>::Config free_cfg;
  free_cfg.rope.head_dim = d;
  EXPECT_EQ(KVQuant<3>::Store::block_bytes(d, free_cfg), 64u * 66u + 64u * 62u);
}

// rope_keys: forward = RoPE in double at the given positions; inverse undoes it.
TEST(KVQuant, RopeKeysHelper) {
  const int d = 64;
  KVQuant<3>::Config cfg;
  cfg.rope.head_dim = d;
  auto k = fp16_data(3 * d, 131);
  auto r = k;
  const std::int32_t pos[3] = {0, 7, 1000};
  KVQuant<3>::rope_keys(cfg, r.data(), 3, d, pos, false);
  for (int j = 0; j < 3; ++j) {
    std::vector<double> e(k.begin() + j * d, k.begin() + (j + 1) * d);
    ref_rope(e, pos[j]);
    for (int c = 0; c < d; ++c) EXPECT_NEAR(r[j * d + c], e[c], 1e-5);
  }
  KVQuant<3>::rope_keys(cfg, r.data(), 3, d, pos, true);
  for (int i = 0; i < 3 * d; ++i) EXPECT_NEAR(r[i], k[i], 1e-5);
}

// Bad configs / calibrations → InvalidArgument naming the argument.
TEST(KVQuant, BadConfig) {
  CacheShape s{2, 4, 2, 64, 128};
  using Q = KVQuant<3>;
  auto check = [&](auto mutate, const std::string& arg) {
    Q::Config c;
    c.rope.head_dim = 64;
    mutate(c);
    kvtest::expect_invalid_argument([&] { c.validate(s); }, arg);
  };
  check([](Q::Config& c) { c.outlier_fraction = 0.0f; }, "outlier_fraction");
  check([](Q::Config& c) { c.n_sink = 65; }, "n_sink");
  check([](Q::Config& c) { c.key_outlier_cap = 65; }, "key_outlier_cap");
  check([](Q::Config& c) { c.value_scope = quant::KVQuantValueScope::kLayer; }, "value_scope");
  check([](Q::Config& c) { c.rope.head_dim = 128; }, "rope.head_dim");
  check([](Q::Config& c) { c.rope.base = 0.5; }, "rope.base");
  check([](Q::Config& c) { c.calibration = random_calibration(4, 2, 2, 64, 1); }, "calibration.bits");
  check([](Q::Config& c) { c.calibration = random_calibration(3, 3, 2, 64, 1); }, "calibration.num_layers");
  check([](Q::Config& c) { c.calibration = random_calibration(3, 2, 1, 64, 1); }, "calibration.num_kv_heads");
  check([](Q::Config& c) {
    auto cal = random_calibration(3, 2, 2, 64, 1);
    cal->t_lo[3] = cal->t_hi[3] + 1.0f;
    c.calibration = cal;
  }, "calibration.t_lo/t_hi");
  {
    CacheShape odd{1, 1, 1, 63, 16};
    Q::Config c;
    c.rope.head_dim = 63;
    kvtest::expect_invalid_argument([&] { c.validate(odd); }, "head_dim");
  }
  // A multi-stream calibration needs the stream id.
  Q::Config c;
  c.calibration = random_calibration(3, 2, 2, 64, 1);
  c.rope.head_dim = 64;
  BlockPool pool(Q::Store::block_bytes(64, c), 4);
  kvtest::expect_invalid_argument([&] { Q::Store st(64, c, BlockTable(&pool, 4)); }, "stream");
  kvtest::expect_invalid_argument([&] { Q::Store st(64, c, BlockTable(&pool, 4), 2, 0); }, "layer");
  // Calibration input errors.
  std::vector<quant::KVQuantLayerActivations> none;
  kvtest::expect_invalid_argument([&] { quant::calibrate_kvquant(1, 8, none); }, "layers");
  std::vector<float> x(4 * 8, 0.5f);
  std::vector<quant::KVQuantLayerActivations> one(1);
  one[0].k = x.data();
  one[0].v = x.data();
  one[0].tokens = 4;
  kvtest::expect_invalid_argument([&] { quant::calibrate_kvquant(1, 8, one); }, "layers[0] key samples");
  quant::KVQuantCalibrationOptions bad;
  bad.outlier_fraction = 0.7f;
  kvtest::expect_invalid_argument([&] { quant::calibrate_kvquant(1, 8, one, bad); }, "outlier_fraction");
}

// ------------------------------------------------------------------ through the cache ----

// Reference encoder for a whole stream (by original input and original position).
struct StreamRef {
  const KVQuantCalibration* cal;
  int d;
  std::vector<double> key(const float* k, std::int64_t pos, int layer, int head) const {
    std::vector<double> y;
    if (pos < 1)
      y.assign(k, k + d);
    else
      y = cal ? ref_key_calibrated(k, d, *cal, layer, head) : ref_dynamic(k, d, ref_nf(3), 0.01);
    ref_rope(y, static_cast<double>(pos));
    return y;
  }
  std::vector<double> value(const float* v, std::int64_t pos, int layer) const {
    if (pos < 1) return std::vector<double>(v, v + d);
    return ref_dynamic(v, d, cal ? std::vector<float>(cal->value_lut(layer), cal->value_lut(layer) + 8) : ref_nf(3), 0.01);
  }
};

// Decode through KVCache with eviction (positions get gaps): every step's attention output
// equals the double reference over RoPE(dequantized keys) at the surviving original positions.
template <class Evict>
void run_cache_decode(typename Evict::Config ecfg, bool calibrated) {
  const int d = 64, Hq = 2, Hkv = 1, prompt = 40, steps = 60;
  CacheShape s{1, Hq, Hkv, d, 128};
  auto cal = random_calibration(3, 1, 1, d, 81);
  KVQuant<3>::Config qc;
  qc.rope.head_dim = d;
  if (calibrated) {
    qc.calibration = cal;
    qc.key_outlier_cap = d;
  }
  using P = Policy<Evict, merge::None, KVQuant<3>>;
  KVCache<P> cache(s, typename P::Config{ecfg, {}, qc});
  const int total = prompt + steps;
  auto k = fp16_data(total * d, 91, 1.0f, 4.0f), v = fp16_data(total * d, 92), q = fp16_data(total * Hq * d, 93);
  StreamRef ref{calibrated ? cal.get() : nullptr, d};
  cache.append(0, k.data(), v.data(), prompt);
  std::vector<float> out(prompt * Hq * d);
  cache.attend(0, q.data(), prompt, out.data());
  // What the KVQuant store encodes for the prompt: the input keys, or — when the policy selects
  // at prefill end — the keys the cache staged in fp16 after RoPE and un-rotated at end_prefill
  // (BB-16 rules 1 and 4). RoPE via the policy's helper (tested on its own in RopeKeysHelper).
  std::vector<float> kin = k, staged(static_cast<std::size_t>(prompt) * d);
  std::vector<std::int32_t> ppos(prompt);
  std::iota(ppos.begin(), ppos.end(), 0);
  std::copy(k.begin(), k.begin() + prompt * d, staged.begin());
  KVQuant<3>::rope_keys(qc, staged.data(), prompt, d, ppos.data(), false);
  for (float& x : staged) x = static_cast<float>(kvref::round_to_f16(x));
  if constexpr (Evict::kSelectsAtPrefillEnd) {
    std::copy(staged.begin(), staged.end(), kin.begin());
    KVQuant<3>::rope_keys(qc, kin.data(), prompt, d, ppos.data(), true);
  }
  {
    // Prefill: causal attention over RoPE(dequantized keys) on the KVQuant store itself, or over
    // the fp16 post-RoPE staging rows for a prefill-end selector.
    std::vector<std::vector<double>> K, V;
    for (int t = 0; t < prompt; ++t) {
      if constexpr (Evict::kSelectsAtPrefillEnd) {
        K.emplace_back(staged.begin() + t * d, staged.begin() + (t + 1) * d);
        V.emplace_back(v.begin() + t * d, v.begin() + (t + 1) * d);
      } else {
        K.push_back(ref.key(&k[t * d], t, 0, 0));
        V.push_back(ref.value(&v[t * d], t, 0));
      }
      for (int h = 0; h < Hq; ++h) {
        auto r = ref_attention(K, V, &q[(t * Hq + h) * d], d, 1.0 / std::sqrt(static_cast<double>(d)));
        for (int c = 0; c < d; ++c) ASSERT_NEAR(out[(t * Hq + h) * d + c], r[c], 3e-4) << "prefill t=" << t;
      }
    }
  }
  cache.end_prefill();
  bool saw_gap = false;
  for (int t = prompt; t < total; ++t) {
    cache.append(0, &k[t * d], &v[t * d], 1);
    std::vector<float> o(Hq * d);
    cache.attend(0, &q[t * Hq * d], 1, o.data());
    const std::size_t n = cache.size(0, 0);
    std::vector<std::int32_t> pos(n);
    cache.positions(0, 0, pos.data());
    std::vector<std::vector<double>> K, V;
    for (std::size_t j = 0; j < n; ++j) {
      if (j > 0 && pos[j] != pos[j - 1] + 1) saw_gap = true;
      K.push_back(ref.key(&kin[pos[j] * d], pos[j], 0, 0));
      V.push_back(ref.value(&v[pos[j] * d], pos[j], 0));
    }
    for (int h = 0; h < Hq; ++h) {
      // Query rows in the cache are post-RoPE already (the engine rotates queries).
      auto r = ref_attention(K, V, &q[(t * Hq + h) * d], d, 1.0 / std::sqrt(static_cast<double>(d)));
      for (int c = 0; c < d; ++c) ASSERT_NEAR(o[h * d + c], r[c], 3e-4) << Evict::kName << " t=" << t << " h=" << h;
    }
  }
  EXPECT_TRUE(saw_gap) << Evict::kName;
}

TEST(KVQuantCache, DecodeWithH2OEvictionMatchesReference) {
  evict::H2O::Config e;
  e.heavy_budget = 10;
  e.recent_budget = 12;
  run_cache_decode<evict::H2O>(e, true);
  run_cache_decode<evict::H2O>(e, false);
}

TEST(KVQuantCache, DecodeWithStreamingLLMMatchesReference) {
  evict::StreamingLLM::Config e;
  e.sink_tokens = 2;
  e.window_tokens = 20;
  run_cache_decode<evict::StreamingLLM>(e, true);
  run_cache_decode<evict::StreamingLLM>(e, false);
}

// No eviction, several layers/heads (data-free: per-stream calibration needs the cache to pass
// stream ids), truncate then re-append keeps positions consistent.
TEST(KVQuantCache, MultiHeadTruncateAndMaterialize) {
  const int d = 64, L = 2, Hq = 4, Hkv = 2;
  CacheShape s{L, Hq, Hkv, d, 64};
  KVQuant<4>::Config qc;
  qc.rope.head_dim = d;
  KVCache<Policy<evict::None, merge::None, KVQuant<4>>> cache(s, {{}, {}, qc});
  auto k = fp16_data(30 * Hkv * d, 101), v = fp16_data(30 * Hkv * d, 102);
  for (int l = 0; l < L; ++l) cache.append(0 + l, k.data(), v.data(), 30);
  cache.truncate(20);
  for (int l = 0; l < L; ++l) cache.append(l, &k[25 * Hkv * d], &v[25 * Hkv * d], 5);  // positions 20..24
  std::vector<float> km(Hkv * 25 * d), vm(Hkv * 25 * d);
  cache.materialize(1, km.data(), vm.data());
  const auto nf = ref_nf(4);
  for (int h = 0; h < Hkv; ++h)
    for (int j = 0; j < 25; ++j) {
      const int src = j < 20 ? j : j + 5;
      std::vector<double> kr;
      if (j == 0)
        kr.assign(&k[(src * Hkv + h) * d], &k[(src * Hkv + h) * d] + d);
      else
        kr = ref_dynamic(&k[(src * Hkv + h) * d], d, nf, 0.01);
      ref_rope(kr, j);
      for (int c = 0; c < d; ++c) EXPECT_NEAR(km[(h * 25 + j) * d + c], kr[c], 2e-5) << h << "," << j;
    }
}

}  // namespace
