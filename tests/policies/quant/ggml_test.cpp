// SPDX-License-Identifier: Apache-2.0
// llama.cpp block formats in the cache (quantization.md §10): block layout and byte-exact
// quantization against an independent transcription of ggml's reference quantizers (and the
// spec's hand-worked block), round-trip error envelopes, cache contents byte-identical to the
// independent quantizer, attention against the double-precision oracle over the dequantized cache
// (plain, mixed K/V formats, Hadamard-rotated), bits per element, StreamingLLM eviction freeing
// memory, truncate, and rejection of a bad head_dim / unrepresentable input.

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "kvcompress/policies/quant/ggml.hpp"
#include "reference/float16_reference.hpp"
#include "support/cache_test_support.hpp"

namespace {

using namespace kvcompress;
namespace fmt = quant::formats;

// ---------------------------------------------------------------------------------------------
// Independent transcription of ggml-quants.c (quantize_row_*_ref), in double-checked pieces:
// fp32 arithmetic, `volatile` forces each C expression's rounding (no FMA contraction), fp16
// conversion through the test's own round-to-nearest-even reference.

std::uint16_t ref_f16_bits(float f) {
  const double r = kvref::round_to_f16(static_cast<double>(f));
  std::uint16_t sign = std::signbit(r) ? 0x8000 : 0;
  const double a = std::fabs(r);
  if (a == 0.0) return sign;
  if (std::isinf(a)) return static_cast<std::uint16_t>(sign | 0x7c00);
  if (a < 0x1p-14) return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(a * 0x1p24));
  int e = 0;
  const double m = std::frexp(a, &e);  // a = m·2^e, m ∈ [0.5, 1)
  const int E = e - 1;
  const auto mant = static_cast<std::uint16_t>((m * 2.0 - 1.0) * 1024.0);
  return static_cast<std::uint16_t>(sign | ((E + 15) << 10) | mant);
}

struct RefQ8 {
  std::uint16_t d;
  std::int8_t qs[32];
};
struct RefQ4 {
  std::uint16_t d, m;
  std::uint8_t qs[16];
};

RefQ8 ref_q8_0(const float* x) {
  RefQ8 y{};
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) {
    const float v = x[j];
    amax = amax > std::fabs(v) ? amax : std::fabs(v);
  }
  const float d = amax / ((1 << 7) - 1);
  const float id = d ? 1.0f / d : 0.0f;
  y.d = ref_f16_bits(d);
  for (int j = 0; j < 32; ++j) {
    volatile float x0 = x[j] * id;
    y.qs[j] = static_cast<std::int8_t>(roundf(x0));
  }
  return y;
}

RefQ4 ref_q4_0(const float* x) {
  RefQ4 y{};
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j) {
    const float v = x[j];
    if (amax < std::fabs(v)) {
      amax = std::fabs(v);
      max = v;
    }
  }
  const float d = max / -8;
  const float id = d ? 1.0f / d : 0.0f;
  y.d = ref_f16_bits(d);
  for (int j = 0; j < 16; ++j) {
    volatile float x0 = x[j] * id;
    volatile float x1 = x[16 + j] * id;
    volatile float s0 = x0 + 8.5f, s1 = x1 + 8.5f;
    const std::uint8_t xi0 = static_cast<std::uint8_t>(std::min<int>(15, static_cast<std::int8_t>(s0)));
    const std::uint8_t xi1 = static_cast<std::uint8_t>(std::min<int>(15, static_cast<std::int8_t>(s1)));
    y.qs[j] = static_cast<std::uint8_t>(xi0 | (xi1 << 4));
  }
  return y;
}

