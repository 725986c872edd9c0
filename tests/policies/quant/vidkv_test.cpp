// SPDX-License-Identifier: Apache-2.0
// VidKV (methods/quantization.md §6): the section's test oracles, a double-precision
// re-implementation of the whole key/value pipeline (range channel selection, 2-bit min–max,
// DFT + 1-bit sign with {0, s} / ±s, ternary values, STP) checked against the store's contents,
// streaming invariants of the K-block flush, fused attention against a double reference over the
// dequantized contents, composition with eviction, exact bits per element and config checks.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kvcompress/core/float16.hpp"
#include "kvcompress/policies/evict/h2o.hpp"
#include "kvcompress/policies/evict/streaming_llm.hpp"
#include "kvcompress/policies/quant/vidkv.hpp"
#include "support/cache_test_support.hpp"
#include "support/expect_invalid.hpp"

namespace {

namespace kv = kvcompress;
namespace qc = kvcompress::quant::common;
using kv::Modality;

float f16(float x) { return kv::f16_bits_to_f32(kv::f32_to_f16_bits(x)); }

std::vector<float> rand_floats(std::size_t n, float lo, float hi, std::uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> x(n);
  for (auto& e : x) e = u(g);
  return x;
}

template <class Q>
struct StoreBox {
  using Store = typename Q::Store;
  StoreBox(int dim, std::size_t capacity, typename Q::Config c = {})
      : cfg(c), pool(Store::block_bytes(dim, c), Store::max_blocks(capacity, c)),
        store(dim, c, kv::BlockTable(&pool, Store::max_blocks(capacity, c))), scratch(Store::scratch_floats(dim, c)),
        d(dim) {}
  void append(const std::vector<float>& k, const std::vector<float>& v, std::size_t at, std::size_t n,
              const std::vector<Modality>* mods = nullptr) {
    kv::TokenInfo info{nullptr, mods ? mods->data() + at : nullptr};
    store.append(k.data() + at * d, v.data() + at * d, static_cast<std::size_t>(d), n, info, scratch.data());
  }
  void read_all(std::vector<float>& k, std::vector<float>& v) {
    k.assign(store.size() * d, 0.0f);
    v.assign(store.size() * d, 0.0f);
    store.read(0, store.size(), k.data(), v.data(), static_cast<std::size_t>(d), scratch.data());
  }
  typename Q::Config cfg;
  kv::BlockPool pool;
  Store store;
  std::vector<float> scratch;
  int d;
};

template <class Q>
void expect_attention(StoreBox<Q>& b, std::uint32_t seed, int rows);

// ---- independent reference of one flush block ---------------------------------------------------

struct RefOptions {
  int n2;
  bool fft;
  bool compact;
  bool symmetric;
  float gamma;
  bool ternary_alpha;
};

std::vector<std::complex<double>> dft(const std::vector<double>& x) {
  const std::size_t m = x.size();
  std::vector<std::complex<double>> Y(m);
  for (std::size_t k = 0; k < m; ++k)
    for (std::size_t c = 0; c < m; ++c) Y[k] += x[c] * std::polar(1.0, -2.0 * M_PI * double(c * k) / double(m));
  return Y;
}

/// Real frequency vector of the reference (interleaved full spectrum or rfft layout).
std::vector<double> to_real(const std::vector<std::complex<double>>& Y, bool compact) {
  const std::size_t m = Y.size();
  std::vector<double> y;
  if (!compact) {
    for (auto& z : Y) y.push_back(z.real()), y.push_back(z.imag());
    return y;
  }
  y.push_back(Y[0].real());
  for (std::size_t k = 1; k <= (m - 1) / 2; ++k) y.push_back(Y[k].real()), y.push_back(Y[k].imag());
  if (m % 2 == 0) y.push_back(Y[m / 2].real());
  return y;
}

/// x = Re(IDFT) of the spectrum rebuilt from the real layout (Hermitian completion when compact).
std::vector<double> from_real(const std::vector<double>& y, std::size_t m, bool compact) {
  std::vector<std::complex<double>> Y(m);
  if (!compact) {
    for (std::size_t k = 0; k < m; ++k) Y[k] = {y[2 * k], y[2 * k + 1]};
  } else {
    Y[0] = y[0];
    for (std::size_t k = 1; k <= (m - 1) / 2; ++k) {
      Y[k] = {y[2 * k - 1], y[2 * k]};
      Y[m - k] = std::conj(Y[k]);
    }
    if (m % 2 == 0) Y[m / 2] = y[m - 1];
  }
  std::vector<double> x(m);
  for (std::size_t c = 0; c < m; ++c) {
    std::complex<double> a = 0;
    for (std::size_t k = 0; k < m; ++k) a += Y[k] * std::polar(1.0, 2.0 * M_PI * double(c * k) / double(m));
    x[c] = a.real() / double(m);
  }
  return x;
}

/// 2-bit / 1-bit min–max of one group channel (BB-1, fp16 metadata, half-even rounding).
void ref_minmax(const double* x, std::size_t n, std::size_t stride, int bits, double* out) {
  float lo = float(x[0]), hi = float(x[0]);
  for (std::size_t t = 1; t < n; ++t) lo = std::min(lo, float(x[t * stride])), hi = std::max(hi, float(x[t * stride]));
  const double L = (1 << bits) - 1;
  const double s = f16((hi - lo) / float(L)), z = f16(lo);
  for (std::size_t t = 0; t < n; ++t) {
    const double q = s == 0 ? 0 : std::min(L, std::max(0.0, std::nearbyint((x[t * stride] - z) / s)));
    out[t * stride] = q * s + z;
  }
}

/// Dequantized contents of a flush block of F rows (fp16-rounded inputs), per the spec.
void ref_block(const std::vector<float>& k, const std::vector<float>& v, std::size_t first, std::size_t F, int d,
               const RefOptions& o, const std::vector<std::uint8_t>& prot, std::vector<double>& kh,
               std::vector<double>& vh, std::vector<int>* selected = nullptr) {
  std::vector<double> K(F * d), V(F * d);
  for (std::size_t i = 0; i < F * d; ++i) K[i] = f16(k[first * d + i]), V[i] = f16(v[first * d + i]);
  // Channel selection: largest range, ties → lower channel (stable sort).
  std::vector<double> range(d);
  for (int c = 0; c < d; ++c) {
    double lo = 1e300, hi = -1e300;
    for (std::size_t t = 0; t < F; ++t) lo = std::min(lo, K[t * d + c]), hi = std::max(hi, K[t * d + c]);
    range[c] = float(float(hi) - float(lo));
  }
  std::vector<int> order(d);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return range[a] > range[b]; });
  std::vector<bool> two(d, false);
  for (int i = 0; i < o.n2; ++i) two[order[i]] = true;
  if (selected) {
    selected->clear();
    for (int c = 0; c < d; ++c)
      if (two[c]) selected->push_back(c);
  }
  kh.assign(F * d, 0.0);
  vh.assign(F * d, 0.0);
  std::vector<int> normal;
  for (int c = 0; c < d; ++c)
    if (!two[c]) normal.push_back(c);
  const std::size_t m = normal.size();
  for (std::size_t g = 0; g < F; g += 32) {
    for (int c = 0; c < d; ++c) {
      if (two[c]) ref_minmax(&K[g * d + c], 32, d, 2, &kh[g * d + c]);
      else if (!o.fft) ref_minmax(&K[g * d + c], 32, d, 1, &kh[g * d + c]);
    }
    if (o.fft && m > 0) {
      std::vector<std::vector<double>> Y(32);
      for (int t = 0; t < 32; ++t) {
        std::vector<double> xn(m);
        for (std::size_t i = 0; i < m; ++i) xn[i] = K[(g + t) * d + normal[i]];
        Y[t] = to_real(dft(xn), o.compact);
      }
      const std::size_t F1 = Y[0].size();
      for (std::size_t f = 0; f < F1; ++f) {
        double sum = 0;
        for (int t = 0; t < 32; ++t) sum += std::fabs(Y[t][f]);
        const double s = f16(float(sum / 32));
        for (int t = 0; t < 32; ++t) Y[t][f] = Y[t][f] >= 0 ? s : (o.symmetric ? -s : 0.0);
      }
      for (int t = 0; t < 32; ++t) {
        const auto xn = from_real(Y[t], m, o.compact);
        for (std::size_t i = 0; i < m; ++i) kh[(g + t) * d + normal[i]] = xn[i];
      }
    }
    for (int c = 0; c < d; ++c) {
      std::vector<double> xu, xp;
      for (int t = 0; t < 32; ++t) (prot[g + t] ? xp : xu).push_back(V[(g + t) * d + c]);
      double alpha = 0;
      for (double x : xu) alpha += std::fabs(x);
      alpha = xu.empty() ? 0.0 : f16(float(alpha / xu.size()));
      const double tau = float(o.gamma * float(alpha));
      std::vector<double> ph(xp.size());
      if (!xp.empty()) ref_minmax(xp.data(), xp.size(), 1, 2, ph.data());
      for (int t = 0, a = 0, b = 0; t < 32; ++t) {
        if (prot[g + t]) {
          vh[(g + t) * d + c] = ph[b++];
        } else {
          const double x = xu[a++];
          const double tt = x > tau ? 1 : (x < -tau ? -1 : 0);
          vh[(g + t) * d + c] = o.ternary_alpha ? alpha * tt : tt;
        }
      }
    }
  }
}

