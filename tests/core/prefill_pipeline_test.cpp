// SPDX-License-Identifier: Apache-2.0
// The end_prefill pipeline of KVCache (quantization spec BB-16, eviction spec §1.1/§1.8): fp16
// staging of the prompt for lossy stores, the query window and full-precision reads handed to
// the eviction policy, the merge hook and re-encoding of kept slots, TokenInfo for stores,
// layer-shared scores of per-layer policies and the "latest call" score mode.
// References: a fresh cache fed the rows the pipeline should have kept (bit-identical attention
// expected), fp16 rounding done by hand, and plain-loop sums.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "reference/float16_reference.hpp"
#include "support/cache_test_support.hpp"

namespace {

using namespace kvcompress;

constexpr int kD = 64;

CacheShape shape(int layers, int hq, int hkv, std::size_t cap) { return CacheShape{layers, hq, hkv, kD, cap}; }

// An eviction policy that keeps every slot whose position is odd or among the last 4, and
// captures what end_prefill showed it.
struct Capture {
  static inline std::vector<std::vector<float>> window;  // per layer [Hq][rows][d]
  static inline std::vector<std::vector<std::int32_t>> window_pos;
  static inline std::vector<std::vector<float>> keys;    // per (layer, head) [n][d] from ctx.read
  static inline float scale = 0.0f;
};

struct OddKeeper : evict::Base {
  static constexpr const char* kName = "odd_keeper";
  static constexpr bool kPerHead = true;
  static constexpr bool kSelectsAtPrefillEnd = true;
  struct Config {
    std::size_t window = 5;
    void validate(const CacheShape&) const {}
  };
  static std::size_t query_window(const Config& c) { return c.window; }
  static void on_prefill_end(const Config&, PrefillContext& ctx) {
    Capture::window.clear();
    Capture::window_pos.clear();
    Capture::keys.clear();
    Capture::scale = ctx.scale();
    const std::size_t d = static_cast<std::size_t>(ctx.shape().head_dim);
    for (int l = 0; l < ctx.num_layers(); ++l) {
      const QueryRows q = ctx.queries(l);
      Capture::window.emplace_back(q.q, q.q + static_cast<std::size_t>(q.num_heads) * q.rows * d);
      Capture::window_pos.emplace_back(q.pos, q.pos + q.rows);
      for (int h = 0; h < ctx.views_per_layer(); ++h) {
        const SlotView& s = ctx.slots(l, h);
        std::vector<float> k(s.n * d), v(s.n * d);
        ctx.read(l, h, k.data(), v.data());
        Capture::keys.push_back(k);
        for (std::size_t j = 0; j < s.n; ++j)
          if (s.pos[j] % 2 == 0 && j + 4 < s.n) ctx.keep(l, h)[j] = 0;
      }
    }
  }
};

// Folds each evicted row into the next kept row (k_c += k_e, v_c += v_e): easy to recompute.
struct AddToNext {
  static constexpr const char* kName = "add_to_next";
  struct Config {
    void validate(const CacheShape&) const {}
  };
  static void merge(const Config&, const SlotView& s, const std::uint8_t* keep, float* k, float* v, std::size_t d) {
    for (std::size_t j = 0; j < s.n; ++j) {
      if (keep[j] || !s.alive[j]) continue;
      std::size_t c = j + 1;
      while (c < s.n && !keep[c]) ++c;
      if (c == s.n) continue;
      for (std::size_t x = 0; x < d; ++x) {
        k[c * d + x] += k[j * d + x];
        v[c * d + x] += v[j * d + x];
      }
    }
  }
};

std::vector<float> round_fp16(std::vector<float> x) {
  for (float& f : x) f = static_cast<float>(kvref::round_to_f16(f));
  return x;
}

// Rows of token t, head h from a [T][H][d] buffer.
const float* row(const std::vector<float>& x, std::size_t t, int heads, int h) {
  return x.data() + (t * static_cast<std::size_t>(heads) + static_cast<std::size_t>(h)) * kD;
}

TEST(PrefillPipeline, QueryWindowKeepsTheLastRowsAcrossCallsAndReadIsFullPrecision) {
  const auto sh = shape(2, 4, 2, 64);
  KVCache<Policy<OddKeeper, merge::None, quant::Kivi2>> c(sh);
  const std::size_t n1 = 9, n2 = 3;
  const auto k = kvtest::random_kv(n1 + n2, 2, kD, 1), v = kvtest::random_kv(n1 + n2, 2, kD, 2);
  const auto q = kvtest::random_kv(n1 + n2, 4, kD, 3);
  std::vector<float> out(q.size());
  for (int l = 0; l < 2; ++l) {
    c.append(l, k.data(), v.data(), n1);
    c.attend(l, q.data(), n1, out.data());
    c.append(l, row(k, n1, 2, 0), row(v, n1, 2, 0), n2);
    c.attend(l, row(q, n1, 4, 0), n2, out.data(), AttendOptions{0.5f, nullptr});
  }
  // Before end_prefill the prompt is staged in fp16: memory is that of a dense fp16 cache.
  EXPECT_EQ(c.stream(0, 0).size(), 0u);
  c.end_prefill();
  EXPECT_FLOAT_EQ(Capture::scale, 0.5f);
  for (int l = 0; l < 2; ++l) {
    ASSERT_EQ(Capture::window_pos[l].size(), 5u);
    for (std::size_t i = 0; i < 5; ++i) {
      const std::size_t t = n1 + n2 - 5 + i;
      EXPECT_EQ(Capture::window_pos[l][i], static_cast<std::int32_t>(t));
      for (int g = 0; g < 4; ++g)
        for (int x = 0; x < kD; ++x)
          ASSERT_EQ(Capture::window[l][(static_cast<std::size_t>(g) * 5 + i) * kD + x], row(q, t, 4, g)[x]);
    }
    for (int h = 0; h < 2; ++h) {
      const auto& kk = Capture::keys[static_cast<std::size_t>(l * 2 + h)];
      ASSERT_EQ(kk.size(), (n1 + n2) * kD);
      for (std::size_t t = 0; t < n1 + n2; ++t)
        for (int x = 0; x < kD; ++x) ASSERT_EQ(kk[t * kD + x], static_cast<float>(kvref::round_to_f16(row(k, t, 2, h)[x])));
    }
  }
}

// The kept prompt is quantized as if it were the prompt: a fresh KIVI cache given the kept
// fp16-rounded rows attends bit-identically, and stores the same number of quantized tokens.
TEST(PrefillPipeline, LossyStoreEncodesOnlyTheKeptPromptFromFullPrecision) {
  const auto sh = shape(1, 4, 2, 512);
  using Evicting = KVCache<Policy<OddKeeper, merge::None, quant::Kivi2>>;
  using Plain = KVCache<Policy<evict::None, merge::None, quant::Kivi2>>;
  Evicting c(sh);
  const std::size_t n = 300;
  const auto k = kvtest::random_kv(n, 2, kD, 4), v = kvtest::random_kv(n, 2, kD, 5);
  c.append(0, k.data(), v.data(), n);
  const std::size_t staged = c.memory_bytes();
  c.end_prefill();
  EXPECT_LT(c.memory_bytes(), staged);

  std::vector<std::size_t> kept;
  for (std::size_t t = 0; t < n; ++t)
    if (t % 2 == 1 || t + 4 >= n) kept.push_back(t);
  std::vector<float> kk, vv;
  for (std::size_t t : kept)
    for (int h = 0; h < 2; ++h) {
      kk.insert(kk.end(), row(k, t, 2, h), row(k, t, 2, h) + kD);
      vv.insert(vv.end(), row(v, t, 2, h), row(v, t, 2, h) + kD);
    }
  Plain ref(sh);
  ref.append(0, round_fp16(kk).data(), round_fp16(vv).data(), kept.size());
  ASSERT_EQ(c.size(0, 0), kept.size());
  for (int h = 0; h < 2; ++h) {
    EXPECT_EQ(c.stream(0, h).size(), ref.stream(0, h).size());
    std::vector<std::int32_t> pos(kept.size());
    c.positions(0, h, pos.data());
    for (std::size_t i = 0; i < kept.size(); ++i) EXPECT_EQ(pos[i], static_cast<std::int32_t>(kept[i]));
  }
  // Decode one token into both; attention must agree exactly (same stored bytes, same order).
  const auto k1 = kvtest::random_kv(1, 2, kD, 6), v1 = kvtest::random_kv(1, 2, kD, 7);
  const auto q1 = kvtest::random_kv(1, 4, kD, 8);
  c.append(0, k1.data(), v1.data(), 1);
  ref.append(0, k1.data(), v1.data(), 1);
  std::vector<float> o1(q1.size()), o2(q1.size());
  c.attend(0, q1.data(), 1, o1.data());
  ref.attend(0, q1.data(), 1, o2.data());
  for (std::size_t i = 0; i < o1.size(); ++i) ASSERT_EQ(o1[i], o2[i]) << i;
}

// Merged anchors are computed on full-precision rows and then re-encoded.
TEST(PrefillPipeline, MergeRewritesKeptRowsBeforeEncoding) {
  const auto sh = shape(1, 2, 1, 64);
  KVCache<Policy<OddKeeper, AddToNext, quant::DenseF32>> c(sh);
  const std::size_t n = 20;
  const auto k = kvtest::random_kv(n, 1, kD, 9), v = kvtest::random_kv(n, 1, kD, 10);
  c.append(0, k.data(), v.data(), n);
  c.end_prefill();
  // Expected: each odd position t < 16 holds rows t−1 + t; positions 16..19 are recent (kept, no merge).
  const auto s = kvtest::live_slots(c, 0, 0);
  ASSERT_EQ(s.pos.size(), 8u + 4u);
  for (std::size_t i = 0; i < s.pos.size(); ++i) {
    const std::size_t t = static_cast<std::size_t>(s.pos[i]);
    for (int x = 0; x < kD; ++x) {
      const double ek = k[t * kD + x] + ((t < 16) ? k[(t - 1) * kD + x] : 0.0);
      const double ev = v[t * kD + x] + ((t < 16) ? v[(t - 1) * kD + x] : 0.0);
      ASSERT_FLOAT_EQ(s.k[i * kD + x], static_cast<float>(ek)) << t;
      ASSERT_FLOAT_EQ(s.v[i * kD + x], static_cast<float>(ev)) << t;
    }
  }
}

// A store that takes TokenInfo sees the original positions and labels, also when end_prefill
// re-encodes the kept slots (positions with gaps) and during decode.
struct RecordingQuant : quant::DenseF32 {
  static constexpr const char* kName = "recording";
  static inline std::vector<std::int32_t> positions;
  static inline std::vector<Modality> labels;
  class Store : public quant::DenseF32::Store {
   public:
    using quant::DenseF32::Store::Store;
    void append(const float* k, const float* v, std::size_t ld, std::size_t n, const TokenInfo& info, float* s) {
      positions.insert(positions.end(), info.pos, info.pos + n);
      labels.insert(labels.end(), info.mod, info.mod + n);
      quant::DenseF32::Store::append(k, v, ld, n, s);
    }
  };
};

TEST(PrefillPipeline, StoresTakingTokenInfoSeePositionsAndLabels) {
  const auto sh = shape(1, 1, 1, 64);
  KVCache<Policy<OddKeeper, merge::None, RecordingQuant>> c(sh);
  const std::size_t n = 10;
  const auto k = kvtest::random_kv(n, 1, kD, 11), v = kvtest::random_kv(n, 1, kD, 12);
  std::vector<Modality> mods(n, Modality::kText);
  for (std::size_t t = 2; t < 6; ++t) mods[t] = Modality::kImage;
  RecordingQuant::positions.clear();
  RecordingQuant::labels.clear();
  c.append(0, k.data(), v.data(), n, mods.data());
  EXPECT_TRUE(RecordingQuant::positions.empty());  // staged until end_prefill
  c.end_prefill();
  const std::vector<std::int32_t> want = {1, 3, 5, 6, 7, 8, 9};
  EXPECT_EQ(RecordingQuant::positions, want);
  for (std::size_t i = 0; i < want.size(); ++i)
    EXPECT_EQ(RecordingQuant::labels[i], mods[static_cast<std::size_t>(want[i])]) << want[i];
  c.append(0, k.data(), v.data(), 2, Modality::kGenerated);
  EXPECT_EQ(RecordingQuant::positions.back(), 11);
  EXPECT_EQ(RecordingQuant::labels.back(), Modality::kGenerated);
}

// Per-layer policies with scores see the mean over KV heads; kLatest keeps only the latest call.
template <bool PerHead, evict::ScoreMode Mode>
struct ScoreProbe : evict::Base {
  static constexpr const char* kName = "score_probe";
  static constexpr bool kPerHead = PerHead;
  static constexpr bool kNeedsScores = true;
  static constexpr evict::ScoreMode kScoreMode = Mode;
  struct Config {
    void validate(const CacheShape&) const {}
  };
};

TEST(PrefillPipeline, LayerSharedScoresAreTheMeanOverHeadsAndLatestModeForgets) {
  const auto sh = shape(1, 4, 2, 64);
  using Acc = evict::ScoreMode;
  KVCache<Policy<ScoreProbe<true, Acc::kAccumulate>>> per_head(sh);
  KVCache<Policy<ScoreProbe<false, Acc::kAccumulate>>> per_layer(sh);
  KVCache<Policy<ScoreProbe<true, Acc::kLatest>>> latest(sh);
  const std::size_t n = 12;
  const auto k = kvtest::random_kv(n, 2, kD, 13), v = kvtest::random_kv(n, 2, kD, 14);
  const auto q = kvtest::random_kv(n, 4, kD, 15);
  std::vector<float> out(q.size());
  auto feed = [&](auto& c) {
    c.append(0, k.data(), v.data(), n);
    c.attend(0, q.data(), n, out.data());
    c.attend(0, row(q, n - 1, 4, 0), 1, out.data());
  };
  feed(per_head);
  feed(per_layer);
  feed(latest);
  const SlotView a = per_head.slots(0, 0), b = per_head.slots(0, 1), m = per_layer.slots(0, 0);
  std::vector<float> sa(a.score, a.score + n), sb(b.score, b.score + n);
  for (std::size_t j = 0; j < n; ++j) EXPECT_NEAR(m.score[j], 0.5f * (sa[j] + sb[j]), 1e-6f) << j;
  // Latest: the attention of the last query (position n−1) only, mean over the GQA group.
  for (int h = 0; h < 2; ++h) {
    const SlotView s = latest.slots(0, h);
    kvref::HeadSlots hs;
    hs.pos.resize(n);
    std::iota(hs.pos.begin(), hs.pos.end(), 0);
    for (std::size_t t = 0; t < n; ++t) {
      hs.k.insert(hs.k.end(), row(k, t, 2, h), row(k, t, 2, h) + kD);
      hs.v.insert(hs.v.end(), row(v, t, 2, h), row(v, t, 2, h) + kD);
    }
    hs.k = round_fp16(hs.k);
    const std::vector<std::int64_t> qpos(2, static_cast<std::int64_t>(n - 1));
    const auto p = kvref::probabilities(hs, kD, row(q, n - 1, 4, 2 * h), 2, qpos.data(), 1.0 / std::sqrt(double(kD)));
    for (std::size_t j = 0; j < n; ++j) EXPECT_NEAR(s.score[j], 0.5 * (p[j] + p[n + j]), 1e-5) << j;
  }
}

}  // namespace
