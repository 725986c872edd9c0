// SPDX-License-Identifier: Apache-2.0
// Bad input: every entry point throws InvalidArgument naming the argument and the expected
// value, and the cache is unchanged afterwards (compared through everything observable).

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "kvcompress/kvcompress.hpp"
#include "support/cache_test_support.hpp"

namespace {

using namespace kvcompress;

// Runs f, expects InvalidArgument whose message contains every fragment.
template <class F>
void expect_invalid(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    for (const char* frag : fragments) EXPECT_NE(msg.find(frag), std::string::npos) << msg << " lacks " << frag;
  }
}

TEST(CacheShapeErrors, RejectsUnsupportedGeometry) {
  using C = KVCache<Policy<>>;
  expect_invalid([] { C c(CacheShape{0, 8, 2, 128, 16}); }, {"num_layers", ">= 1"});
  expect_invalid([] { C c(CacheShape{1, 8, 3, 128, 16}); }, {"num_q_heads", "multiple of num_kv_heads"});
  expect_invalid([] { C c(CacheShape{1, 8, 0, 128, 16}); }, {"num_kv_heads"});
  expect_invalid([] { C c(CacheShape{1, 8, 2, 100, 16}); }, {"head_dim", "100", "{64, 80, 96, 128, 256}"});
  expect_invalid([] { C c(CacheShape{1, 8, 2, 128, 0}); }, {"capacity"});
}

template <class Cache>
class ErrorsLeaveCacheUnchanged : public testing::Test {};
using CacheTypes = testing::Types<KVCache<Policy<>>, KVCache<Policy<evict::None, merge::None, quant::Kivi2>>,
                                  KVCache<Policy<evict::StreamingLLM, merge::None, quant::Kivi4>>>;
TYPED_TEST_SUITE(ErrorsLeaveCacheUnchanged, CacheTypes);

TYPED_TEST(ErrorsLeaveCacheUnchanged, AppendAttendTruncateMaterialize) {
  using Cache = TypeParam;
  const CacheShape s{2, 4, 2, 64, 200};
  typename Cache::Config cfg{};
  if constexpr (std::is_same_v<typename Cache::Policy::Evict, evict::StreamingLLM>) {
    cfg.evict.sink_tokens = 4;
    cfg.evict.window_tokens = 190;
  }
  Cache c(s, cfg);
  auto k = kvtest::random_kv(150, 2, 64, 1);
  auto v = kvtest::random_kv(150, 2, 64, 2);
  for (int l = 0; l < 2; ++l) c.append(l, k.data(), v.data(), 150);
  const kvtest::Snapshot before = kvtest::snapshot(c);
  auto check = [&](auto&& f, std::initializer_list<const char*> frags) {
    expect_invalid(f, frags);
    EXPECT_TRUE(kvtest::snapshot(c) == before);
  };
  auto bad = k;
  check([&] { c.append(2, k.data(), v.data(), 1); }, {"append", "layer", "2", "[0, 2)"});
  check([&] { c.append(-1, k.data(), v.data(), 1); }, {"layer", "-1"});
  check([&] { c.append(0, k.data(), v.data(), 0); }, {"n_tokens", ">= 1"});
  check([&] { c.append(0, static_cast<const float*>(nullptr), v.data(), 1); }, {"'k'", "nullptr"});
  bad[77] = std::numeric_limits<float>::quiet_NaN();
  check([&] { c.append(0, bad.data(), v.data(), 2); }, {"'k'", "finite"});
  bad[77] = std::numeric_limits<float>::infinity();
  check([&] { c.append(1, k.data(), bad.data(), 2); }, {"'v'", "finite"});
  bad[77] = 70000.0f;  // beyond fp16: every store here keeps fp16 somewhere
  check([&] { c.append(1, k.data(), bad.data(), 2); }, {"'v'", "65504"});
  check([&] { c.append(0, k.data(), v.data(), 1, static_cast<Modality>(9)); }, {"modality", "9"});
  check([&] { c.append(0, k.data(), v.data(), 1, static_cast<const Modality*>(nullptr)); }, {"modalities"});
  if constexpr (!std::is_same_v<typename Cache::Policy::Evict, evict::StreamingLLM>) {
    auto big = kvtest::random_kv(51, 2, 64, 3);
    check([&] { c.append(0, big.data(), big.data(), 51); }, {"n_tokens", "51", "free capacity 50", "capacity 200"});
  }
  auto q = kvtest::random_kv(2, 4, 64, 4);
  std::vector<float> out(q.size());
  check([&] { c.attend(5, q.data(), 1, out.data()); }, {"attend", "layer"});
  check([&] { c.attend(0, q.data(), 0, out.data()); }, {"n_q", ">= 1"});
  check([&] { c.attend(0, q.data(), 151, out.data()); }, {"n_q", "151", "last n_q appended"});
  check([&] { c.attend(0, q.data(), 1, static_cast<float*>(nullptr)); }, {"'out'"});
  q[3] = std::numeric_limits<float>::quiet_NaN();
  check([&] { c.attend(0, q.data(), 1, out.data()); }, {"'q'", "finite"});
  q[3] = 0.0f;
  AttendOptions opt;
  opt.scale = -1.0f;
  check([&] { c.attend(0, q.data(), 1, out.data(), opt); }, {"scale"});
  check([&] { c.truncate(151); }, {"truncate", "n_tokens", "151", "<= tokens_seen (150)"});
  std::vector<float> kk(1000), vv(1000);
  check([&] { c.materialize(0, kk.data(), vv.data(), 1, 1); }, {"materialize", "head range"});
  check([&] { c.materialize(0, nullptr, vv.data()); }, {"k_out"});
  check([&] { (void)c.size(0, 2); }, {"kv_head", "[0, 2)"});
}

TEST(PolicyConfigErrors, EvictionBudgets) {
  const CacheShape s{1, 4, 2, 64, 100};
  using H = KVCache<Policy<evict::H2O>>;
  H::Config h{};
  expect_invalid([&] { H c(s, h); }, {"H2O", "recent_budget", ">= 1"});
  h.evict.recent_budget = 50;
  h.evict.heavy_budget = 51;
  expect_invalid([&] { H c(s, h); }, {"heavy_budget + recent_budget", "101", "capacity (100)"});
  using S = KVCache<Policy<evict::StreamingLLM>>;
  S::Config st{};
  st.evict.window_tokens = 0;
  expect_invalid([&] { S c(s, st); }, {"window_tokens"});
  st.evict.window_tokens = 97;
  expect_invalid([&] { S c(s, st); }, {"sink_tokens + window_tokens", "101"});
}

TEST(ExecutorErrors, ThreadCountAndTaskExceptions) {
  expect_invalid([] { ThreadPoolExecutor p(0); }, {"num_threads", ">= 1"});
  ThreadPoolExecutor pool(2);
  auto task = [](std::size_t i, int) {
    if (i == 3) throw std::runtime_error("task 3 failed");
  };
  EXPECT_THROW(pool.run(8, TaskRef(task)), std::runtime_error);
  // The pool stays usable and runs every task exactly once.
  std::vector<int> hits(100, 0);
  auto count = [&](std::size_t i, int w) {
    EXPECT_GE(w, 0);
    EXPECT_LT(w, 2);
    ++hits[i];
  };
  pool.run(100, TaskRef(count));
  for (int h : hits) EXPECT_EQ(h, 1);
}

}  // namespace