template <class Q>
void expect_block_matches(StoreBox<Q>& b, const std::vector<float>& k, const std::vector<float>& v, std::size_t F,
                          const RefOptions& o, const std::vector<std::uint8_t>& prot) {
  std::vector<double> kh, vh;
  ref_block(k, v, 0, F, b.d, o, prot, kh, vh);
  std::vector<float> rk, rv;
  b.read_all(rk, rv);
  std::size_t bad_k = 0, bad_v = 0;
  for (std::size_t i = 0; i < F * b.d; ++i) {
    if (std::fabs(rk[i] - kh[i]) > 2e-3 * (1 + std::fabs(kh[i]))) ++bad_k;
    if (std::fabs(rv[i] - vh[i]) > 1e-6 * (1 + std::fabs(vh[i]))) ++bad_v;
  }
  EXPECT_EQ(bad_k, 0u) << "key elements differing from the reference";
  EXPECT_EQ(bad_v, 0u) << "value elements differing from the reference";
}

RefOptions opts(int n2, bool fft, bool compact = true, bool sym = false, float gamma = 0.7f, bool alpha = true) {
  return RefOptions{n2, fft, compact, sym, gamma, alpha};
}

// ---- §6 oracles ---------------------------------------------------------------------------------

TEST(VidKV, TernaryWorkedExample) {
  // v = [0.9, −0.1, −0.6, 0.2], γ = 0.7 → α = 0.45, τ = 0.315, t = [1, 0, −1, 0], v̂ = α·t.
  const float v[4] = {0.9f, -0.1f, -0.6f, 0.2f};
  std::uint8_t codes[4];
  const kv::half a = qc::ternary_quantize(v, 4, 1, 0.7f, codes);
  EXPECT_EQ(kv::to_float(a), f16(0.45f));
  const std::uint8_t want[4] = {2, 1, 0, 1};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(codes[i], want[i]);
  // Through the store: value channel 3 of a 32-token group repeats the example 8 times.
  const int d = 64;
  StoreBox<kv::quant::VidKV_K15_V158> b(d, 256);
  auto k = kvtest::random_kv(32, 1, d, 1), vv = kvtest::random_kv(32, 1, d, 2);
  for (int t = 0; t < 32; ++t) vv[t * d + 3] = v[t % 4];
  b.append(k, vv, 0, 32);
  ASSERT_EQ(b.store.quantized_slots(), 32u);
  std::vector<float> rk, rv;
  b.read_all(rk, rv);
  const float tw[4] = {1, 0, -1, 0};
  for (int t = 0; t < 32; ++t) EXPECT_EQ(rv[t * d + 3], f16(0.45f) * tw[t % 4]) << t;
}

