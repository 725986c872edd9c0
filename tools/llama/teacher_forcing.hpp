// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The evaluation protocol shared by kvc_eval and the quality tests: teacher forcing of one text
/// through several caches in lockstep, scored against the first cache.
///
/// On tokens [0, n]: prefill tokens [0, n/2) in chunks of `chunk`, end_prefill() (eviction
/// policies select their budget here), then decode tokens [n/2, n) one at a time, so the decode
/// path of every policy is exercised. Each decode step's logits are scored against the next text
/// token (n/2 predictions, each conditioned on ≥ n/2 tokens) and against the first cache's
/// distribution (KL, top-1), which is the reference.

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "metrics.hpp"
#include "model.hpp"

namespace kvllama {

template <class Cache>
std::vector<QualityStats> teacher_forced_quality(const Model& model, const std::vector<int>& tokens, int n,
                                                 int chunk, const std::vector<Cache*>& caches) {
  if (n < 2 || static_cast<std::size_t>(n) >= tokens.size())
    throw std::invalid_argument("teacher_forced_quality: the text needs more than n tokens");
  Session<Cache> session(model, caches);
  const int prefill = n / 2;
  for (int i = 0; i < prefill; i += chunk) session.feed(tokens.data() + i, std::min(chunk, prefill - i), Logits::kNone);
  session.end_prefill();
  std::vector<QualityStats> stats(caches.size());
  std::vector<double> ref, lp;
  const int vocab = model.config().vocab;
  for (int t = prefill; t < n; ++t) {
    const RowMatrix& logits = session.feed(&tokens[static_cast<std::size_t>(t)], 1, Logits::kAll);
    log_softmax(logits.row(0).data(), vocab, ref);
    for (std::size_t s = 0; s < caches.size(); ++s) {
      log_softmax(logits.row(static_cast<Eigen::Index>(s)).data(), vocab, lp);
      stats[s].add(lp, ref, tokens[static_cast<std::size_t>(t) + 1]);
    }
  }
  return stats;
}

}  // namespace kvllama