RefQ4 ref_q4_1(const float* x) {
  RefQ4 y{};
  float min = FLT_MAX, max = -FLT_MAX;
  for (int j = 0; j < 32; ++j) {
    const float v = x[j];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const float d = (max - min) / ((1 << 4) - 1);
  const float id = d ? 1.0f / d : 0.0f;
  y.d = ref_f16_bits(d);
  y.m = ref_f16_bits(min);
  for (int j = 0; j < 16; ++j) {
    volatile float x0 = (x[j] - min) * id;
    volatile float x1 = (x[16 + j] - min) * id;
    volatile float s0 = x0 + 0.5f, s1 = x1 + 0.5f;
    const std::uint8_t xi0 = static_cast<std::uint8_t>(std::min<int>(15, static_cast<std::int8_t>(s0)));
    const std::uint8_t xi1 = static_cast<std::uint8_t>(std::min<int>(15, static_cast<std::int8_t>(s1)));
    y.qs[j] = static_cast<std::uint8_t>(xi0 | (xi1 << 4));
  }
  return y;
}

// ggml's block bytes of a row of d floats, from the reference above.
std::vector<std::uint8_t> ref_row(fmt::GgmlType type, const float* x, int d) {
  std::vector<std::uint8_t> out;
  auto put = [&](const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  };
  for (int b = 0; b < d / 32; ++b) {
    const float* xb = x + 32 * b;
    if (type == fmt::GgmlType::kQ8_0) {
      const RefQ8 y = ref_q8_0(xb);
      put(&y.d, 2);
      put(y.qs, 32);
    } else if (type == fmt::GgmlType::kQ4_0) {
      const RefQ4 y = ref_q4_0(xb);
      put(&y.d, 2);
      put(y.qs, 16);
    } else {
      const RefQ4 y = ref_q4_1(xb);
      put(&y.d, 2);
      put(&y.m, 2);
      put(y.qs, 16);
    }
  }
  return out;
}

std::vector<std::uint8_t> lib_row(fmt::GgmlType type, const float* x, int d) {
  std::vector<std::uint8_t> out(fmt::ggml_row_bytes(type, d));
  fmt::ggml_quantize_row(type, x, d, out.data());
  return out;
}

// Blocks built to hit the format's corner cases: ties of x·id at .5, signed extremes on either
// side, all-equal, zero, subnormal-scale and huge-scale blocks, first-vs-later equal |max|.
std::vector<float> adversarial_block(int kind, std::mt19937& g) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(32);
  for (float& v : x) v = nd(g);
  switch (kind % 10) {
    case 0: break;
    case 1: std::fill(x.begin(), x.end(), 0.0f); break;
    case 2: std::fill(x.begin(), x.end(), -3.25f); break;
    case 3: x[5] = 4.0f; x[20] = -4.0f; break;  // equal |max|, positive first
    case 4: x[5] = -4.0f; x[20] = 4.0f; break;  // equal |max|, negative first
    case 5: for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16) * 0.5f; break;  // exact ties
    case 6: for (float& v : x) v *= 1e-6f; break;                                            // fp16-subnormal d
    case 7: for (float& v : x) v *= 9000.0f; break;                                          // large d
    case 8: for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j % 16) / 15.0f; break;  // q4_1 grid
    case 9: x[0] = 127.0f; for (int j = 1; j < 32; ++j) x[j] = static_cast<float>(j) - 0.5f; break;  // q8 ties
  }
  return x;
}

// ---------------------------------------------------------------------------------------------

TEST(GgmlBlocks, SizesAndLayoutMatchGgml) {
  EXPECT_EQ(sizeof(fmt::block_q8_0), 34u);
  EXPECT_EQ(sizeof(fmt::block_q4_0), 18u);
  EXPECT_EQ(sizeof(fmt::block_q4_1), 20u);
  EXPECT_EQ(fmt::ggml_row_bytes(fmt::GgmlType::kQ8_0, 128), 4u * 34u);
  EXPECT_EQ(fmt::ggml_row_bytes(fmt::GgmlType::kQ4_0, 96), 3u * 18u);
  EXPECT_EQ(fmt::ggml_row_bytes(fmt::GgmlType::kQ4_1, 64), 2u * 20u);
}