TEST(VidKV, OneBitFrequencyWorkedExample) {
  // y = [1.5, −0.5, 0.25, −2.0] → s = 1.0625, codes [1, 0, 1, 0]; faithful {0, s}, symmetric ±s.
  const float y[4] = {1.5f, -0.5f, 0.25f, -2.0f};
  std::uint8_t codes[4];
  const kv::half s = qc::sign_quantize(y, 4, 1, codes);
  EXPECT_EQ(kv::to_float(s), 1.0625f);
  float faithful[4], sym[4];
  qc::sign_dequantize(codes, 4, s, qc::SignLevels::kZeroOrScale, faithful, 1);
  qc::sign_dequantize(codes, 4, s, qc::SignLevels::kPlusMinusScale, sym, 1);
  const float wf[4] = {1.0625f, 0, 1.0625f, 0}, ws[4] = {1.0625f, -1.0625f, 1.0625f, -1.0625f};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(codes[i], i % 2 == 0 ? 1 : 0);
    EXPECT_EQ(faithful[i], wf[i]);
    EXPECT_EQ(sym[i], ws[i]);
  }
}

TEST(VidKV, ChannelSelectionIsTopRangeWithIndexTieBreak) {
  const int d = 64;
  using Q = kv::quant::VidKV_K15_V158;
  StoreBox<Q> b(d, 256);
  auto k = kvtest::random_kv(64, 1, d, 3), v = kvtest::random_kv(64, 1, d, 4);
  // Channels 10..19 get identical large ranges: ties must go to the lower channels.
  for (int t = 0; t < 64; ++t)
    for (int c = 10; c < 20; ++c) k[t * d + c] = (t % 2 ? 1.0f : -1.0f) * 0.5f;
  b.append(k, v, 0, 64);
  ASSERT_EQ(b.store.quantized_slots(), 64u);
  std::vector<double> kh, vh;
  std::vector<int> sel;
  ref_block(k, v, 0, 64, d, opts(32, true), std::vector<std::uint8_t>(64, 0), kh, vh, &sel);
  ASSERT_EQ(sel.size(), static_cast<std::size_t>(Q::two_bit_channels(d)));
  EXPECT_EQ(sel.size(), 32u);  // ⌊0.5·64⌋
  for (std::size_t g = 0; g < 2; ++g) {
    const std::uint8_t* map = b.store.key_blob(g) + b.store.layout().map;
    std::vector<int> got;
    for (int c = 0; c < d; ++c)
      if ((map[c / 8] >> (c % 8)) & 1) got.push_back(c);
    EXPECT_EQ(got, sel) << "group " << g;
  }
}

