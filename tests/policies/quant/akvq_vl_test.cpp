// SPDX-License-Identifier: Apache-2.0
// AKVQ-VL (quantization.md §5): the spec's test oracles (H·Hᵀ = I and H·H = I for d ∈ {64, 128,
// 256} and the block-diagonal 80/96 layouts, WHT worked values, logit invariance (QH)(KH)ᵀ = QKᵀ,
// every token in exactly one precision class with recent ∪ pivots counted once, BB-1 round-trip
// bound with clipping), the §5 storage example (143 fp16 of 4096 tokens → ≈ 2.73 bpe), pivot
// selection (running top-P = offline top-P, generated tokens never pivots), fused attention against
// a double-precision reference over the dequantized contents, eviction/truncation side data,
// exact memory_bytes and bad configs. Store-level here; through KVCache in akvq_vl_cache_test.cpp.

#include "support/expect_invalid.hpp"
#include "support/store_harness.hpp"
#include "kvcompress/policies/quant/akvq_vl.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

namespace {

namespace kq = kvcompress::quant;
namespace kk = kvcompress::kernels;
using kvcompress::BlockPool;
using kvcompress::BlockTable;
using kvcompress::CacheShape;
using kvcompress::Modality;
using kvcompress::TokenInfo;
using Q = kq::AkvqVl;

std::vector<float> randn(std::size_t n, std::uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

/// Independent normalized Sylvester Hadamard matrix of the block-diagonal layout, in double.
std::vector<double> ref_hadamard(std::size_t n) {
  std::vector<double> H(n * n, 0.0);
  std::size_t off = 0;
  for (std::size_t m = 256; m >= 1; m /= 2) {
    if (!(n & m)) continue;
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < m; ++j)
        H[(off + i) * n + off + j] = (__builtin_popcountll(i & j) % 2 ? -1.0 : 1.0) / std::sqrt(double(m));
    off += m;
  }
  return H;
}

TEST(AkvqVl, HadamardIsOrthogonalAndInvolutoryForAllHeadDims) {
  for (std::size_t d : {64u, 128u, 256u, 96u, 80u}) {
    // Matrix of akvq_wht: column j = wht(e_j).
    std::vector<double> M(d * d);
    for (std::size_t j = 0; j < d; ++j) {
      std::vector<float> e(d, 0.0f);
      e[j] = 1.0f;
      kk::akvq_wht(e.data(), d, kvcompress::best_isa{});
      for (std::size_t i = 0; i < d; ++i) M[i * d + j] = e[i];
    }
    const auto R = ref_hadamard(d);
    double max_hht = 0, max_hh = 0, max_ref = 0;
    for (std::size_t i = 0; i < d; ++i)
      for (std::size_t j = 0; j < d; ++j) {
        double hht = 0, hh = 0;
        for (std::size_t t = 0; t < d; ++t) {
          hht += M[i * d + t] * M[j * d + t];
          hh += M[i * d + t] * M[t * d + j];
        }
        max_hht = std::max(max_hht, std::fabs(hht - (i == j)));
        max_hh = std::max(max_hh, std::fabs(hh - (i == j)));
        max_ref = std::max(max_ref, std::fabs(M[i * d + j] - R[i * d + j]));
      }
    EXPECT_LT(max_hht, 1e-6) << d;
    EXPECT_LT(max_hh, 1e-6) << d;
    EXPECT_LT(max_ref, 1e-7) << d;
  }
}

TEST(AkvqVl, HadamardWorkedValues) {
  // BB-9: WHT([8,0,0,0]) = [4,4,4,4]; WHT([1,1,1,1]) = [2,0,0,0]; [3,1,−2,5] round trip.
  // (4-point blocks: exercised through the power-of-two butterfly the kernel calls per block.)
  float a[4] = {8, 0, 0, 0}, b[4] = {1, 1, 1, 1}, c[4] = {3, 1, -2, 5};
  kk::akvq_wht(a, 4, kvcompress::isa::scalar{});
  kk::akvq_wht(b, 4, kvcompress::isa::scalar{});
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(a[i], 4.0f);
  EXPECT_FLOAT_EQ(b[0], 2.0f);
  for (int i = 1; i < 4; ++i) EXPECT_FLOAT_EQ(b[i], 0.0f);
  kk::akvq_wht(c, 4, kvcompress::isa::scalar{});
  kk::akvq_wht(c, 4, kvcompress::isa::scalar{});
  const float want[4] = {3, 1, -2, 5};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(c[i], want[i], 1e-6);
}

TEST(AkvqVl, LogitInvarianceBeforeQuantization) {
  for (std::size_t d : {64u, 80u, 96u, 128u}) {
    auto q = randn(d, 1), k = randn(d, 2);
    double ref = 0, a = 0;
    for (std::size_t i = 0; i < d; ++i) {
      ref += double(q[i]) * k[i];
      a += std::fabs(double(q[i]) * k[i]);
    }
    kk::akvq_wht(q.data(), d, kvcompress::best_isa{});
    kk::akvq_wht(k.data(), d, kvcompress::best_isa{});
    double rot = 0;
    for (std::size_t i = 0; i < d; ++i) rot += double(q[i]) * k[i];
    EXPECT_NEAR(rot, ref, 1e-5 * (1 + a)) << d;
  }
}

TEST(AkvqVl, RowRoundTripWithinBb1BoundForInRangeValues) {
  // Independent bound in double: lo = α·min, hi = α·max, s = (hi − lo)/L; every x ∈ [lo, hi]
  // reconstructs within s16/2 + L·|s − s16| (integer zero point, BB-1); values clipped outside
  // reconstruct to within s16/2 of the clip range (a grid end).
  for (int bits : {2, 4}) {
    const float clip = kk::akvq_default_clip(bits);
    const std::size_t d = 128, group = 64;
    for (int trial = 0; trial < 50; ++trial) {
      auto x = randn(d, 100 + trial, 1.0f + trial);
      if (trial % 7 == 0) x[5] = 40.0f;  // an outlier
      std::vector<std::uint8_t> row(kk::akvq_row_bytes(d, group)), ext(kk::akvq_plane_bytes(d));
      kk::akvq_quantize_row(x.data(), d, group, bits, clip, row.data(), bits == 4 ? ext.data() : nullptr,
                            kvcompress::isa::scalar{});
      std::vector<float> y(d);
      kk::akvq_dequantize_row(row.data(), bits == 4 ? ext.data() : nullptr, d, group, y.data(),
                              kvcompress::isa::scalar{});
      const double L = (1 << bits) - 1;
      for (std::size_t g = 0; g < d / group; ++g) {
        double mn = 1e300, mx = -1e300;
        for (std::size_t c = g * group; c < (g + 1) * group; ++c) {
          mn = std::min<double>(mn, x[c]);
          mx = std::max<double>(mx, x[c]);
        }
        const double lo = double(float(clip * float(mn))), hi = double(float(clip * float(mx)));
        const double s = (hi - lo) / L;
        const double s16 = kvcompress::f16_bits_to_f32(kvcompress::f32_to_f16_bits(float(s)));
        const double bound = s16 / 2 + L * std::fabs(s - s16) + 1e-5 * (std::fabs(lo) + std::fabs(hi));
        for (std::size_t c = g * group; c < (g + 1) * group; ++c) {
          const double xc = std::min(std::max<double>(x[c], lo), hi);
          EXPECT_LE(std::fabs(y[c] - xc), bound) << "bits " << bits << " c " << c;
        }
      }
    }
  }
}

struct Harness : kvtest::StoreHarness<Q> {
  Harness(int d_, const Q::Config& c, std::size_t capacity, int layer) : StoreHarness(d_, c, capacity, layer, 0) {}
  void append(const float* k, const float* v, std::size_t n, const std::int32_t* pos, const Modality* mod) {
    StoreHarness::append(k, v, n, TokenInfo{pos, mod});
  }
};

/// Per-token inputs of a multimodal prompt: system, text, image block, text, then generated.
struct Prompt {
  std::vector<float> k, v;
  std::vector<std::int32_t> pos;
  std::vector<Modality> mod;
};
Prompt make_prompt(std::size_t T, int d, std::uint32_t seed) {
  Prompt p;
  p.k = randn(T * d, seed);
  p.v = randn(T * d, seed + 1);
  for (std::size_t t = 0; t < T; ++t) {
    p.pos.push_back(static_cast<std::int32_t>(t));
    Modality m = Modality::kText;
    if (t < 5) m = Modality::kSystem;
    else if (t >= 20 && t < T * 3 / 5) m = Modality::kImage;
    else if (t >= T * 4 / 5) m = Modality::kGenerated;
    p.mod.push_back(m);
  }
  // massive-activation-like tokens: a few keys with one huge channel (inside the image too)
  for (std::size_t t : {std::size_t{0}, std::size_t{7}, std::size_t{33}, T / 2, T * 9 / 10})
    if (t < T) p.k[t * d + 3] = 30.0f + static_cast<float>(t % 7);
  return p;
}

void append_streamed(Harness& h, const Prompt& p, std::size_t prefill) {
  const std::size_t d = static_cast<std::size_t>(h.d), T = p.pos.size();
  h.append(p.k.data(), p.v.data(), prefill, p.pos.data(), p.mod.data());
  for (std::size_t t = prefill; t < T; ++t)
    h.append(p.k.data() + t * d, p.v.data() + t * d, 1, p.pos.data() + t, p.mod.data() + t);
}

TEST(AkvqVl, ClassAssignmentTsaAndPsa) {
  const int d = 64;
  const std::size_t T = 400;
  Q::Config cfg;
  cfg.recent_window = 32;
  cfg.pivots = 3;
  const Prompt p = make_prompt(T, d, 5);
  for (int layer : {0, 1, 2, 7}) {
    Harness h(d, cfg, T, layer);
    append_streamed(h, p, 300);
    ASSERT_EQ(h.store->size(), T);
    const bool tsa = layer < 2;
    EXPECT_EQ(h.store->is_tsa(), tsa);
    EXPECT_EQ(h.store->window(), 32u);
    // Offline top-3 of max|k| over non-generated tokens (ties → earlier token).
    std::vector<std::size_t> cand;
    for (std::size_t t = 0; t < T; ++t)
      if (p.mod[t] != Modality::kGenerated) cand.push_back(t);
    auto score = [&](std::size_t t) {
      float s = 0;
      for (int c = 0; c < d; ++c) s = std::max(s, std::fabs(p.k[t * d + c]));
      return s;
    };
    std::stable_sort(cand.begin(), cand.end(), [&](std::size_t a, std::size_t b) { return score(a) > score(b); });
    std::vector<bool> pivot(T, false);
    if (!tsa)
      for (int i = 0; i < 3; ++i) pivot[cand[i]] = true;
    std::size_t n16 = 0, n4 = 0, n2 = 0;
    for (std::size_t t = 0; t < T; ++t) {
      const bool recent = t >= T - 32;
      const bool visual = p.mod[t] == Modality::kImage;
      kq::AkvqClass want = kq::AkvqClass::kLow;
      if (recent || pivot[t]) want = kq::AkvqClass::kFp16;
      else if (tsa && !visual) want = kq::AkvqClass::kHigh;
      EXPECT_EQ(h.store->slot_class(t), want) << "layer " << layer << " token " << t;
      EXPECT_EQ(h.store->is_pivot(t), pivot[t]) << t;
      EXPECT_NE(p.mod[t] == Modality::kGenerated && h.store->is_pivot(t), true);
      n16 += h.store->slot_class(t) == kq::AkvqClass::kFp16;
      n4 += h.store->slot_class(t) == kq::AkvqClass::kHigh;
      n2 += h.store->slot_class(t) == kq::AkvqClass::kLow;
    }
    EXPECT_EQ(n16 + n4 + n2, T);  // each token in exactly one class
    EXPECT_EQ(n16, 32u + (tsa ? 0u : 3u));  // recent ∪ pivots counted once (no pivot is recent here)
  }
}

TEST(AkvqVl, PivotInsideRecentWindowCountedOnce) {
  const int d = 64;
  Q::Config cfg;
  cfg.recent_window = 8;
  cfg.pivots = 2;
  const std::size_t T = 20;
  Prompt p = make_prompt(T, d, 9);
  for (auto& m : p.mod) m = Modality::kText;
  p.k[18 * d + 1] = 100.0f;  // the top pivot is recent
  p.k[2 * d + 1] = 90.0f;
  Harness h(d, cfg, T, 5);
  append_streamed(h, p, T);
  std::size_t n16 = 0;
  for (std::size_t t = 0; t < T; ++t) n16 += h.store->slot_class(t) == kq::AkvqClass::kFp16;
  EXPECT_EQ(n16, 9u);  // 8 recent + token 2
  EXPECT_TRUE(h.store->is_pivot(18));
  EXPECT_TRUE(h.store->is_pivot(2));
}

TEST(AkvqVl, StorageExampleOfTheSpec) {
  // §5: PSA, T = 4096, 143 fp16 tokens (128 recent + 15 pivots), others 2-bit with fp16 scale +
  // zero per 128 channels (0.25 bpe) → (3953·2.25 + 143·16)/4096 ≈ 2.73 bpe.
  const int d = 128;
  const std::size_t T = 4096;
  Q::Config cfg;
  Harness h(d, cfg, T, 10);
  const Prompt p = make_prompt(T, d, 13);
  std::vector<Modality> text(T, Modality::kText);
  h.append(p.k.data(), p.v.data(), T, p.pos.data(), text.data());
  std::size_t n16 = 0, n2 = 0;
  for (std::size_t t = 0; t < T; ++t) {
    n16 += h.store->slot_class(t) == kq::AkvqClass::kFp16;
    n2 += h.store->slot_class(t) == kq::AkvqClass::kLow;
  }
  EXPECT_EQ(n16, 143u);
  EXPECT_EQ(n2, 3953u);
  const std::size_t row_bits = kk::akvq_row_bytes(d, 128) * 8;
  EXPECT_EQ(row_bits, 2u * d + 32u);  // 2 bits + 0.25 bpe metadata
  const double bpe = (double(n2) * row_bits + double(n16) * 16 * d) / (double(T) * d);
  EXPECT_NEAR(bpe, 2.73, 0.005);
  EXPECT_NEAR(2.0 + 14.0 * n16 / T, 2.49, 0.005);  // payload before metadata
}

// Attention through the Store vs a double-precision reference over the dequantized contents.
void check_attention(const Harness& h, std::uint32_t seed) {
  const std::size_t d = static_cast<std::size_t>(h.d), n = h.store->size();
  std::vector<float> K(n * d), V(n * d);
  h.store->read(0, n, K.data(), V.data(), d, nullptr);
  const int rows = 3;
  auto q = randn(rows * d, seed, 0.2f);
  std::vector<float> L(rows * n);
  h.store->logits(q.data(), rows, L.data(), n);
  std::vector<float> P(rows * n);
  std::vector<float> out(rows * d, 0.0f);
  for (int r = 0; r < rows; ++r) {
    double m = -1e300;
    std::vector<double> ref(n);
    for (std::size_t j = 0; j < n; ++j) {
      double s = 0, a = 0;
      for (std::size_t c = 0; c < d; ++c) {
        s += double(q[r * d + c]) * K[j * d + c];
        a += std::fabs(double(q[r * d + c]) * K[j * d + c]);
      }
      ref[j] = s;
      ASSERT_NEAR(L[r * n + j], s, 2e-5 * (1 + a)) << "row " << r << " slot " << j;
      m = std::max(m, double(L[r * n + j]));
    }
    double z = 0;
    for (std::size_t j = 0; j < n; ++j) z += std::exp(L[r * n + j] - m);
    for (std::size_t j = 0; j < n; ++j) P[r * n + j] = float(std::exp(L[r * n + j] - m) / z);
  }
  h.store->accumulate(P.data(), n, rows, out.data());
  for (int r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < d; ++c) {
      double s = 0, a = 0;
      for (std::size_t j = 0; j < n; ++j) {
        s += double(P[r * n + j]) * V[j * d + c];
        a += std::fabs(double(P[r * n + j]) * V[j * d + c]);
      }
      ASSERT_NEAR(out[r * d + c], s, 2e-5 * (1 + a)) << "row " << r << " channel " << c;
    }
}

TEST(AkvqVl, FusedAttentionMatchesDequantizedReference) {
  for (int d : {64, 80, 96, 128, 256}) {
    Q::Config cfg;
    cfg.recent_window = 16;
    cfg.pivots = 4;
    const Prompt p = make_prompt(230, d, 17 + d);
    for (int layer : {0, 3}) {
      Harness h(d, cfg, 256, layer);
      append_streamed(h, p, 150);
      check_attention(h, 23 + d + layer);
    }
  }
}

TEST(AkvqVl, ReadReturnsOriginalSpaceWithinQuantError) {
  const int d = 128;
  Q::Config cfg;
  cfg.recent_window = 10;
  cfg.pivots = 2;
  const Prompt p = make_prompt(60, d, 29);
  Harness h(d, cfg, 64, 4);
  append_streamed(h, p, 60);
  std::vector<float> K(60 * d), V(60 * d);
  h.store->read(0, 60, K.data(), V.data(), d, nullptr);
  const auto H = ref_hadamard(d);
  std::size_t quantized = 0;
  for (std::size_t t = 0; t < 60; ++t) {
    // rotated original x' = H x and rotated reconstruction H x̂, in double
    std::vector<double> xr(d, 0.0), yr(d, 0.0);
    for (int i = 0; i < d; ++i)
      for (int c = 0; c < d; ++c) {
        xr[i] += H[i * d + c] * p.k[t * d + c];
        yr[i] += H[i * d + c] * K[t * d + c];
      }
    if (h.store->slot_class(t) == kq::AkvqClass::kFp16) {
      for (int i = 0; i < d; ++i) EXPECT_NEAR(yr[i], xr[i], 1e-3 * (1 + std::fabs(xr[i]))) << t;
      continue;
    }
    ++quantized;
    // one group of 128 channels, 2-bit, clip 0.8: BB-1 bound on in-range values
    double mn = 1e300, mx = -1e300;
    for (double x : xr) {
      mn = std::min(mn, x);
      mx = std::max(mx, x);
    }
    const double lo = 0.8 * mn, hi = 0.8 * mx, s = (hi - lo) / 3.0;
    for (int i = 0; i < d; ++i) {
      const double xc = std::min(std::max(xr[i], lo), hi);
      EXPECT_LE(std::fabs(yr[i] - xc), s / 2 * 1.01 + 1e-4) << "token " << t << " channel " << i;
    }
  }
  EXPECT_EQ(quantized, 60u - 10u - 2u);
}

TEST(AkvqVl, EvictionDropsSideDataWithoutPromotion) {
  const int d = 64;
  Q::Config cfg;
  cfg.recent_window = 16;
  cfg.pivots = 3;
  const std::size_t T = 200;
  const Prompt p = make_prompt(T, d, 31);
  Harness h(d, cfg, T, 6);
  append_streamed(h, p, 150);
  std::vector<std::size_t> pivots;
  for (std::size_t t = 0; t < T; ++t)
    if (h.store->is_pivot(t)) pivots.push_back(t);
  ASSERT_EQ(pivots.size(), 3u);
  const std::size_t mem_before = h.store->memory_bytes();
  // evict one pivot, a block of quantized tokens and two recent tokens
  std::vector<std::uint8_t> keep(T, 1), ret(T);
  keep[pivots[0]] = 0;
  for (std::size_t t = 40; t < 90; ++t) keep[t] = 0;
  keep[T - 3] = keep[T - 7] = 0;
  const std::size_t kept = h.store->plan_compact(keep.data(), ret.data());
  h.store->compact(ret.data(), nullptr);
  ASSERT_EQ(h.store->size(), kept);
  EXPECT_EQ(h.store->num_pivots(), 2u);
  EXPECT_EQ(h.store->window(), 14u);
  std::size_t n16 = 0;
  for (std::size_t j = 0; j < kept; ++j) n16 += h.store->slot_class(j) == kq::AkvqClass::kFp16;
  EXPECT_EQ(n16, 14u + h.store->num_pivots());  // nobody promoted
  // positions follow the slots
  std::size_t j = 0;
  for (std::size_t t = 0; t < T; ++t) {
    if (keep[t]) {
      EXPECT_EQ(h.store->position(j++), p.pos[t]);
    }
  }
  check_attention(h, 37);
  EXPECT_LE(h.store->memory_bytes(), mem_before);
  // decode continues: generated tokens never become pivots; window refills to 16
  Prompt g = make_prompt(20, d, 41);
  for (std::size_t t = 0; t < 20; ++t) {
    const std::int32_t pos = static_cast<std::int32_t>(T + t);
    const Modality m = Modality::kGenerated;
    g.k[t * d] = 500.0f;  // huge, but generated
    h.append(g.k.data() + t * d, g.v.data() + t * d, 1, &pos, &m);
  }
  EXPECT_EQ(h.store->window(), 16u);
  EXPECT_EQ(h.store->num_pivots(), 2u);
  check_attention(h, 43);
  // truncation into the window and into the quantized part
  h.store->truncate(h.store->size() - 5, nullptr);
  EXPECT_EQ(h.store->window(), 11u);
  check_attention(h, 47);
  h.store->truncate(30, nullptr);
  EXPECT_EQ(h.store->window(), 0u);
  check_attention(h, 53);
  h.store->clear();
  EXPECT_EQ(h.store->size(), 0u);
}

TEST(AkvqVl, ExactMemoryBytesAndTsaExtensionBlocks) {
  const int d = 128;
  Q::Config cfg;
  // block: pos 512 + class 128 + row index 256 + 2 × 128 rows of (32 + 4) bytes
  EXPECT_EQ(Q::Store::block_bytes(d, cfg), 512u + 128u + 256u + 2u * 4608u);
  EXPECT_EQ(Q::Store::max_blocks(300, cfg), 6u);  // TSA layers exist → 2 blocks per 128 slots reserved
  const std::size_t fixed = 2 * 143 * d * 2 + 143 * 2 + 15 * 8;
  EXPECT_EQ(Q::Store::fixed_bytes(d, cfg), fixed);
  const Prompt p = make_prompt(300, d, 59);
  Harness psa(d, cfg, 300, 5), tsa(d, cfg, 300, 0);
  EXPECT_EQ(psa.store->memory_bytes(), fixed);
  psa.append(p.k.data(), p.v.data(), 300, p.pos.data(), p.mod.data());
  tsa.append(p.k.data(), p.v.data(), 300, p.pos.data(), p.mod.data());
  EXPECT_EQ(psa.store->memory_bytes(), 3 * Q::Store::block_bytes(d, cfg) + fixed);
  EXPECT_EQ(tsa.store->memory_bytes(), 6 * Q::Store::block_bytes(d, cfg) + fixed);
  Q::Config all_psa = cfg;
  all_psa.tsa_layers = 0;
  EXPECT_EQ(Q::Store::max_blocks(300, all_psa), 3u);
  EXPECT_EQ(kq::AkvqVlQuant<2>::Store::max_blocks(300, kq::AkvqVlQuant<2>::Config{}), 3u);  // no 4-bit rows
}

TEST(AkvqVl, BadConfigsAreRejected) {
  CacheShape shape{4, 8, 2, 96, 512};
  Q::Config cfg;
  cfg.validate(shape);  // group = min(128, 96) = 96
  auto bad = cfg;
  bad.clip_low = 0.0f;
  kvtest::expect_invalid_argument([&] { bad.validate(shape); }, "clip_low");
  bad = cfg;
  bad.clip_high = 1.5f;
  kvtest::expect_invalid_argument([&] { bad.validate(shape); }, "clip_high");
  bad = cfg;
  bad.group = 36;
  kvtest::expect_invalid_argument([&] { bad.validate(shape); }, "group");
  bad = cfg;
  bad.group = 64;  // 96 % 64 ≠ 0
  kvtest::expect_invalid_argument([&] { bad.validate(shape); }, "group");
  bad = cfg;
  bad.layer_types = {kq::AkvqLayerType::kTsa, kq::AkvqLayerType::kPsa};
  kvtest::expect_invalid_argument([&] { bad.validate(shape); }, "layer_types.size()");
  bad = cfg;
  bad.tsa_layers = -1;
  kvtest::expect_invalid_argument([&] { bad.validate(shape); }, "tsa_layers");
  bad = cfg;
  bad.recent_window = 5000;
  kvtest::expect_invalid_argument([&] { bad.validate(shape); }, "recent_window + pivots");
  // The 3-argument constructor cannot know its layer: mixed tables are rejected.
  BlockPool pool(Q::Store::block_bytes(96, cfg), 4);
  kvtest::expect_invalid_argument([&] { Q::Store s(96, cfg, BlockTable(&pool, 4)); }, "layer_types");
  auto uniform = cfg;
  uniform.layer_types.assign(4, kq::AkvqLayerType::kPsa);
  Q::Store ok(96, uniform, BlockTable(&pool, 4));
  EXPECT_FALSE(ok.is_tsa());
}

}  // namespace
