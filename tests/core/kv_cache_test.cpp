// SPDX-License-Identifier: Apache-2.0
// KVCache over dense storage: attention (decode and causal chunked prefill) against the
// double-precision oracle for MHA/GQA/MQA and every supported head_dim, fp16/bf16 inputs,
// log-sum-exp output, truncate/clear, exact memory accounting, executor equivalence.

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>

#include "kvcompress/kvcompress.hpp"
#include "support/cache_test_support.hpp"

namespace {

using namespace kvcompress;
using DenseF32Cache = KVCache<Policy<evict::None, merge::None, quant::DenseF32>>;
using DenseF16Cache = KVCache<Policy<>>;

struct HeadShape {
  int q_heads, kv_heads, head_dim;
};
std::string shape_name(const testing::TestParamInfo<HeadShape>& i) {
  return "q" + std::to_string(i.param.q_heads) + "_kv" + std::to_string(i.param.kv_heads) + "_d" +
         std::to_string(i.param.head_dim);
}

class DenseAttention : public testing::TestWithParam<HeadShape> {};

// Prefill a chunk with causal attention of all its queries, then decode one token at a time.
template <class Cache>
void prefill_then_decode(const HeadShape& p, double atol, double rtol) {
  const CacheShape s{2, p.q_heads, p.kv_heads, p.head_dim, 256};
  Cache c(s);
  const std::size_t prompt = 37;
  for (int layer = 0; layer < 2; ++layer) {
    auto k = kvtest::random_kv(prompt, p.kv_heads, p.head_dim, 11u + layer);
    auto v = kvtest::random_kv(prompt, p.kv_heads, p.head_dim, 21u + layer, false);
    auto q = kvtest::random_kv(prompt, p.q_heads, p.head_dim, 31u + layer);
    std::vector<float> out(q.size());
    c.append(layer, k.data(), v.data(), prompt);
    c.attend(layer, q.data(), prompt, out.data());
    kvtest::expect_attention_matches(c, layer, q, prompt, out, atol, rtol);
  }
  for (int step = 0; step < 5; ++step) {
    for (int layer = 0; layer < 2; ++layer) {
      auto k = kvtest::random_kv(1, p.kv_heads, p.head_dim, 100u + step);
      auto v = kvtest::random_kv(1, p.kv_heads, p.head_dim, 200u + step, false);
      auto q = kvtest::random_kv(1, p.q_heads, p.head_dim, 300u + step);
      std::vector<float> out(q.size());
      c.append(layer, k.data(), v.data(), 1, Modality::kGenerated);
      c.attend(layer, q.data(), 1, out.data());
      kvtest::expect_attention_matches(c, layer, q, 1, out, atol, rtol);
    }
  }
  EXPECT_EQ(c.tokens_seen(0), static_cast<std::int64_t>(prompt + 5));
  EXPECT_EQ(c.size(1, p.kv_heads - 1), prompt + 5);
}

TEST_P(DenseAttention, F32MatchesOracle) { prefill_then_decode<DenseF32Cache>(GetParam(), 1e-5, 1e-5); }
TEST_P(DenseAttention, F16MatchesOracleOverStoredValues) {
  prefill_then_decode<DenseF16Cache>(GetParam(), 1e-5, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, DenseAttention,
                         testing::Values(HeadShape{4, 4, 64}, HeadShape{8, 2, 128}, HeadShape{8, 1, 80},
                                         HeadShape{6, 2, 96}, HeadShape{2, 1, 256}, HeadShape{32, 1, 64},
                                         HeadShape{9, 3, 64}),
                         shape_name);

TEST(DenseCache, F32StoresInputsExactlyAndF16RoundsToNearest) {
  const CacheShape s{1, 2, 1, 64, 16};
  DenseF32Cache c32(s);
  DenseF16Cache c16(s);
  auto k = kvtest::random_kv(5, 1, 64, 3);
  auto v = kvtest::random_kv(5, 1, 64, 4);
  c32.append(0, k.data(), v.data(), 5);
  c16.append(0, k.data(), v.data(), 5);
  std::vector<float> k32(k.size()), v32(v.size()), k16(k.size()), v16(v.size());
  c32.materialize(0, k32.data(), v32.data());
  c16.materialize(0, k16.data(), v16.data());
  EXPECT_EQ(k32, k);
  EXPECT_EQ(v32, v);
  for (std::size_t i = 0; i < k.size(); ++i) {
    EXPECT_EQ(k16[i], f16_bits_to_f32(f32_to_f16_bits(k[i])));
    EXPECT_EQ(v16[i], f16_bits_to_f32(f32_to_f16_bits(v[i])));
  }
}

// Inputs in fp16/bf16 go through the same path as their fp32 values; outputs are the fp32
// result rounded to the input type.
template <class T>
void typed_io_matches_f32() {
  const CacheShape s{1, 8, 2, 128, 64};
  DenseF32Cache ref(s), typed(s);
  auto k = kvtest::random_kv(20, 2, 128, 5);
  auto v = kvtest::random_kv(20, 2, 128, 6);
  auto q = kvtest::random_kv(3, 8, 128, 7);
  std::vector<T> kt(k.size()), vt(v.size()), qt(q.size()), ot(q.size());
  for (std::size_t i = 0; i < k.size(); ++i) {
    kt[i] = from_float<T>(k[i]);
    vt[i] = from_float<T>(v[i]);
    k[i] = to_float(kt[i]);
    v[i] = to_float(vt[i]);
  }
  for (std::size_t i = 0; i < q.size(); ++i) {
    qt[i] = from_float<T>(q[i]);
    q[i] = to_float(qt[i]);
  }
  std::vector<float> out(q.size());
  ref.append(0, k.data(), v.data(), 20);
  ref.attend(0, q.data(), 3, out.data());
  typed.append(0, kt.data(), vt.data(), 20);
  typed.attend(0, qt.data(), 3, ot.data());
  for (std::size_t i = 0; i < out.size(); ++i) EXPECT_EQ(to_float(ot[i]), to_float(from_float<T>(out[i]))) << i;
}
TEST(DenseCache, Fp16InputsAndOutputs) { typed_io_matches_f32<half>(); }
TEST(DenseCache, Bf16InputsAndOutputs) { typed_io_matches_f32<bfloat16>(); }

TEST(DenseCache, LogSumExpMatchesOracle) {
  const CacheShape s{1, 4, 2, 64, 64};
  DenseF32Cache c(s);
  auto k = kvtest::random_kv(30, 2, 64, 8);
  auto v = kvtest::random_kv(30, 2, 64, 9);
  auto q = kvtest::random_kv(2, 4, 64, 10);
  std::vector<float> out(q.size()), lse(2 * 4);
  c.append(0, k.data(), v.data(), 30);
  AttendOptions opt;
  opt.lse = lse.data();
  c.attend(0, q.data(), 2, out.data(), opt);
  for (int h = 0; h < 2; ++h) {
    const auto slots = kvtest::live_slots(c, 0, h);
    for (int i = 0; i < 2; ++i)
      for (int g = 0; g < 2; ++g) {
        const std::int64_t qpos = 28 + i;
        std::vector<double> ref_lse;
        kvref::attention(slots, 64, q.data() + ((i * 4) + h * 2 + g) * 64, 1, &qpos, 0.125, &ref_lse);
        EXPECT_NEAR(lse[i * 4 + h * 2 + g], ref_lse[0], 1e-5);
      }
  }
}

TEST(DenseCache, CustomScale) {
  const CacheShape s{1, 2, 1, 64, 16};
  DenseF32Cache c(s);
  auto k = kvtest::random_kv(7, 1, 64, 1);
  auto v = kvtest::random_kv(7, 1, 64, 2);
  auto q = kvtest::random_kv(1, 2, 64, 3);
  std::vector<float> out(q.size()), q2(q);
  c.append(0, k.data(), v.data(), 7);
  AttendOptions opt;
  opt.scale = 0.5f;
  c.attend(0, q.data(), 1, out.data(), opt);
  for (auto& x : q2) x *= 0.5f * 8.0f;  // scale 0.5 equals default 1/8 with q·4
  std::vector<float> out2(q.size());
  c.attend(0, q2.data(), 1, out2.data());
  for (std::size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], out2[i], 1e-5);
}

TEST(DenseCache, TruncateEqualsShorterPrefix) {
  const CacheShape s{2, 4, 2, 64, 128};
  DenseF16Cache full(s), prefix(s);
  auto k = kvtest::random_kv(90, 2, 64, 12);
  auto v = kvtest::random_kv(90, 2, 64, 13);
  for (int l = 0; l < 2; ++l) {
    full.append(l, k.data(), v.data(), 90);
    prefix.append(l, k.data(), v.data(), 70);
  }
  full.truncate(70);
  EXPECT_EQ(full.tokens_seen(1), 70);
  EXPECT_EQ(full.size(0, 1), 70u);
  EXPECT_EQ(full.memory_bytes(), prefix.memory_bytes());
  EXPECT_TRUE(kvtest::snapshot(full) == kvtest::snapshot(prefix));
  // The next token gets position 70 in both.
  auto k1 = kvtest::random_kv(1, 2, 64, 14);
  for (int l = 0; l < 2; ++l) {
    full.append(l, k1.data(), k1.data(), 1);
    prefix.append(l, k1.data(), k1.data(), 1);
  }
  EXPECT_TRUE(kvtest::snapshot(full) == kvtest::snapshot(prefix));
  full.clear();
  EXPECT_EQ(full.memory_bytes(), 0u);
  EXPECT_EQ(full.tokens_seen(0), 0);
}

TEST(DenseCache, MemoryBytesIsExact) {
  // Dense fp16, d = 128: a 128-slot block holds 128·128·2 bytes of K and as many of V; metadata
  // is 6 bytes per slot (int32 position, modality, alive flag) per layer.
  const CacheShape s{3, 8, 2, 128, 1000};
  DenseF16Cache c(s);
  EXPECT_EQ(c.memory_bytes(), 0u);
  auto k = kvtest::random_kv(300, 2, 128, 15);
  for (int l = 0; l < 3; ++l) c.append(l, k.data(), k.data(), 300);
  const std::size_t blocks = 3 * 2 * 3;  // ceil(300 / 128) = 3 per stream
  EXPECT_EQ(c.memory_bytes(), blocks * (2 * 128 * 128 * 2) + 3 * 300 * 6);
  EXPECT_DOUBLE_EQ(DenseF16Cache::bytes_per_token(s), 3 * 2 * (2 * 128 * 2));
  EXPECT_EQ(DenseF16Cache::arena_bytes(s), 3 * 2 * 8 * (2 * 128 * 128 * 2));  // ceil(1000/128) = 8
}

TEST(DenseCache, EngineArenaHoldsTheBlocks) {
  const CacheShape s{1, 4, 2, 64, 100};
  const std::size_t bytes = DenseF16Cache::arena_bytes(s);
  std::vector<std::max_align_t> raw(bytes / sizeof(std::max_align_t) + 8);
  auto* base = reinterpret_cast<unsigned char*>(raw.data());
  auto* aligned = base + (64 - reinterpret_cast<std::uintptr_t>(base) % 64) % 64;
  DenseF16Cache c(s, {}, nullptr, aligned, bytes);
  auto k = kvtest::random_kv(100, 2, 64, 16);
  c.append(0, k.data(), k.data(), 100);
  std::vector<float> kk(k.size()), vv(k.size());
  c.materialize(0, kk.data(), vv.data());
  EXPECT_EQ(kk[0], f16_bits_to_f32(f32_to_f16_bits(k[0])));
  EXPECT_THROW(DenseF16Cache(s, {}, nullptr, aligned, bytes - 64), InvalidArgument);
  EXPECT_THROW(DenseF16Cache(s, {}, nullptr, aligned + 1, bytes), InvalidArgument);
}

TEST(DenseCache, ThreadPoolGivesBitIdenticalResults) {
  const CacheShape s{1, 32, 8, 128, 600};
  ThreadPoolExecutor pool(2);
  DenseF16Cache serial(s), parallel(s, {}, &pool);
  auto k = kvtest::random_kv(500, 8, 128, 17);
  auto v = kvtest::random_kv(500, 8, 128, 18);
  auto q = kvtest::random_kv(4, 32, 128, 19);
  serial.append(0, k.data(), v.data(), 500);
  parallel.append(0, k.data(), v.data(), 500);
  std::vector<float> a(q.size()), b(q.size());
  serial.attend(0, q.data(), 4, a.data());
  parallel.attend(0, q.data(), 4, b.data());
  EXPECT_EQ(a, b);
}

TEST(DenseCache, ModalityLabelsAreKeptPerSlot) {
  const CacheShape s{1, 2, 1, 64, 16};
  DenseF16Cache c(s);
  auto k = kvtest::random_kv(4, 1, 64, 20);
  const Modality m[4] = {Modality::kSystem, Modality::kImage, Modality::kImage, Modality::kText};
  c.append(0, k.data(), k.data(), 4, m);
  c.append(0, k.data(), k.data(), 1, Modality::kGenerated);
  const SlotView v = c.slots(0, 0);
  ASSERT_EQ(v.n, 5u);
  EXPECT_EQ(v.mod[1], Modality::kImage);
  EXPECT_EQ(v.mod[4], Modality::kGenerated);
  EXPECT_EQ(v.pos[4], 4);
  EXPECT_STREQ(to_string(v.mod[0]), "system");
}

}  // namespace