// ---- the whole pipeline against the reference ----------------------------------------------------

template <class Q>
void pipeline_case(const typename Q::Config& cfg, const RefOptions& o, int d, std::uint32_t seed) {
  StoreBox<Q> b(d, 512, cfg);
  const std::size_t T = 200;  // 6 groups + 8 in the window
  auto k = kvtest::random_kv(T, 1, d, seed), v = kvtest::random_kv(T, 1, d, seed + 1);
  b.append(k, v, 0, T);
  ASSERT_EQ(b.store.quantized_slots(), 192u);
  ASSERT_EQ(b.store.window_slots(), 8u);
  expect_block_matches(b, k, v, 192, o, std::vector<std::uint8_t>(192, 0));
  std::vector<float> rk, rv;
  b.read_all(rk, rv);
  for (std::size_t i = 192 * d; i < T * d; ++i) EXPECT_EQ(rk[i], f16(k[i]));  // fp16 window
}

TEST(VidKV, K15CompactFftMatchesReference) {
  for (int d : {64, 80, 128}) pipeline_case<kv::quant::VidKV_K15_V158>({}, opts(d / 2, true), d, 10 + d);
}
TEST(VidKV, K175ComplexFullSymmetricGamma05MatchesReference) {
  kv::quant::VidKV_K175_V158::Config c;
  c.fft_layout = qc::DftLayout::kComplexFull;
  c.one_bit_levels = qc::SignLevels::kPlusMinusScale;
  c.gamma = 0.5f;
  c.ternary_scale = qc::TernaryScale::kNone;
  pipeline_case<kv::quant::VidKV_K175_V158>(c, opts(96, true, false, true, 0.5f, false), 128, 20);
}
TEST(VidKV, PlainOneBitWithoutFftMatchesReference) {
  using Q = kv::quant::VidKV<4, false, 128>;  // B_K = 1: paper uses plain 1-bit
  pipeline_case<Q>({}, opts(0, false), 64, 30);
  using Q125 = kv::quant::VidKV<5, false, 128>;  // B_K = 1.25: plain 1-bit for the normal channels
  pipeline_case<Q125>({}, opts(16, false), 64, 31);
}
TEST(VidKV, FftForAll1BitFlagMatchesReference) {
  using Q = kv::quant::VidKV<4, false, 128>;
  Q::Config c;
  c.fft_for_all_1bit = true;
  pipeline_case<Q>(c, opts(0, true), 96, 40);
}
TEST(VidKV, AllTwoBitKeys) { pipeline_case<kv::quant::VidKV<8, false, 128>>({}, opts(64, false), 64, 50); }

TEST(VidKV, StpProtectsTopRelevanceVisualTokens) {
  using Q = kv::quant::VidKV_K15_V166;
  const int d = 64;
  StoreBox<Q> b(d, 512);
  const std::size_t T = 150;
  auto k = kvtest::random_kv(T, 1, d, 60), v = kvtest::random_kv(T, 1, d, 61);
  std::vector<Modality> mods(T, Modality::kVideo);
  for (std::size_t i = 0; i < 6; ++i) mods[i] = Modality::kSystem;
  for (std::size_t i = 130; i < T; ++i) mods[i] = Modality::kText;  // question at the end (window tail too)
  b.append(k, v, 0, T, &mods);
  ASSERT_EQ(b.store.quantized_slots(), 128u);
  // Brute force: relevance k_i · mean(text keys), fp16 inputs, among visual tokens of the block.
  std::vector<double> mean(d, 0.0);
  for (std::size_t i = 130; i < T; ++i)
    for (int c = 0; c < d; ++c) mean[c] += f16(k[i * d + c]) / 20.0;
  std::vector<std::pair<double, std::size_t>> rel;
  for (std::size_t i = 0; i < 128; ++i)
    if (mods[i] == Modality::kVideo) {
      double r = 0;
      for (int c = 0; c < d; ++c) r += double(f16(k[i * d + c])) * float(mean[c]);
      rel.push_back({r, i});
    }
  std::stable_sort(rel.begin(), rel.end(), [](auto& a, auto& b2) { return a.first > b2.first; });
  const std::size_t n = static_cast<std::size_t>(std::lround(0.2 * rel.size()));
  EXPECT_EQ(n, 24u);  // round(0.2 · 122)
  std::vector<std::uint8_t> prot(128, 0);
  for (std::size_t i = 0; i < n; ++i) prot[rel[i].second] = 1;
  std::size_t got = 0;
  for (std::size_t g = 0; g < 4; ++g) {
    std::uint32_t mask;
    std::memcpy(&mask, b.store.value_blob(g) + b.store.layout().v_mask, 4);
    for (int t = 0; t < 32; ++t) {
      EXPECT_EQ((mask >> t) & 1u, prot[g * 32 + t]) << "slot " << g * 32 + t;
      got += (mask >> t) & 1u;
    }
  }
  EXPECT_EQ(got, n);
  expect_block_matches(b, k, v, 128, opts(32, true), prot);
}

