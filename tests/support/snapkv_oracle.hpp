// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Independent double-precision SnapKV selection (eviction spec §13.3) for the tests of the
/// SnapKV-scored policies (SnapKV, PyramidKV): causal softmax of every observation-window query
/// per query head, summed over the window rows, pooled over the prefix slots with PyTorch
/// avg_pool1d (count_include_pad) / max_pool1d semantics written out here, averaged over the GQA
/// group; keep sinks + the top (C − W − sinks) prefix slots + the window, ties to the lower
/// position.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "support/prefill_fixture.hpp"

namespace kvtest {
namespace snapkv {

struct Oracle {
  std::size_t window = 32;
  int kernel = 5;
  bool max_pool = false;
  std::size_t sinks = 0;
};

/// Double-precision SnapKV scores of the live prefix slots of (l, h) (indexed like f.live()).
inline std::vector<double> oracle_scores(kvtest::PrefillFixture& f, int l, int h, const Oracle& o) {
  const auto live = f.live();
  const std::size_t n = live.size(), w = std::min(o.window, n), prefix = n - w;
  const int rep = f.rep(), half = o.kernel / 2;
  std::vector<double> score(n, 0.0);
  for (int g = 0; g < rep; ++g) {
    std::vector<double> col(n, 0.0);
    for (std::size_t i = 0; i < f.rows; ++i) {
      const auto p = kvtest::softmax_row(f.query(l, h * rep + g, i), [&](std::size_t j) { return f.key(l, h, j); },
                                         live, f.pos, f.qpos[i], f.d(), f.logit_scale());
      for (std::size_t t = 0; t < n; ++t) col[t] += p[t];
    }
    for (std::size_t t = 0; t < prefix; ++t) {
      double acc = o.max_pool ? -HUGE_VAL : 0.0;
      for (int u = -half; u <= half; ++u) {
        const long x = static_cast<long>(t) + u;
        if (x < 0 || x >= static_cast<long>(prefix)) continue;
        acc = o.max_pool ? std::max(acc, col[x]) : acc + col[x];
      }
      score[t] += (o.max_pool ? acc : acc / o.kernel) / rep;
    }
  }
  return score;
}

/// Expected kept positions of (l, h) with capacity C.
inline std::vector<std::int32_t> oracle_keep(kvtest::PrefillFixture& f, int l, int h, const Oracle& o, std::size_t C) {
  const auto live = f.live();
  const std::size_t n = live.size(), w = std::min(o.window, n);
  std::vector<std::int32_t> out;
  if (C >= n) {
    for (auto j : live) out.push_back(f.pos[j]);
    return out;
  }
  const auto score = oracle_scores(f, l, h, o);
  std::vector<std::size_t> cand;
  for (std::size_t t = o.sinks; t < n - w; ++t) cand.push_back(t);
  auto top = kvtest::top_indices(score, cand, C - w - o.sinks);
  for (std::size_t t = 0; t < o.sinks; ++t) top.push_back(t);
  for (std::size_t t = n - w; t < n; ++t) top.push_back(t);
  std::sort(top.begin(), top.end());
  for (auto t : top) out.push_back(f.pos[live[t]]);
  return out;
}

}  // namespace snapkv
}  // namespace kvtest
