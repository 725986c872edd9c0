// SPDX-License-Identifier: Apache-2.0
// Inf-MLLM (eviction spec §11): a streamed sequence of chunks through KVCache against an
// independent double-precision replay of the rule (retrieval-window attention of the previous
// chunk, local sum over live neighbours, recency bias, recent window, argmin eviction), plus the
// spec's oracles: size ≤ C, recent R kept, β monotone drift, bad configs rejected.

#include "kvcompress/policies/evict/inf_mllm.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "support/cache_test_support.hpp"
#include "support/expect_invalid.hpp"

namespace {

using namespace kvcompress;
using Cache = KVCache<Policy<evict::InfMLLM, merge::None, quant::DenseF32>>;

constexpr int kD = 64, kHq = 4, kHkv = 2;

const float* row(const std::vector<float>& x, std::size_t t, int heads) {
  return x.data() + t * static_cast<std::size_t>(heads) * kD;
}

// Positions the rule keeps from the live slots of one head, given the query rows of the latest
// attend call (positions qpos) and n_incoming new tokens.
std::vector<std::int32_t> oracle_keep(const kvref::HeadSlots& s, const std::vector<float>& q_group_rows,
                                      const std::vector<std::int64_t>& qpos, const evict::InfMLLM::Config& c,
                                      std::size_t n_incoming) {
  const std::size_t n = s.pos.size();
  if (n + n_incoming <= c.cache_size) return s.pos;
  const int rows = static_cast<int>(qpos.size());
  // Mean over the GQA group (2 query heads), summed over the rows.
  std::vector<double> score(n, 0.0);
  for (int g = 0; g < kHq / kHkv; ++g) {
    const auto p = kvref::probabilities(s, kD, q_group_rows.data() + static_cast<std::size_t>(g) * rows * kD, rows,
                                        qpos.data(), 1.0 / std::sqrt(double(kD)));
    for (int r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < n; ++j) score[j] += p[static_cast<std::size_t>(r) * n + j] / (kHq / kHkv);
  }
  const int half = c.local_kernel / 2;
  std::vector<double> biased(n);
  const double pmin = s.pos.front(), pmax = s.pos.back();
  for (std::size_t j = 0; j < n; ++j) {
    double sum = 0;
    for (int o = -half; o <= half; ++o) {
      const long t = static_cast<long>(j) + o;
      if (t >= 0 && t < static_cast<long>(n)) sum += score[static_cast<std::size_t>(t)];
    }
    biased[j] = sum + (pmax > pmin ? c.bias * (s.pos[j] - pmin) / (pmax - pmin) : 0.0);
  }
  const std::size_t protect = c.recent > n_incoming ? c.recent - n_incoming : 0;
  const std::size_t candidates = n - std::min(n, protect);
  std::vector<std::size_t> order(candidates);
  std::iota(order.begin(), order.end(), 0);
  // Evict lowest first; ties: later position first.
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return biased[a] < biased[b] || (biased[a] == biased[b] && a > b);
  });
  std::vector<bool> kept(n, true);
  for (std::size_t e = 0; e < n + n_incoming - c.cache_size && e < order.size(); ++e) kept[order[e]] = false;
  std::vector<std::int32_t> out;
  for (std::size_t j = 0; j < n; ++j)
    if (kept[j]) out.push_back(s.pos[j]);
  return out;
}

// The query rows of KV head h's group for tokens [t0, t0 + rows), as [group][rows][d].
std::vector<float> group_rows(const std::vector<float>& q, std::size_t t0, std::size_t rows, int h) {
  std::vector<float> out;
  for (int g = 0; g < kHq / kHkv; ++g)
    for (std::size_t t = t0; t < t0 + rows; ++t) {
      const float* src = row(q, t, kHq) + static_cast<std::size_t>(h * (kHq / kHkv) + g) * kD;
      out.insert(out.end(), src, src + kD);
    }
  return out;
}