// ---- streaming -----------------------------------------------------------------------------------

TEST(VidKV, KBlockFlushInvariants) {
  const int d = 64;
  using Q = kv::quant::VidKV_K15_V158;
  for (std::size_t T : {1u, 31u, 32u, 33u, 127u, 128u, 129u, 3u * 128u + 7u}) {
    StoreBox<Q> b(d, 2048);
    auto k = kvtest::random_kv(T + 300, 1, d, 70 + T), v = kvtest::random_kv(T + 300, 1, d, 71 + T);
    if (T == 1) b.append(k, v, 0, 1);
    else b.append(k, v, 0, T);
    const std::size_t after_prefill = T == 1 ? 0 : T / 32 * 32;
    EXPECT_EQ(b.store.quantized_slots(), after_prefill) << T;
    std::vector<float> rk0, rv0;
    b.read_all(rk0, rv0);
    for (std::size_t s = 0; s < 300; ++s) {
      b.append(k, v, T + s, 1);
      const std::size_t total = T + s + 1;
      ASSERT_EQ(b.store.size(), total);
      ASSERT_LT(b.store.window_slots(), 128u);
      ASSERT_EQ(b.store.quantized_slots() % 32, 0u);
      ASSERT_EQ((total - after_prefill) % 128, b.store.window_slots()) << "K-block flush every R tokens";
    }
    // Nothing already quantized changes when later blocks are flushed (no requantize-all).
    std::vector<float> rk, rv;
    b.read_all(rk, rv);
    for (std::size_t i = 0; i < after_prefill * d; ++i) ASSERT_EQ(rk[i], rk0[i]);
    // Decode flush block = the last R tokens with their own channel selection.
    if (b.store.quantized_slots() >= after_prefill + 128) {
      std::vector<float> kb(k.begin() + after_prefill * d, k.end()), vb(v.begin() + after_prefill * d, v.end());
      std::vector<double> kh, vh;
      ref_block(kb, vb, 0, 128, d, opts(32, true), std::vector<std::uint8_t>(128, 0), kh, vh);
      for (std::size_t i = 0; i < 128 * d; ++i) ASSERT_NEAR(rk[after_prefill * d + i], kh[i], 2e-3 * (1 + std::fabs(kh[i])));
    }
  }
}

TEST(VidKV, RequantizeAllFlagReproducesReferenceStreaming) {
  using Q = kv::quant::VidKV_K15_V158;
  const int d = 64;
  Q::Config cfg;
  cfg.flush = Q::Flush::kRequantizeAll;
  StoreBox<Q> b(d, 1024, cfg), blk(d, 1024);
  auto k = kvtest::random_kv(400, 1, d, 90), v = kvtest::random_kv(400, 1, d, 91);
  for (auto* x : {&b, &blk}) x->append(k, v, 0, 200);  // 192 quantized + 8 window
  for (std::size_t s = 200; s < 319; ++s)
    for (auto* x : {&b, &blk}) x->append(k, v, s, 1);
  std::vector<float> before_k, before_v;
  b.read_all(before_k, before_v);  // old groups' x̂ and the window (fp16) just before the flush
  for (auto* x : {&b, &blk}) x->append(k, v, 319, 1);
  ASSERT_EQ(b.store.quantized_slots(), 320u);
  // Reference: one channel selection over fp16(x̂) of everything, shared by every group.
  for (auto& x : before_k) x = f16(x);
  for (int c = 0; c < d; ++c) before_k.push_back(f16(k[319 * d + c]));
  std::vector<double> range(d);
  for (int c = 0; c < d; ++c) {
    float lo = INFINITY, hi = -INFINITY;
    for (std::size_t t = 0; t < 320; ++t) lo = std::min(lo, before_k[t * d + c]), hi = std::max(hi, before_k[t * d + c]);
    range[c] = hi - lo;
  }
  std::vector<int> order(d);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int c) { return range[a] > range[c]; });
  std::vector<int> sel(order.begin(), order.begin() + 32);
  std::sort(sel.begin(), sel.end());
  for (std::size_t g = 0; g < 10; ++g) {
    const std::uint8_t* map = b.store.key_blob(g) + b.store.layout().map;
    std::vector<int> got;
    for (int c = 0; c < d; ++c)
      if ((map[c / 8] >> (c % 8)) & 1) got.push_back(c);
    EXPECT_EQ(got, sel) << "group " << g;
  }
  // The old groups were re-encoded from their dequantization: block flush leaves them as they were.
  std::vector<float> rk, rv, bk, bv;
  b.read_all(rk, rv);
  blk.read_all(bk, bv);
  EXPECT_NE(std::vector<float>(rk.begin(), rk.begin() + 192 * d), std::vector<float>(bk.begin(), bk.begin() + 192 * d));
  expect_attention(b, 92, 3);
}