// quantization.md §10 worked example: block [0.5, −1.0, 0.25, 0.0, 0 × 28].
TEST(GgmlBlocks, HandWorkedBlocks) {
  float x[32] = {0.5f, -1.0f, 0.25f, 0.0f};
  fmt::block_q8_0 a;
  fmt::quantize_row_q8_0(x, &a, 32);
  EXPECT_EQ(a.d, 0x2008);  // fp16(1/127) = 0.0078735
  EXPECT_EQ(a.qs[0], 64);  // 0.5·127 = 63.5 → roundf → 64 (ties away from zero)
  EXPECT_EQ(a.qs[1], -127);
  EXPECT_EQ(a.qs[2], 32);  // 31.75 → 32
  for (int j = 3; j < 32; ++j) EXPECT_EQ(a.qs[j], 0);

  fmt::block_q4_0 b;
  fmt::quantize_row_q4_0(x, &b, 32);
  EXPECT_EQ(b.d, 0x3000);  // max = −1 → d = 0.125, codes [12, 0, 10, 8, 8…]
  const std::uint8_t q40[16] = {0x8C, 0x80, 0x8A, 0x88, 0x88, 0x88, 0x88, 0x88,
                                0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88};
  EXPECT_EQ(std::memcmp(b.qs, q40, 16), 0);
  float y[32];
  fmt::dequantize_row_q4_0(&b, y, 32);
  EXPECT_EQ(y[0], 0.5f);
  EXPECT_EQ(y[1], -1.0f);
  EXPECT_EQ(y[2], 0.25f);
  EXPECT_EQ(y[3], 0.0f);

  fmt::block_q4_1 c;
  fmt::quantize_row_q4_1(x, &c, 32);
  EXPECT_EQ(c.d, 0x2E66);  // fp16(0.1) = 0.0999756
  EXPECT_EQ(c.m, 0xBC00);  // −1.0
  const std::uint8_t q41[16] = {0xAF, 0xA0, 0xAD, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA,
                                0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA};  // codes [15, 0, 13, 10, 10…]
  EXPECT_EQ(std::memcmp(c.qs, q41, 16), 0);
  fmt::dequantize_row_q4_1(&c, y, 32);
  EXPECT_NEAR(y[0], 0.5, 1e-3);
  EXPECT_EQ(y[1], -1.0f);
  EXPECT_NEAR(y[2], 0.3, 1e-3);
  EXPECT_NEAR(y[3], 0.0, 1e-3);

  // Byte view of whole structs (ggml's on-disk/in-cache bytes).
  std::uint8_t raw[20];
  std::memcpy(raw, &c, 20);
  EXPECT_EQ(raw[0], 0x66);
  EXPECT_EQ(raw[1], 0x2E);
  EXPECT_EQ(raw[2], 0x00);
  EXPECT_EQ(raw[3], 0xBC);
  EXPECT_EQ(raw[4], 0xAF);
}

TEST(GgmlBlocks, ZeroBlocks) {
  float x[32] = {};
  float y[32];
  fmt::block_q8_0 a;
  fmt::quantize_row_q8_0(x, &a, 32);
  fmt::dequantize_row_q8_0(&a, y, 32);
  for (float v : y) EXPECT_EQ(v, 0.0f);
  fmt::block_q4_0 b;
  fmt::quantize_row_q4_0(x, &b, 32);
  EXPECT_EQ(b.d, 0x8000);  // 0 / −8 = −0 (ggml stores the negative zero)
  fmt::dequantize_row_q4_0(&b, y, 32);
  for (float v : y) EXPECT_EQ(v, 0.0f);
  std::fill(x, x + 32, 2.5f);
  fmt::block_q4_1 c;
  fmt::quantize_row_q4_1(x, &c, 32);
  EXPECT_EQ(c.d, 0);
  fmt::dequantize_row_q4_1(&c, y, 32);
  for (float v : y) EXPECT_EQ(v, 2.5f);  // d = 0 → m
}

TEST(GgmlBlocks, ByteExactAgainstIndependentReference) {
  std::mt19937 g(2024);
  for (int kind = 0; kind < 400; ++kind) {
    const auto x = adversarial_block(kind, g);
    for (auto type : {fmt::GgmlType::kQ8_0, fmt::GgmlType::kQ4_0, fmt::GgmlType::kQ4_1})
      ASSERT_EQ(lib_row(type, x.data(), 32), ref_row(type, x.data(), 32))
          << fmt::ggml_type_name(type) << " block kind " << kind % 10 << " #" << kind;
  }
  // Whole rows (d = 128) of LLM-like data.
  const auto kv = kvtest::random_kv(200, 1, 128, 5);
  for (std::size_t t = 0; t < 200; ++t)
    for (auto type : {fmt::GgmlType::kQ8_0, fmt::GgmlType::kQ4_0, fmt::GgmlType::kQ4_1})
      ASSERT_EQ(lib_row(type, kv.data() + t * 128, 128), ref_row(type, kv.data() + t * 128, 128)) << t;
}

