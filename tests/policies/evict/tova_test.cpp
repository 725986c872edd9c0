// SPDX-License-Identifier: Apache-2.0
// TOVA (eviction spec §13.5) against an independent double-precision simulation: a layer keeps
// C states; each new token joins them, its query attends, and the slot with the lowest attention
// from that query, averaged over all query heads, is dropped — never the current token; ties
// drop the later position. Spec oracle: the dropped slot = argmin of the head-mean current-row
// attention. Tested on make_room / a hand-built PrefillContext, then end to end through KVCache
// (token-by-token prefill + decode, and chunked prefill + end_prefill + decode).

#include "kvcompress/policies/evict/tova.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "support/cache_test_support.hpp"
#include "support/expect_invalid.hpp"
#include "support/prefill_fixture.hpp"

namespace {

using namespace kvcompress;
using kvtest::PrefillFixture;

evict::TOVA::Config make_config(std::size_t C) {
  evict::TOVA::Config c;
  c.cache_size = C;
  return c;
}

// A per-layer SlotView over n slots with the given scores, all alive.
struct Slots {
  std::vector<std::int32_t> pos;
  std::vector<std::uint8_t> alive;
  std::vector<float> score;
  std::vector<std::uint8_t> keep;
  SlotView view() {
    SlotView s;
    s.n = pos.size();
    s.n_alive = static_cast<std::size_t>(std::count(alive.begin(), alive.end(), 1));
    s.pos = pos.data();
    s.alive = alive.data();
    s.score = score.data();
    keep = alive;
    return s;
  }
};

TEST(TOVA, MakeRoomDropsTheArgminButNeverTheCurrentToken) {
  Slots sl{{0, 1, 2, 4, 7, 9}, {1, 1, 1, 1, 1, 1}, {0.3f, 0.1f, 0.2f, 0.15f, 0.2f, 0.05f}, {}};
  const auto s = sl.view();
  evict::TOVA::make_room(make_config(5), s, 1, sl.keep.data());  // 6 + 1 > C + 1 = 6 → drop 1
  // The newest slot (pos 9, score 0.05) is the current token: kept. Argmin of the rest = pos 1.
  EXPECT_EQ(sl.keep, (std::vector<std::uint8_t>{1, 0, 1, 1, 1, 1}));
}

TEST(TOVA, MakeRoomTiesDropTheLaterPosition) {
  Slots sl{{0, 1, 2, 3, 4}, {1, 1, 1, 1, 1}, {0.2f, 0.1f, 0.3f, 0.1f, 0.3f}, {}};
  const auto s = sl.view();
  evict::TOVA::make_room(make_config(4), s, 1, sl.keep.data());
  EXPECT_EQ(sl.keep, (std::vector<std::uint8_t>{1, 1, 1, 0, 1}));
}

TEST(TOVA, MakeRoomUnderBudgetDoesNothing) {
  Slots sl{{0, 1, 2, 3}, {1, 1, 1, 1}, {0.4f, 0.1f, 0.2f, 0.3f}, {}};
  const auto s = sl.view();
  evict::TOVA::make_room(make_config(4), s, 1, sl.keep.data());  // 4 + 1 ≤ 5
  EXPECT_EQ(sl.keep, sl.alive);
}

// Head-mean attention of the last window query over the live slots of layer l (double).
std::vector<double> last_row_oracle(PrefillFixture& f, int l) {
  const auto live = f.live();
  std::vector<double> mean(live.size(), 0.0);
  const int hq = f.shape.num_q_heads, rep = f.rep();
  for (int g = 0; g < hq; ++g) {
    const auto p = kvtest::softmax_row(
        f.query(l, g, f.rows - 1), [&](std::size_t j) { return f.key(l, g / rep, j); }, live, f.pos, f.qpos[f.rows - 1],
        f.d(), f.logit_scale());
    for (std::size_t t = 0; t < live.size(); ++t) mean[t] += p[t] / hq;
  }
  return mean;
}

std::vector<std::int32_t> prefill_oracle(PrefillFixture& f, int l, std::size_t C) {
  const auto live = f.live();
  const auto score = last_row_oracle(f, l);
  std::vector<std::size_t> cand;
  for (std::size_t t = 0; t + 1 < live.size(); ++t) cand.push_back(t);
  auto top = kvtest::top_indices(score, cand, C - 1);
  top.push_back(live.size() - 1);
  std::vector<std::int32_t> out;
  for (auto t : top) out.push_back(f.pos[live[t]]);
  return out;
}

TEST(TOVA, PrefillEndKeepsTheBestSlotsOfTheLastQuery) {
  PrefillFixture f({2, 8, 2, 64, 512}, false, 90, 3, 51);
  f.alive[17] = 0;
  auto ctx = f.context();
  evict::TOVA::on_prefill_end(make_config(30), ctx);
  for (int l = 0; l < 2; ++l) {
    EXPECT_EQ(f.kept(l, 0), prefill_oracle(f, l, 30)) << "layer " << l;
    EXPECT_EQ(f.kept(l, 0).back(), 89);  // the current token stays
  }
}

TEST(TOVA, IdentityWhenThePromptFits) {
  PrefillFixture f({1, 4, 2, 64, 512}, false, 40, 1, 52);
  auto ctx = f.context();
  evict::TOVA::on_prefill_end(make_config(40), ctx);
  EXPECT_EQ(f.kept(0, 0).size(), 40u);
}

TEST(TOVA, IdenticalQueryHeadsInAGroupEqualTheMhaResult) {
  PrefillFixture gqa({1, 8, 2, 64, 512}, false, 70, 1, 53);
  PrefillFixture mha({1, 2, 2, 64, 512}, false, 70, 1, 53);
  mha.k = gqa.k;
  for (int g = 0; g < 8; ++g) std::copy(mha.query(0, g / 4, 0), mha.query(0, g / 4, 0) + 64, gqa.query(0, g, 0));
  auto a = gqa.context();
  auto b = mha.context();
  evict::TOVA::on_prefill_end(make_config(20), a);
  evict::TOVA::on_prefill_end(make_config(20), b);
  EXPECT_EQ(gqa.kept(0, 0), mha.kept(0, 0));
}

TEST(TOVA, BadConfigsNameTheField) {
  const CacheShape s{1, 4, 2, 64, 64};
  kvtest::expect_invalid_argument([&] { make_config(0).validate(s); }, "cache_size");
  kvtest::expect_invalid_argument([&] { make_config(64).validate(s); }, "cache_size");
  EXPECT_NO_THROW(make_config(63).validate(s));
  EXPECT_EQ(evict::TOVA::query_window(make_config(8)), 1u);
}

TEST(TOVA, MissingLastQueryIsAnError) {
  PrefillFixture f({1, 4, 2, 64, 512}, false, 40, 1, 54);
  auto ctx = f.context(false);
  kvtest::expect_invalid_argument([&] { evict::TOVA::on_prefill_end(make_config(10), ctx); }, "queries(layer).rows");
}

// Independent TOVA over a token stream, per layer: the live positions after every step.
struct Simulation {
  CacheShape s;
  std::size_t C;
  const std::vector<float>* k;  // [T][Hkv][d] of one layer
  const std::vector<float>* q;  // [T][Hq][d]
  std::vector<std::int32_t> live;
  std::map<std::int32_t, double> score;