TEST(VidKV, FrozenChannelsReuseThePromptSelection) {
  using Q = kv::quant::VidKV_K15_V158;
  const int d = 64;
  Q::Config cfg;
  cfg.freeze_channels = true;
  StoreBox<Q> b(d, 1024, cfg);
  auto k = kvtest::random_kv(400, 1, d, 80), v = kvtest::random_kv(400, 1, d, 81);
  for (std::size_t t = 200; t < 400; ++t)  // later tokens: different high-range channels
    for (int c = 0; c < 8; ++c) k[t * d + c] *= 20.0f;
  b.append(k, v, 0, 100);
  for (std::size_t s = 100; s < 400; ++s) b.append(k, v, s, 1);
  ASSERT_GE(b.store.quantized_slots(), 96u + 256u);
  const std::uint8_t* map0 = b.store.key_blob(0) + b.store.layout().map;
  for (std::size_t g = 1; g < b.store.quantized_slots() / 32; ++g)
    EXPECT_EQ(std::memcmp(map0, b.store.key_blob(g) + b.store.layout().map, 8), 0) << g;
  // The per-block default picks the new high-range channels for the late blocks.
  StoreBox<Q> p(d, 1024);
  p.append(k, v, 0, 100);
  for (std::size_t s = 100; s < 400; ++s) p.append(k, v, s, 1);
  const std::uint8_t* last = p.store.key_blob(p.store.quantized_slots() / 32 - 1) + p.store.layout().map;
  EXPECT_EQ(last[0], 0xFF);
  expect_attention(b, 82, 4);
}

// ---- attention -----------------------------------------------------------------------------------

template <class Q>
void expect_attention(StoreBox<Q>& b, std::uint32_t seed, int rows) {
  std::vector<float> rk, rv;
  b.read_all(rk, rv);
  const std::size_t n = b.store.size();
  const int d = b.d;
  auto q = rand_floats(static_cast<std::size_t>(rows * d), -1.0f, 1.0f, seed);
  const float scale = 1.0f / std::sqrt(float(d));
  for (auto& x : q) x *= scale;
  std::vector<float> l(rows * n);
  b.store.logits(q.data(), rows, l.data(), n);
  std::vector<float> out(rows * d, 0.0f);
  std::vector<float> p(rows * n);
  for (int r = 0; r < rows; ++r) {
    std::vector<double> ref(n);
    double lmag = 0;
    for (std::size_t j = 0; j < n; ++j) {
      double a = 0, mag = 0;
      for (int c = 0; c < d; ++c) a += double(q[r * d + c]) * rk[j * d + c], mag += std::fabs(q[r * d + c] * rk[j * d + c]);
      ref[j] = a;
      lmag = std::max(lmag, mag);
      EXPECT_NEAR(l[r * n + j], a, 1e-4 * (1 + mag)) << "row " << r << " slot " << j;
    }
    const float mx = *std::max_element(l.begin() + r * n, l.begin() + (r + 1) * n);
    for (std::size_t j = 0; j < n; ++j) p[r * n + j] = std::exp(l[r * n + j] - mx);
  }
  b.store.accumulate(p.data(), n, rows, out.data());
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < d; ++c) {
      double a = 0, mag = 0;
      for (std::size_t j = 0; j < n; ++j) a += double(p[r * n + j]) * rv[j * d + c], mag += std::fabs(p[r * n + j] * rv[j * d + c]);
      EXPECT_NEAR(out[r * d + c], a, 1e-4 * (1 + mag)) << "row " << r << " channel " << c;
    }
}

TEST(VidKV, FusedAttentionMatchesDequantizedContents) {
  auto run = [](auto tag, typename decltype(tag)::Config cfg, int d, std::uint32_t seed) {
    using Q = decltype(tag);
    StoreBox<Q> b(d, 1024, cfg);
    auto k = kvtest::random_kv(400, 1, d, seed), v = kvtest::random_kv(400, 1, d, seed + 1);
    std::vector<Modality> mods(400, Modality::kVideo);
    for (std::size_t i = 300; i < 400; ++i) mods[i] = Modality::kText;
    b.append(k, v, 0, 333, &mods);
    for (std::size_t s = 333; s < 400; ++s) b.append(k, v, s, 1, &mods);
    expect_attention(b, seed + 2, 1);
    expect_attention(b, seed + 3, 5);
  };
  run(kv::quant::VidKV_K15_V158{}, {}, 128, 100);
  run(kv::quant::VidKV_K15_V158{}, {}, 80, 110);
  kv::quant::VidKV_K175_V158::Config full;
  full.fft_layout = qc::DftLayout::kComplexFull;
  full.one_bit_levels = qc::SignLevels::kPlusMinusScale;
  full.ternary_scale = qc::TernaryScale::kNone;
  run(kv::quant::VidKV_K175_V158{}, full, 96, 120);
  run(kv::quant::VidKV_K15_V166{}, {}, 64, 130);
  run(kv::quant::VidKV<5, false, 128>{}, {}, 64, 140);
  run(kv::quant::VidKV<8, true, 64>{}, {}, 64, 150);
}