// Round-trip error on N(0, 1) rows (with 8× outlier channels, kvtest::random_kv): RMSE relative to
// the data RMS within an envelope per format, and every element within the format's bound.
TEST(GgmlBlocks, RoundTripErrorEnvelopes) {
  const int d = 128;
  const std::size_t n = 2000;
  const auto x = kvtest::random_kv(n, 1, d, 9, /*outlier_channels=*/false);
  struct Env {
    fmt::GgmlType type;
    double lo, hi;
  };
  // Expected RMSE/RMS for Gaussian blocks of 32: step/√12 with step ≈ 2.1σ·(2/255) (q8_0),
  // 2.1σ/8 (q4_0), 4.2σ/15 (q4_1).
  for (const Env e : {Env{fmt::GgmlType::kQ8_0, 0.003, 0.007}, Env{fmt::GgmlType::kQ4_0, 0.06, 0.11},
                      Env{fmt::GgmlType::kQ4_1, 0.06, 0.11}}) {
    double se = 0, ss = 0;
    std::vector<std::uint8_t> row(fmt::ggml_row_bytes(e.type, d));
    std::vector<float> y(d);
    for (std::size_t t = 0; t < n; ++t) {
      const float* xt = x.data() + t * d;
      fmt::ggml_quantize_row(e.type, xt, d, row.data());
      fmt::ggml_dequantize_row(e.type, row.data(), d, y.data());
      for (int b = 0; b < d / 32; ++b) {
        float amax = 0, lo = xt[32 * b], hi = lo;
        for (int j = 0; j < 32; ++j) {
          amax = std::max(amax, std::fabs(xt[32 * b + j]));
          lo = std::min(lo, xt[32 * b + j]);
          hi = std::max(hi, xt[32 * b + j]);
        }
        // Per-element bound: half a step (a full step for q4_0's clamped opposite extreme),
        // plus the fp16 rounding of the stored scale times the largest code.
        const double step = e.type == fmt::GgmlType::kQ8_0 ? amax / 127.0
                            : e.type == fmt::GgmlType::kQ4_0 ? amax / 8.0 : (hi - lo) / 15.0;
        const double bound = (e.type == fmt::GgmlType::kQ4_0 ? 1.0 : 0.5) * step + 16 * step * 0x1p-11 +
                             std::fabs(lo) * 0x1p-11 + 1e-7;
        for (int j = 0; j < 32; ++j) {
          const double err = std::fabs(static_cast<double>(y[32 * b + j]) - xt[32 * b + j]);
          ASSERT_LE(err, bound) << fmt::ggml_type_name(e.type) << " t " << t << " c " << 32 * b + j;
          se += err * err;
          ss += static_cast<double>(xt[32 * b + j]) * xt[32 * b + j];
        }
      }
    }
    const double rel = std::sqrt(se / ss);
    EXPECT_GT(rel, e.lo) << fmt::ggml_type_name(e.type);
    EXPECT_LT(rel, e.hi) << fmt::ggml_type_name(e.type);
    std::printf("[ggml] %s round-trip RMSE/RMS = %.5f\n", fmt::ggml_type_name(e.type), rel);
  }
}

// ---------------------------------------------------------------------------------------------
// Cache level.

template <class Q>
using GgmlCache = KVCache<Policy<evict::None, merge::None, Q>>;

TEST(GgmlPolicy, NamesAndLimits) {
  EXPECT_STREQ(quant::GgmlQ8_0::kName, "q8_0");
  EXPECT_STREQ(quant::GgmlQ4_0::kName, "q4_0");
  EXPECT_STREQ(quant::GgmlQ4_1::kName, "q4_1");
  EXPECT_STREQ(quant::GgmlQ8_0Had::kName, "q8_0_had");
  EXPECT_STREQ(quant::GgmlQ4_0Had::kName, "q4_0_had");
  EXPECT_STREQ((quant::Ggml<fmt::Q8_0, fmt::Q4_0>::kName), "kq8_0_vq4_0");
  EXPECT_STREQ((quant::Ggml<fmt::Q4_1, fmt::Q8_0, quant::GgmlRotation::kKeysValues>::kName), "kq4_1_vq8_0_hadkv");
  EXPECT_EQ(quant::GgmlQ8_0::kMaxAbsInput, kHalfMax);
  static_assert(is_quant_policy_v<quant::GgmlQ8_0> && is_quant_policy_v<quant::GgmlQ4_1Had>);
}