  const float* key(int h, std::int32_t p) const {
    return k->data() + (static_cast<std::size_t>(p) * s.num_kv_heads + h) * s.head_dim;
  }

  void append(std::int32_t t) {
    if (live.size() + 1 > C + 1) {  // drop argmin of the latest scores, never the newest slot
      auto worst = live.begin();
      for (auto it = live.begin(); it + 1 != live.end(); ++it)
        if (score[*it] <= score[*worst]) worst = it;  // ties drop the later position
      live.erase(worst);
    }
    live.push_back(t);
  }
  // The latest query = token t, over the live slots.
  void attend(std::int32_t t) {
    score.clear();
    const int rep = s.group_size();
    std::vector<std::size_t> idx(live.size());
    for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    for (int g = 0; g < s.num_q_heads; ++g) {
      const float* x = q->data() + (static_cast<std::size_t>(t) * s.num_q_heads + g) * s.head_dim;
      const auto p = kvtest::softmax_row(
          x, [&](std::size_t i) { return key(g / rep, live[i]); }, idx, live, t, static_cast<std::size_t>(s.head_dim),
          1.0 / std::sqrt(double(s.head_dim)));
      for (std::size_t i = 0; i < live.size(); ++i) score[live[i]] += p[i] / s.num_q_heads;
    }
  }
};

TEST(TOVA, EndToEndTokenByTokenMatchesTheSimulation) {
  using Cache = KVCache<Policy<evict::TOVA, merge::None, quant::DenseF32>>;
  const CacheShape s{2, 4, 2, 64, 64};
  Cache::Config cfg{};
  cfg.evict = make_config(20);
  Cache c(s, cfg);
  const std::size_t T = 90;
  const auto prompt = kvtest::random_prompt(s, T, 55);
  std::vector<Simulation> sim;
  for (int l = 0; l < 2; ++l) sim.push_back(Simulation{s, 20, &prompt.k[l], &prompt.q[l], {}, {}});
  std::vector<float> out(4 * 64);
  for (std::size_t t = 0; t < T; ++t) {
    if (t == 50) c.end_prefill();  // the prompt ends here: a single step's drop, as make_room would
    for (int l = 0; l < 2; ++l) {
      if (t == 50) {
        // end_prefill applied one TOVA step with the last prompt query (token 49).
        if (sim[l].live.size() > 20) sim[l].append(-1), sim[l].live.pop_back();
      }
      c.append(l, prompt.k[l].data() + t * 128, prompt.v[l].data() + t * 128, 1);
      sim[l].append(static_cast<std::int32_t>(t));
      ASSERT_EQ(kvtest::cache_positions(c, l, 0), sim[l].live) << "layer " << l << " token " << t;
      ASSERT_EQ(kvtest::cache_positions(c, l, 1), sim[l].live);
      c.attend(l, prompt.q[l].data() + t * 256, 1, out.data());
      sim[l].attend(static_cast<std::int32_t>(t));
      EXPECT_LE(c.size(l, 0), 21u);
    }
  }
}

TEST(TOVA, EndToEndChunkedPrefillThenDecode) {
  using Cache = KVCache<Policy<evict::TOVA, merge::None, quant::DenseF32>>;
  const CacheShape s{2, 4, 2, 64, 128};
  Cache::Config cfg{};
  cfg.evict = make_config(24);
  Cache c(s, cfg);
  const std::size_t m = 80, T = 100;
  const auto all = kvtest::random_prompt(s, T, 56);
  kvtest::Prompt prompt = all;
  prompt.m = m;
  kvtest::feed_prompt(c, prompt);
  c.end_prefill();
  auto f = kvtest::oracle_view(s, false, prompt, 1);
  std::vector<Simulation> sim;
  for (int l = 0; l < 2; ++l) {
    EXPECT_EQ(kvtest::cache_positions(c, l, 0), prefill_oracle(f, l, 24)) << "layer " << l;
    sim.push_back(Simulation{s, 24, &all.k[l], &all.q[l], kvtest::cache_positions(c, l, 0), {}});
  }
  std::vector<float> out(4 * 64);
  for (std::size_t t = m; t < T; ++t)
    for (int l = 0; l < 2; ++l) {
      c.append(l, all.k[l].data() + t * 128, all.v[l].data() + t * 128, 1);
      sim[l].append(static_cast<std::int32_t>(t));
      ASSERT_EQ(kvtest::cache_positions(c, l, 1), sim[l].live) << "layer " << l << " token " << t;
      std::vector<float> qt(all.q[l].begin() + static_cast<std::ptrdiff_t>(t * 256),
                            all.q[l].begin() + static_cast<std::ptrdiff_t>((t + 1) * 256));
      c.attend(l, qt.data(), 1, out.data());
      kvtest::expect_attention_matches(c, l, qt, 1, out, 1e-5, 1e-5);
      sim[l].attend(static_cast<std::int32_t>(t));
    }
}

}  // namespace