// ---- memory / bits -------------------------------------------------------------------------------

TEST(VidKV, BitsPerElementAndMemoryAreExact) {
  using Q = kv::quant::VidKV_K15_V158;
  const int d = 128;
  Q::Config ref;
  ref.fft_layout = qc::DftLayout::kComplexFull;
  // Keys: map d bits + n2·(64 code + 32 metadata bits) + F1·(32 code + 16 scale bits), per 32·d.
  EXPECT_DOUBLE_EQ(Q::key_bits_per_element(d, {}), (128.0 + 64 * 96 + 64 * 48) / (32.0 * 128));  // 2.28125
  EXPECT_DOUBLE_EQ(Q::key_bits_per_element(d, ref), 3.0 + 128.0 / 4096);  // spec "≈ 3.0" + channel map
  // Values: 2-bit ternary codes + fp16 α per 32 → 2.5 (spec "≈ 2 + 0.5").
  EXPECT_DOUBLE_EQ(Q::value_bits_per_element(d, {}), 2.5);
  // STP adds 2 fp16 per channel and a 32-bit mask per group: 2.5 + 1 + 1/128.
  EXPECT_DOUBLE_EQ(kv::quant::VidKV_K15_V166::value_bits_per_element(d, {}), 3.5 + 32.0 / (32 * 128));
  StoreBox<Q> b(d, 2048);
  auto k = kvtest::random_kv(700, 1, d, 200), v = kvtest::random_kv(700, 1, d, 201);
  b.append(k, v, 0, 700);
  const std::size_t key_group = (16 + 64 * 12 + 64 * 6), value_group = 128 * 10;
  const std::size_t block = (4 * (key_group + value_group) + 63) / 64 * 64;
  EXPECT_EQ(Q::Store::block_bytes(d, {}), block);
  const std::size_t fixed = 128 * (4 * d + 1) + 256;  // window, labels, frozen map
  EXPECT_EQ(b.store.memory_bytes(), (b.store.quantized_slots() + 127) / 128 * block + fixed);
  EXPECT_EQ(b.store.quantized_slots(), 672u);
  b.store.clear();
  EXPECT_EQ(b.store.memory_bytes(), fixed);
  EXPECT_EQ(b.pool.num_used(), 0u);
}

// ---- eviction / truncate at the store -----------------------------------------------------------

TEST(VidKV, CompactAndTruncate) {
  using Q = kv::quant::VidKV_K15_V158;
  const int d = 64;
  StoreBox<Q> b(d, 1024);
  auto k = kvtest::random_kv(300, 1, d, 300), v = kvtest::random_kv(300, 1, d, 301);
  b.append(k, v, 0, 270);  // 256 quantized + 14 window
  std::vector<float> rk, rv;
  b.read_all(rk, rv);
  std::vector<std::uint8_t> keep(270, 1), ret(270);
  for (std::size_t j = 0; j < 32; ++j) keep[j] = 0;      // group 0 dead → dropped
  for (std::size_t j = 32; j < 63; ++j) keep[j] = 0;     // group 1 keeps one slot → kept whole
  keep[260] = 0;                                         // window slot removed physically
  EXPECT_EQ(b.store.plan_compact(keep.data(), ret.data()), 270u - 32u - 1u);
  b.store.compact(ret.data(), b.scratch.data());
  std::vector<std::size_t> surv;
  for (std::size_t j = 0; j < 270; ++j)
    if (ret[j]) surv.push_back(j);
  std::vector<float> ck, cv;
  b.read_all(ck, cv);
  ASSERT_EQ(b.store.size(), surv.size());
  for (std::size_t i = 0; i < surv.size(); ++i)
    for (int c = 0; c < d; ++c) ASSERT_EQ(ck[i * d + c], rk[surv[i] * d + c]);
  expect_attention(b, 302, 3);
  // Truncate into a group: its survivors return to the window unchanged.
  b.store.truncate(70, b.scratch.data());
  EXPECT_EQ(b.store.quantized_slots(), 64u);
  EXPECT_EQ(b.store.window_slots(), 6u);
  std::vector<float> tk, tv;
  b.read_all(tk, tv);
  for (std::size_t i = 0; i < 64 * d; ++i) ASSERT_EQ(tk[i], ck[i]) << i;             // still quantized
  for (std::size_t i = 64 * d; i < 70 * d; ++i) ASSERT_EQ(tk[i], f16(ck[i])) << i;  // fp16 window of x̂
  expect_attention(b, 303, 3);
}