// §10: 8.5 / 4.5 / 5.0 bits per element of the block storage (K and V), independent formats mix.
TEST(GgmlPolicy, BitsPerElement) {
  for (int d : {64, 96, 128, 256}) {
    const CacheShape s{2, 8, 4, d, 4096};
    const double elems = 2.0 * d * 2 * 4;  // K+V × layers × kv heads
    EXPECT_DOUBLE_EQ(GgmlCache<quant::GgmlQ8_0>::bytes_per_token(s) * 8 / elems, 8.5) << d;
    EXPECT_DOUBLE_EQ(GgmlCache<quant::GgmlQ4_0>::bytes_per_token(s) * 8 / elems, 4.5) << d;
    EXPECT_DOUBLE_EQ(GgmlCache<quant::GgmlQ4_1>::bytes_per_token(s) * 8 / elems, 5.0) << d;
    EXPECT_DOUBLE_EQ((GgmlCache<quant::Ggml<fmt::Q8_0, fmt::Q4_0>>::bytes_per_token(s) * 8 / elems), 6.5) << d;
    EXPECT_DOUBLE_EQ(GgmlCache<quant::GgmlQ4_0Had>::bytes_per_token(s) * 8 / elems, 4.5) << d;
  }
  // memory_bytes: whole 64-slot blocks per stream + slot metadata.
  const CacheShape s{1, 4, 2, 128, 1000};
  GgmlCache<quant::GgmlQ4_0> c(s);
  auto k = kvtest::random_kv(130, 2, 128, 3);
  c.append(0, k.data(), k.data(), 130);
  EXPECT_EQ(c.memory_bytes(), 2 * 3 * (64 * 72 * 2) + 130 * GgmlCache<quant::GgmlQ4_0>::kMetadataBytesPerSlot);
}

// Stored rows are ggml's bytes for the fp32 inputs (independent reference above).
template <class Q>
void contents_are_ggml_bytes(int d) {
  const CacheShape s{2, 4, 2, d, 600};
  GgmlCache<Q> c(s);
  const std::size_t T = 333;
  auto k = kvtest::random_kv(T, 2, d, 41);
  auto v = kvtest::random_kv(T, 2, d, 42, false);
  c.append(1, k.data(), v.data(), 200);
  for (std::size_t t = 200; t < T; ++t) c.append(1, k.data() + t * 2 * d, v.data() + t * 2 * d, 1);
  for (int h = 0; h < 2; ++h) {
    const auto& st = c.stream(1, h);
    ASSERT_EQ(st.size(), T);
    for (std::size_t t = 0; t < T; ++t) {
      const auto rk = ref_row(Q::kKeyType, k.data() + (t * 2 + h) * d, d);
      const auto rv = ref_row(Q::kValueType, v.data() + (t * 2 + h) * d, d);
      ASSERT_EQ(st.key_row_bytes(), rk.size());
      ASSERT_TRUE(std::equal(rk.begin(), rk.end(), st.key_row(t))) << Q::kName << " key " << t << " head " << h;
      ASSERT_TRUE(std::equal(rv.begin(), rv.end(), st.value_row(t))) << Q::kName << " value " << t;
    }
  }
}
TEST(GgmlContents, Q8_0D128) { contents_are_ggml_bytes<quant::GgmlQ8_0>(128); }
TEST(GgmlContents, Q4_0D96) { contents_are_ggml_bytes<quant::GgmlQ4_0>(96); }
TEST(GgmlContents, Q4_1D64) { contents_are_ggml_bytes<quant::GgmlQ4_1>(64); }
TEST(GgmlContents, MixedQ8_0KeysQ4_0ValuesD256) { contents_are_ggml_bytes<quant::Ggml<fmt::Q8_0, fmt::Q4_0>>(256); }

