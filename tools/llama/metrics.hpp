// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Next-token quality metrics of a model run against a reference run on the same text:
/// negative log-likelihood (→ perplexity), KL(reference ‖ run) of the full next-token
/// distributions (mean and 99th percentile over positions) and top-1 agreement. Log-softmax and
/// the sums are in double so that KL values near 1e-6 are not rounding noise.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

namespace kvllama {

/// out = log_softmax(logits[0..n)).
inline void log_softmax(const float* logits, int n, std::vector<double>& out) {
  out.resize(static_cast<std::size_t>(n));
  double mx = -std::numeric_limits<double>::infinity();
  for (int i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  for (int i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = logits[i] - lse;
}

/// KL(p ‖ q) = Σ p (log p − log q) from log-probabilities.
inline double kl_divergence(const std::vector<double>& logp, const std::vector<double>& logq) {
  double kl = 0;
  for (std::size_t i = 0; i < logp.size(); ++i) kl += std::exp(logp[i]) * (logp[i] - logq[i]);
  return std::max(kl, 0.0);
}

inline std::size_t argmax(const std::vector<double>& v) {
  return static_cast<std::size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

/// Running quality statistics of one run.
class QualityStats {
 public:
  /// One scored position: log-probabilities of the run and of the reference, and the true next token.
  void add(const std::vector<double>& logp, const std::vector<double>& logp_ref, int target) {
    nll_sum_ += -logp[static_cast<std::size_t>(target)];
    kl_.push_back(kl_divergence(logp_ref, logp));
    agree_ += argmax(logp) == argmax(logp_ref);
  }
  std::size_t count() const { return kl_.size(); }
  double mean_nll() const { return nll_sum_ / static_cast<double>(count()); }
  double perplexity() const { return std::exp(mean_nll()); }
  double mean_kl() const {
    double s = 0;
    for (double k : kl_) s += k;
    return s / static_cast<double>(count());
  }
  /// 99th percentile of the per-position KL (nearest rank).
  double p99_kl() const {
    std::vector<double> k = kl_;
    const std::size_t r = static_cast<std::size_t>(std::ceil(0.99 * static_cast<double>(k.size()))) - 1;
    std::nth_element(k.begin(), k.begin() + static_cast<std::ptrdiff_t>(r), k.end());
    return k[r];
  }
  double top1_agreement() const { return static_cast<double>(agree_) / static_cast<double>(count()); }

 private:
  double nll_sum_ = 0;
  std::vector<double> kl_;
  std::size_t agree_ = 0;
};

}  // namespace kvllama