// ---- config ----------------------------------------------------------------------------------

TEST(VidKV, BadConfigsAreRejected) {
  const kv::CacheShape shape{1, 4, 2, 64, 1024};
  using Q = kv::quant::VidKV_K15_V166;
  auto bad = [&](auto mutate, const char* arg) {
    Q::Config c;
    mutate(c);
    kvtest::expect_invalid_argument([&] { c.validate(shape); }, arg);
  };
  bad([](Q::Config& c) { c.gamma = -0.1f; }, "gamma");
  bad([](Q::Config& c) { c.gamma = NAN; }, "gamma");
  bad([](Q::Config& c) { c.stp_ratio = 1.5f; }, "stp_ratio");
  bad([](Q::Config& c) { c.stp_ratio = -0.1f; }, "stp_ratio");
  Q::Config def;
  EXPECT_EQ(def.gamma, 0.7f);
  EXPECT_EQ(def.stp_ratio, 0.2f);
  EXPECT_EQ(def.fft_layout, qc::DftLayout::kCompact);
  EXPECT_FALSE(def.fft_for_all_1bit);
  using P = kv::Policy<kv::evict::None, kv::merge::None, Q>;
  P::Config pc;
  pc.quant.gamma = -1.0f;
  kvtest::expect_invalid_argument([&] { kv::KVCache<P> c(shape, pc); }, "gamma");
}

// ---- through the cache -------------------------------------------------------------------------

template <class P>
void run_cache(typename P::Config cfg, std::size_t decode_steps, std::uint32_t seed, bool expect_evictions) {
  const kv::CacheShape shape{2, 8, 2, 64, 1024};
  kv::KVCache<P> cache(shape, cfg);
  const std::size_t T = 300;
  std::vector<Modality> mods(T, Modality::kVideo);
  for (std::size_t i = 0; i < 10; ++i) mods[i] = Modality::kSystem;
  for (std::size_t i = 270; i < T; ++i) mods[i] = Modality::kText;
  const int qd = shape.num_q_heads * shape.head_dim;
  for (int l = 0; l < shape.num_layers; ++l) {
    auto k = kvtest::random_kv(T, shape.num_kv_heads, shape.head_dim, seed + l);
    auto v = kvtest::random_kv(T, shape.num_kv_heads, shape.head_dim, seed + 10 + l);
    cache.append(l, k.data(), v.data(), T, mods.data());
    auto q = rand_floats(T * qd, -1.0f, 1.0f, seed + 20 + l);
    std::vector<float> out(T * qd);
    cache.attend(l, q.data(), T, out.data());
    kvtest::expect_attention_matches(cache, l, q, T, out, 1e-4, 1e-4);
  }
  cache.end_prefill();
  for (std::size_t s = 0; s < decode_steps; ++s)
    for (int l = 0; l < shape.num_layers; ++l) {
      auto k = kvtest::random_kv(1, shape.num_kv_heads, shape.head_dim, seed + 100 + 7 * s + l);
      auto v = kvtest::random_kv(1, shape.num_kv_heads, shape.head_dim, seed + 200 + 7 * s + l);
      const Modality g = Modality::kGenerated;
      cache.append(l, k.data(), v.data(), 1, &g);
      auto q = rand_floats(qd, -1.0f, 1.0f, seed + 300 + 7 * s + l);
      std::vector<float> out(qd);
      cache.attend(l, q.data(), 1, out.data());
      kvtest::expect_attention_matches(cache, l, q, 1, out, 1e-4, 1e-4);
    }
  if (expect_evictions) {
    EXPECT_LT(cache.size(0, 0), T + decode_steps);
  }
  EXPECT_GT(cache.stream(0, 0).quantized_slots(), 0u);
}

TEST(VidKV, AttentionThroughCacheWithMixedModalities) {
  using P = kv::Policy<kv::evict::None, kv::merge::None, kv::quant::VidKV_K15_V166>;
  run_cache<P>({}, 140, 1000, false);
}

TEST(VidKV, ComposesWithH2O) {
  using P = kv::Policy<kv::evict::H2O, kv::merge::None, kv::quant::VidKV_K15_V158>;
  P::Config cfg;
  cfg.evict.heavy_budget = 64;
  cfg.evict.recent_budget = 64;
  run_cache<P>(cfg, 140, 2000, true);
}

TEST(VidKV, ComposesWithStreamingLLM) {
  using P = kv::Policy<kv::evict::StreamingLLM, kv::merge::None, kv::quant::VidKV_K15_V158>;
  P::Config cfg;
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 150;
  run_cache<P>(cfg, 140, 3000, true);
}

}  // namespace