// Rotated keys: stored rows are ggml's bytes of H·k; materialize returns H·dequant ≈ k.
TEST(GgmlContents, RotatedKeysStoreQuantizedHadamardRows) {
  const int d = 96;  // diag(H64, H32)
  const CacheShape s{1, 2, 1, d, 100};
  GgmlCache<quant::GgmlQ8_0Had> c(s);
  auto k = kvtest::random_kv(50, 1, d, 7);
  c.append(0, k.data(), k.data(), 50);
  std::vector<float> hk(d);
  for (std::size_t t = 0; t < 50; ++t) {
    std::copy(k.begin() + t * d, k.begin() + (t + 1) * d, hk.begin());
    quant::common::walsh_hadamard_transform(hk.data(), 64);  // block 1
    quant::common::walsh_hadamard_transform(hk.data() + 64, 32);  // block 2
    const auto rk = ref_row(fmt::GgmlType::kQ8_0, hk.data(), d);
    ASSERT_TRUE(std::equal(rk.begin(), rk.end(), c.stream(0, 0).key_row(t))) << t;
    const auto rv = ref_row(fmt::GgmlType::kQ8_0, k.data() + t * d, d);  // values unrotated
    ASSERT_TRUE(std::equal(rv.begin(), rv.end(), c.stream(0, 0).value_row(t))) << t;
  }
  const auto slots = kvtest::live_slots(c, 0, 0);
  for (std::size_t i = 0; i < 50 * static_cast<std::size_t>(d); ++i) ASSERT_NEAR(slots.k[i], k[i], 0.02 * 8);
}

// Fused attention over the packed rows equals the oracle over the dequantized cache (exact fp32
// kernels: only summation order and, for rotated variants, the fp32 WHT of q differ).
template <class Q>
void attention_matches_oracle(int q_heads, int kv_heads, int d) {
  const CacheShape s{1, q_heads, kv_heads, d, 700};
  GgmlCache<Q> c(s);
  std::uint32_t seed = 100;
  for (int chunk = 0; chunk < 3; ++chunk) {
    auto k = kvtest::random_kv(100, kv_heads, d, seed++);
    auto v = kvtest::random_kv(100, kv_heads, d, seed++, false);
    auto q = kvtest::random_kv(100, q_heads, d, seed++);
    std::vector<float> out(q.size());
    c.append(0, k.data(), v.data(), 100);
    c.attend(0, q.data(), 100, out.data());
    kvtest::expect_attention_matches(c, 0, q, 100, out, 1e-4, 1e-4);
  }
  for (int step = 0; step < 70; ++step) {
    auto k = kvtest::random_kv(1, kv_heads, d, seed++);
    auto v = kvtest::random_kv(1, kv_heads, d, seed++, false);
    auto q = kvtest::random_kv(1, q_heads, d, seed++);
    std::vector<float> out(q.size());
    c.append(0, k.data(), v.data(), 1);
    c.attend(0, q.data(), 1, out.data());
    if (step % 23 == 0 || step == 69) kvtest::expect_attention_matches(c, 0, q, 1, out, 1e-4, 1e-4);
  }
}
TEST(GgmlAttention, Q8_0_Gqa4_D128) { attention_matches_oracle<quant::GgmlQ8_0>(32, 8, 128); }
TEST(GgmlAttention, Q4_0_D64) { attention_matches_oracle<quant::GgmlQ4_0>(8, 8, 64); }
TEST(GgmlAttention, Q4_1_D96) { attention_matches_oracle<quant::GgmlQ4_1>(6, 2, 96); }
TEST(GgmlAttention, Q4_0_D256) { attention_matches_oracle<quant::GgmlQ4_0>(4, 2, 256); }
TEST(GgmlAttention, MixedQ8_0KQ4_0V_D128) { attention_matches_oracle<quant::Ggml<fmt::Q8_0, fmt::Q4_0>>(8, 2, 128); }
TEST(GgmlAttention, RotatedKeysQ4_0_D128) { attention_matches_oracle<quant::GgmlQ4_0Had>(8, 2, 128); }
TEST(GgmlAttention, RotatedKeysValuesQ4_1_D96) {
  attention_matches_oracle<quant::Ggml<fmt::Q4_1, fmt::Q4_1, quant::GgmlRotation::kKeysValues>>(9, 3, 96);
}

