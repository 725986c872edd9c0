// SPDX-License-Identifier: Apache-2.0
// KIVI in the cache (quantization.md §1): streaming invariants of the K-block flush and V-sliding
// windows (with the reference's decode order), stored contents against an independent
// re-quantization of the inputs, attention against the double-precision oracle over the
// dequantized cache, bits per element, zero-range exactness, truncate and eviction.

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "kvcompress/kvcompress.hpp"
#include "reference/float16_reference.hpp"
#include "reference/kivi_reference.hpp"
#include "support/cache_test_support.hpp"

namespace {

using namespace kvcompress;
template <int B>
using KiviCache = KVCache<Policy<evict::None, merge::None, quant::Kivi<B, B, 32, 128>>>;

float f16(float x) { return f16_bits_to_f32(f32_to_f16_bits(x)); }

// After a prefill append of T tokens the reference holds T − T mod R quantized keys and
// max(0, T − R) quantized values; a decode step's attention sees the state after T − 1 tokens
// plus the new token in full precision.
TEST(KiviStreaming, CountsFollowTheReferenceOrder) {
  constexpr std::size_t R = 128;
  for (std::size_t prompt : {1u, 100u, 127u, 128u, 129u, 300u, 512u}) {
    const CacheShape s{1, 2, 1, 64, 1200};
    KiviCache<2> c(s);
    auto k = kvtest::random_kv(prompt + 300, 1, 64, 7);
    c.append(0, k.data(), k.data(), prompt);
    const auto& st = c.stream(0, 0);
    EXPECT_EQ(st.quantized_keys(), prompt - prompt % R) << prompt;
    EXPECT_EQ(st.quantized_values(), prompt > R ? prompt - R : 0) << prompt;
    for (std::size_t t = prompt + 1; t <= prompt + 300; ++t) {
      c.append(0, k.data() + (t - 1) * 64, k.data() + (t - 1) * 64, 1);
      const std::size_t before = t - 1;
      ASSERT_EQ(st.size(), t);
      ASSERT_EQ(st.quantized_keys(), before - before % R) << "prompt " << prompt << " token " << t;
      ASSERT_EQ(st.quantized_values(), before > R ? before - R : 0) << "prompt " << prompt << " token " << t;
      ASSERT_LE(t - st.quantized_keys(), R);      // |Kr| ≤ R (R only while a flush is pending)
      ASSERT_LE(t - st.quantized_values(), R + 1);  // |Vr| ≤ R + 1 (the deferred slide)
    }
  }
}

// Every stored key/value equals an independent quantization (reference/kivi_reference.hpp) of the
// fp16-rounded input, or the fp16 input itself inside the windows.
template <int B>
void contents_match_reference(int d) {
  const CacheShape s{1, 4, 2, d, 1000};
  KiviCache<B> c(s);
  const std::size_t T = 613;
  auto k = kvtest::random_kv(T, 2, d, 11);
  auto v = kvtest::random_kv(T, 2, d, 12, false);
  c.append(0, k.data(), v.data(), 400);
  for (std::size_t t = 400; t < T; ++t) c.append(0, k.data() + t * 2 * d, v.data() + t * 2 * d, 1);
  const int gv = quant::Kivi<B, B>::value_group(d);
  for (int h = 0; h < 2; ++h) {
    const auto slots = kvtest::live_slots(c, 0, h);
    const auto& st = c.stream(0, h);
    std::vector<float> kh(T * d), vh(T * d);
    for (std::size_t t = 0; t < T; ++t)
      for (int x = 0; x < d; ++x) {
        kh[t * d + x] = f16(k[(t * 2 + h) * d + x]);
        vh[t * d + x] = f16(v[(t * 2 + h) * d + x]);
      }
    const std::size_t nk = st.quantized_keys(), nv = st.quantized_values();
    ASSERT_EQ(nk % 32, 0u);
    const auto vq = kvref::kivi_quantize_values(vh.data(), d, nv, d, gv, B);
    for (std::size_t g = 0; g < nk / 32; ++g) {
      const auto kq = kvref::kivi_quantize_keys(kh.data() + g * 32 * d, d, 32, d, B);
      for (int t = 0; t < 32; ++t)
        for (int x = 0; x < d; ++x) {
          const double ref = kq.dequant(t, x);
          ASSERT_NEAR(slots.k[(g * 32 + t) * d + x], ref, 1e-6 * std::fabs(ref) + 1e-7) << g << " " << t << " " << x;
        }
    }
    for (std::size_t t = nk; t < T; ++t)
      for (int x = 0; x < d; ++x) ASSERT_EQ(slots.k[t * d + x], kh[t * d + x]);
    for (std::size_t t = 0; t < T; ++t)
      for (int x = 0; x < d; ++x) {
        const double ref = t < nv ? vq.dequant(t, x) : vh[t * d + x];
        ASSERT_NEAR(slots.v[t * d + x], ref, 1e-6 * std::fabs(ref) + 1e-7) << t << " " << x;
      }
  }
}
TEST(KiviContents, TwoBitD128) { contents_match_reference<2>(128); }
TEST(KiviContents, TwoBitD80) { contents_match_reference<2>(80); }
TEST(KiviContents, FourBitD96) { contents_match_reference<4>(96); }
TEST(KiviContents, EightBitD64) { contents_match_reference<8>(64); }
TEST(KiviContents, TwoBitD256) { contents_match_reference<2>(256); }

// Fused attention over packed keys/values plus the fp16 windows equals the oracle over the
// dequantized cache. Tolerance: the AVX-512 key kernel quantizes the query to int8 per group
// (kernels/cpu/avx512/kivi.hpp states the bound); 2e-3 of the output scale covers it.
struct AttnCase {
  int bits, q_heads, kv_heads, d;
};
class KiviAttention : public testing::TestWithParam<AttnCase> {};
TEST_P(KiviAttention, MatchesOracleOverDequantizedCache) {
  const AttnCase p = GetParam();
  const CacheShape s{1, p.q_heads, p.kv_heads, p.d, 700};
  auto run = [&](auto& c) {
    std::uint32_t seed = 100;
    for (int chunk = 0; chunk < 3; ++chunk) {
      auto k = kvtest::random_kv(100, p.kv_heads, p.d, seed++);
      auto v = kvtest::random_kv(100, p.kv_heads, p.d, seed++, false);
      auto q = kvtest::random_kv(100, p.q_heads, p.d, seed++);
      std::vector<float> out(q.size());
      c.append(0, k.data(), v.data(), 100);
      c.attend(0, q.data(), 100, out.data());
      kvtest::expect_attention_matches(c, 0, q, 100, out, 2e-3, 2e-3);
    }
    for (int step = 0; step < 140; ++step) {
      auto k = kvtest::random_kv(1, p.kv_heads, p.d, seed++);
      auto v = kvtest::random_kv(1, p.kv_heads, p.d, seed++, false);
      auto q = kvtest::random_kv(1, p.q_heads, p.d, seed++);
      std::vector<float> out(q.size());
      c.append(0, k.data(), v.data(), 1);
      c.attend(0, q.data(), 1, out.data());
      if (step % 20 == 0 || step == 139) kvtest::expect_attention_matches(c, 0, q, 1, out, 2e-3, 2e-3);
    }
  };
  if (p.bits == 2) { KiviCache<2> c(s); run(c); }
  if (p.bits == 4) { KiviCache<4> c(s); run(c); }
  if (p.bits == 8) { KiviCache<8> c(s); run(c); }
}
INSTANTIATE_TEST_SUITE_P(Shapes, KiviAttention,
                         testing::Values(AttnCase{2, 32, 8, 128}, AttnCase{2, 8, 8, 64}, AttnCase{4, 8, 1, 80},
                                         AttnCase{4, 6, 2, 96}, AttnCase{8, 9, 3, 64}, AttnCase{2, 4, 2, 256}),
                         [](const testing::TestParamInfo<AttnCase>& i) {
                           return "b" + std::to_string(i.param.bits) + "_q" + std::to_string(i.param.q_heads) +
                                  "_kv" + std::to_string(i.param.kv_heads) + "_d" + std::to_string(i.param.d);
                         });

// §1 storage: the quantized part costs b + 32/G bits per element (3.0 for KIVI-2, 5.0 for KIVI-4
// at G = 32, d = 128), and memory_bytes() counts blocks, the fp16 window and slot metadata.
TEST(KiviStorage, BitsPerElementAndMemoryBytes) {
  const CacheShape s{1, 1, 1, 128, 4096};
  EXPECT_DOUBLE_EQ(KiviCache<2>::bytes_per_token(s) * 8 / (2 * 128), 3.0);
  EXPECT_DOUBLE_EQ(KiviCache<4>::bytes_per_token(s) * 8 / (2 * 128), 5.0);
  const CacheShape s2{2, 8, 2, 128, 4096};
  KiviCache<2> c(s2);
  auto k = kvtest::random_kv(1000, 2, 128, 3);
  for (int l = 0; l < 2; ++l) c.append(l, k.data(), k.data(), 1000);
  // 1000 tokens: 896 keys / 872 values quantized → 7 blocks of 128 slots per stream, each block
  // 4 key groups of (32·128·2/8 + 4·128) bytes and 128 value rows of (128·2/8 + 4·4) bytes.
  const std::size_t block = 4 * (1024 + 512) + 128 * (32 + 16);
  const std::size_t window = 2 * 129 * 128 * 2;
  EXPECT_EQ(c.memory_bytes(), 4 * (7 * block + window) + 2 * 1000 * 6);
}

TEST(KiviStorage, ZeroRangeGroupsAreExact) {
  const CacheShape s{1, 2, 1, 64, 600};
  KiviCache<2> c(s);
  std::vector<float> k(500 * 64), v(500 * 64);
  for (std::size_t t = 0; t < 500; ++t)
    for (int x = 0; x < 64; ++x) {
      k[t * 64 + x] = 0.75f * static_cast<float>(x % 5) - 1.0f;  // constant along tokens per channel
      v[t * 64 + x] = static_cast<float>(t % 7) * 0.5f;          // constant along channels per token
    }
  c.append(0, k.data(), v.data(), 500);
  std::vector<float> kk(k.size()), vv(v.size());
  c.materialize(0, kk.data(), vv.data());
  EXPECT_EQ(kk, k);
  EXPECT_EQ(vv, v);
}

// Rolling back into a flushed key group restores the surviving keys to the (fp16) window: values
// and earlier slots are unchanged; a surviving key is its stored value (rounded to fp16 when it
// moves to the window) or, if the window still held it, its fp16 input.
TEST(KiviTruncate, IntoQuantizedGroupKeepsSurvivorsAndContinues) {
  for (std::size_t m : {180u, 200u, 256u, 130u, 31u}) {
    const CacheShape s{1, 4, 2, 64, 800};
    KiviCache<2> c(s);
    auto k = kvtest::random_kv(300, 2, 64, 21);
    auto v = kvtest::random_kv(300, 2, 64, 22);
    c.append(0, k.data(), v.data(), 300);
    const auto before = kvtest::live_slots(c, 0, 1);
    c.truncate(m);
    ASSERT_EQ(c.tokens_seen(0), static_cast<std::int64_t>(m));
    const auto after = kvtest::live_slots(c, 0, 1);
    ASSERT_EQ(after.pos.size(), m);
    for (std::size_t j = 0; j < m; ++j)
      for (int x = 0; x < 64; ++x) {
        const float kb = before.k[j * 64 + x], ka = after.k[j * 64 + x];
        const float orig = f16(k[(j * 2 + 1) * 64 + x]);
        ASSERT_TRUE(ka == kb || ka == f16(kb) || ka == orig) << "m " << m << " slot " << j;
        ASSERT_EQ(after.v[j * 64 + x], before.v[j * 64 + x]);
      }
    auto k2 = kvtest::random_kv(150, 2, 64, 23);
    auto q = kvtest::random_kv(1, 4, 64, 24);
    std::vector<float> out(q.size());
    for (int t = 0; t < 150; ++t) c.append(0, k2.data() + t * 128, k2.data() + t * 128, 1);
    c.attend(0, q.data(), 1, out.data());
    kvtest::expect_attention_matches(c, 0, q, 1, out, 2e-3, 2e-3);
    EXPECT_EQ(c.size(0, 0), m + 150);
  }
}

// Eviction inside quantized groups masks slots; groups whose slots are all dead are dropped and
// their blocks return to the pool (quantization.md BB-16 rule 2).
TEST(KiviEviction, StreamingWindowFreesWholeGroupsAndMatchesOracle) {
  using C = KVCache<Policy<evict::StreamingLLM, merge::None, quant::Kivi2>>;
  const CacheShape s{1, 4, 2, 64, 1024};
  C::Config cfg{};
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 300;
  C c(s, cfg);
  auto k = kvtest::random_kv(2000, 2, 64, 31);
  auto q = kvtest::random_kv(2000, 4, 64, 32);
  std::vector<float> out(4 * 64);
  std::size_t peak = 0;
  for (std::size_t t = 0; t < 2000; ++t) {
    c.append(0, k.data() + t * 128, k.data() + t * 128, 1);
    c.attend(0, q.data() + t * 256, 1, out.data());
    peak = std::max(peak, c.memory_bytes());
    if (t % 250 == 249) kvtest::expect_attention_matches(c, 0, std::vector<float>(q.begin() + t * 256, q.begin() + (t + 1) * 256), 1, out, 2e-3, 2e-3);
  }
  EXPECT_EQ(c.size(0, 0), 304u);
  std::vector<std::int32_t> pos(304);
  c.positions(0, 1, pos.data());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(pos[i], i);
  for (int i = 4; i < 304; ++i) EXPECT_EQ(pos[i], 2000 - 304 + i);
  // Live 304 slots + at most one partially dead group per stream stay: 4 blocks of 128 slots
  // bound every stream (without freeing, 2000 tokens would need 16).
  const std::size_t block = 4 * (512 + 256) + 128 * (16 + 8);
  EXPECT_LE(peak, 2 * (4 * block + 2 * 129 * 64 * 2) + 1024 * 6);
}

}  // namespace