TEST(InfMLLM, StreamedChunksFollowTheReplayedRule) {
  evict::InfMLLM::Config cfg;
  cfg.cache_size = 24;
  cfg.recent = 6;
  cfg.local_kernel = 3;
  cfg.bias = 0.02f;
  Cache c(CacheShape{1, kHq, kHkv, kD, 64}, {cfg, {}, {}});
  const std::size_t chunk = 8, chunks = 7, total = chunk * chunks;
  const auto k = kvtest::random_kv(total, kHkv, kD, 21), v = kvtest::random_kv(total, kHkv, kD, 22);
  const auto q = kvtest::random_kv(total, kHq, kD, 23);
  std::vector<float> out(chunk * kHq * kD);
  for (std::size_t i = 0; i < chunks; ++i) {
    const std::size_t t0 = i * chunk;
    std::vector<std::vector<std::int32_t>> expect(kHkv);
    for (int h = 0; h < kHkv; ++h) {
      if (i > 0) {
        std::vector<std::int64_t> qpos;
        for (std::size_t t = t0 - chunk; t < t0; ++t) qpos.push_back(static_cast<std::int64_t>(t));
        expect[static_cast<std::size_t>(h)] =
            oracle_keep(kvtest::live_slots(c, 0, h), group_rows(q, t0 - chunk, chunk, h), qpos, cfg, chunk);
      }
      for (std::size_t t = t0; t < t0 + chunk; ++t) expect[static_cast<std::size_t>(h)].push_back(static_cast<std::int32_t>(t));
    }
    c.append(0, row(k, t0, kHkv), row(v, t0, kHkv), chunk);
    c.attend(0, row(q, t0, kHq), chunk, out.data());
    for (int h = 0; h < kHkv; ++h) {
      std::vector<std::int32_t> pos(c.size(0, h));
      c.positions(0, h, pos.data());
      EXPECT_EQ(pos, expect[static_cast<std::size_t>(h)]) << "chunk " << i << " head " << h;
      EXPECT_LE(pos.size(), cfg.cache_size);
      // The newest R tokens are always present.
      for (std::size_t r = 0; r < cfg.recent; ++r)
        EXPECT_EQ(pos[pos.size() - 1 - r], static_cast<std::int32_t>(t0 + chunk - 1 - r));
    }
  }
}

// Larger β never lowers the mean position of the kept relevant (non-recent) slots (spec §11
// oracle), checked on one selection: the prompt trimmed at end_prefill.
TEST(InfMLLM, LargerBiasDriftsTheRelevantSetForward) {
  const std::size_t n = 48;
  const auto k = kvtest::random_kv(n, kHkv, kD, 31), v = kvtest::random_kv(n, kHkv, kD, 32);
  const auto q = kvtest::random_kv(n, kHq, kD, 33);
  double last = -1.0;
  for (float beta : {0.0f, 0.05f, 0.2f, 1.0f, 10.0f}) {
    evict::InfMLLM::Config cfg;
    cfg.cache_size = 20;
    cfg.recent = 4;
    cfg.local_kernel = 5;
    cfg.bias = beta;
    Cache c(CacheShape{1, kHq, kHkv, kD, 64}, {cfg, {}, {}});
    c.append(0, k.data(), v.data(), n);
    std::vector<float> out(q.size());
    c.attend(0, row(q, n - 8, kHq), 8, out.data());  // retrieval window: the last 8 prompt rows
    c.end_prefill();
    double mean = 0;
    for (int h = 0; h < kHkv; ++h) {
      std::vector<std::int32_t> pos(c.size(0, h));
      c.positions(0, h, pos.data());
      ASSERT_EQ(pos.size(), cfg.cache_size);
      for (std::size_t j = 0; j + cfg.recent < pos.size(); ++j) mean += pos[j];
    }
    EXPECT_GE(mean, last) << "beta " << beta;
    last = mean;
  }
  EXPECT_GT(last, 0.0);
}

TEST(InfMLLM, BadConfigsAreRejected) {
  const CacheShape sh{1, kHq, kHkv, kD, 64};
  auto make = [&](auto edit) {
    evict::InfMLLM::Config cfg;
    cfg.cache_size = 32;
    cfg.recent = 8;
    edit(cfg);
    Cache c(sh, {cfg, {}, {}});
  };
  kvtest::expect_invalid_argument([&] { make([](auto& x) { x.recent = 0; }); }, "recent");
  kvtest::expect_invalid_argument([&] { make([](auto& x) { x.cache_size = 8; }); }, "cache_size");
  kvtest::expect_invalid_argument([&] { make([](auto& x) { x.cache_size = 65; }); }, "cache_size");
  kvtest::expect_invalid_argument([&] { make([](auto& x) { x.local_kernel = 4; }); }, "local_kernel");
  kvtest::expect_invalid_argument([&] { make([](auto& x) { x.bias = -1.0f; }); }, "bias");
}

}  // namespace