// The quantized attention stays close to unquantized attention (end-to-end sanity of the format
// error, not only of the kernels): q8_0 within 2%, q4_0 within 15% of the output scale; the
// rotation lowers q4_0's key reconstruction error on data with outlier channels.
TEST(GgmlAttention, ErrorAgainstUnquantizedInputs) {
  const int d = 128;
  const CacheShape s{1, 4, 1, d, 600};
  auto k = kvtest::random_kv(500, 1, d, 61);
  auto v = kvtest::random_kv(500, 1, d, 62, false);
  auto q = kvtest::random_kv(1, 4, d, 63);
  kvref::HeadSlots exact;
  exact.k.assign(k.begin(), k.end());
  exact.v.assign(v.begin(), v.end());
  exact.pos.resize(500);
  for (int i = 0; i < 500; ++i) exact.pos[i] = i;
  std::vector<std::int64_t> qpos(4, 499);
  const auto ref = kvref::attention(exact, d, q.data(), 4, qpos.data(), 1.0 / std::sqrt(double(d)));
  auto err_of = [&](auto& c) {
    c.append(0, k.data(), v.data(), 500);
    std::vector<float> out(4 * d);
    c.attend(0, q.data(), 1, out.data());
    double e = 0, m = 0;
    for (int i = 0; i < 4 * d; ++i) {
      e = std::max(e, std::fabs(out[i] - ref[i]));
      m = std::max(m, std::fabs(ref[i]));
    }
    return e / m;
  };
  GgmlCache<quant::GgmlQ8_0> c8(s);
  GgmlCache<quant::GgmlQ4_0> c4(s);
  GgmlCache<quant::GgmlQ4_0Had> c4h(s);
  const double e8 = err_of(c8), e4 = err_of(c4), e4h = err_of(c4h);
  std::printf("[ggml] attention max rel error: q8_0 %.5f  q4_0 %.5f  q4_0_had %.5f\n", e8, e4, e4h);
  EXPECT_LT(e8, 0.02);
  EXPECT_LT(e4, 0.15);
  EXPECT_LT(e4h, 0.15);
  auto key_rmse = [&](auto& c) {
    std::vector<float> kk(k.size()), vv(v.size());
    c.materialize(0, kk.data(), vv.data());
    double se = 0;
    for (std::size_t i = 0; i < k.size(); ++i) se += (kk[i] - k[i]) * (kk[i] - k[i]);
    return std::sqrt(se / k.size());
  };
  const double r4 = key_rmse(c4), r4h = key_rmse(c4h);
  std::printf("[ggml] q4_0 key RMSE: plain %.4f  rotated %.4f\n", r4, r4h);
  EXPECT_LT(r4h, r4);
}

// Per-token rows are removed physically (BB-16 rule 2): StreamingLLM keeps sinks + window, memory
// stays bounded (blocks return to the pool), attention matches the oracle over what is kept.
TEST(GgmlEviction, StreamingWindowFreesBlocksAndMatchesOracle) {
  using C = KVCache<Policy<evict::StreamingLLM, merge::None, quant::GgmlQ4_0>>;
  const CacheShape s{1, 4, 2, 64, 1024};
  C::Config cfg{};
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 300;
  C c(s, cfg);
  auto k = kvtest::random_kv(2000, 2, 64, 31);
  auto v = kvtest::random_kv(2000, 2, 64, 33, false);
  auto q = kvtest::random_kv(2000, 4, 64, 32);
  std::vector<float> out(4 * 64);
  std::size_t peak = 0;
  for (std::size_t t = 0; t < 2000; ++t) {
    c.append(0, k.data() + t * 128, v.data() + t * 128, 1);
    c.attend(0, q.data() + t * 256, 1, out.data());
    peak = std::max(peak, c.memory_bytes());
    if (t % 250 == 249)
      kvtest::expect_attention_matches(c, 0, std::vector<float>(q.begin() + t * 256, q.begin() + (t + 1) * 256), 1,
                                       out, 1e-4, 1e-4);
  }
  EXPECT_EQ(c.size(0, 0), 304u);
  std::vector<std::int32_t> pos(304);
  c.positions(0, 1, pos.data());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(pos[i], i);
  for (int i = 4; i < 304; ++i) EXPECT_EQ(pos[i], 2000 - 304 + i);
  // Kept rows are the original quantized rows of their tokens (moved, not re-quantized).
  const auto slots = kvtest::live_slots(c, 0, 1);
  ASSERT_EQ(slots.pos.size(), 304u);
  for (int i = 0; i < 304; ++i) {
    const auto rk = ref_row(fmt::GgmlType::kQ4_0, k.data() + (static_cast<std::size_t>(pos[i]) * 2 + 1) * 64, 64);
    std::vector<float> xk(64);
    fmt::ggml_dequantize_row(fmt::GgmlType::kQ4_0, rk.data(), 64, xk.data());
    for (int x = 0; x < 64; ++x) ASSERT_EQ(slots.k[static_cast<std::size_t>(i) * 64 + x], xk[x]) << i;
  }
  // Without freeing 2000 tokens would need 32 blocks of 64 slots per stream; the live 304 slots
  // plus lazily compacted dead ones stay within the 1024-slot capacity = 16 blocks.
  const std::size_t block = 2 * 64 * 36;  // K + V rows of 2 q4_0 blocks
  EXPECT_LE(peak, 2 * 16 * block + 1024 * 6);
  EXPECT_LT(c.memory_bytes(), 2 * 32 * block);
}

TEST(GgmlTruncate, DropsTailKeepsPrefixAndContinues) {
  for (std::size_t m : {0u, 1u, 63u, 64u, 65u, 200u}) {
    const CacheShape s{1, 4, 2, 64, 800};
    GgmlCache<quant::GgmlQ8_0> c(s);
    auto k = kvtest::random_kv(300, 2, 64, 21);
    auto v = kvtest::random_kv(300, 2, 64, 22);
    c.append(0, k.data(), v.data(), 300);
    const auto before = kvtest::live_slots(c, 0, 1);
    c.truncate(m);
    ASSERT_EQ(c.tokens_seen(0), static_cast<std::int64_t>(m));
    EXPECT_EQ(c.memory_bytes(), 2 * ((m + 63) / 64) * (64 * 68 * 2) + m * 6) << m;
    if (m > 0) {
      const auto after = kvtest::live_slots(c, 0, 1);
      ASSERT_EQ(after.pos.size(), m);
      for (std::size_t i = 0; i < m * 64; ++i) {
        ASSERT_EQ(after.k[i], before.k[i]);
        ASSERT_EQ(after.v[i], before.v[i]);
      }
    }
    auto k2 = kvtest::random_kv(100, 2, 64, 23);
    auto q = kvtest::random_kv(1, 4, 64, 24);
    std::vector<float> out(q.size());
    for (int t = 0; t < 100; ++t) c.append(0, k2.data() + t * 128, k2.data() + t * 128, 1);
    c.attend(0, q.data(), 1, out.data());
    kvtest::expect_attention_matches(c, 0, q, 1, out, 1e-4, 1e-4);
    EXPECT_EQ(c.size(0, 0), m + 100);
  }
}

// head_dim % 32 != 0 is rejected (llama.cpp requires multiples of the block size) with an
// InvalidArgument naming head_dim; nothing is built.
TEST(GgmlErrors, BadHeadDimRejected) {
  for (int d : {80, 48, 100, 16}) {
    const CacheShape s{1, 4, 2, d, 100};
    try {
      GgmlCache<quant::GgmlQ8_0> c(s);
      FAIL() << "head_dim " << d << " accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("head_dim"), std::string::npos) << e.what();
    }
    EXPECT_THROW(GgmlCache<quant::GgmlQ4_0>::bytes_per_token(s), InvalidArgument);
    EXPECT_THROW(GgmlCache<quant::GgmlQ4_1Had>::arena_bytes(s), InvalidArgument);
  }
}

// An input the fp16 scales cannot represent is rejected and the cache is unchanged.
TEST(GgmlErrors, UnrepresentableInputLeavesCacheUnchanged) {
  const CacheShape s{1, 4, 2, 64, 300};
  GgmlCache<quant::GgmlQ4_1> c(s);
  auto k = kvtest::random_kv(100, 2, 64, 5);
  c.append(0, k.data(), k.data(), 100);
  const auto before = kvtest::snapshot(c);
  auto bad = kvtest::random_kv(3, 2, 64, 6);
  bad[2 * 128 + 7] = 70000.0f;
  EXPECT_THROW(c.append(0, bad.data(), k.data(), 3), InvalidArgument);
  EXPECT_TRUE(kvtest::snapshot(c) == before);
  GgmlCache<quant::GgmlQ8_0Had> ch(s);
  bad[2 * 128 + 7] = 2000.0f;  // above fp16 max / 64 for rotated variants
  EXPECT_THROW(ch.append(0, bad.data(), bad.data(), 3), InvalidArgument);
  EXPECT_EQ(ch.size(0, 0), 0u);
}

}  // namespace
