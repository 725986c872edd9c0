// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Double-precision attention helpers of the quality tools: softmax attention weights of one
/// query row over a key block, KL divergence of two weight vectors, and a running relative-error
/// accumulator. Written out plainly (no library kernels) so that the tools measure the cache
/// against an independent reference.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

namespace kvquality {

/// p[j] = softmax_j(scale·q·k_j) over keys k_j = k + j·ld, j ∈ [0, n); q and k_j have d entries.
inline void attention_weights(const float* q, const float* k, std::size_t n, std::size_t ld, std::size_t d,
                              double scale, std::vector<double>& p) {
  p.resize(n);
  double mx = -std::numeric_limits<double>::infinity();
  for (std::size_t j = 0; j < n; ++j) {
    const float* kj = k + j * ld;
    double s = 0.0;
    for (std::size_t c = 0; c < d; ++c) s += static_cast<double>(q[c]) * static_cast<double>(kj[c]);
    p[j] = s * scale;
    mx = std::max(mx, p[j]);
  }
  double sum = 0.0;
  for (double& x : p) sum += (x = std::exp(x - mx));
  for (double& x : p) x /= sum;
}

/// KL(p ‖ q) = Σ p·log(p/q) in nats; terms with p = 0 contribute 0, q is floored at 1e-300.
inline double kl_divergence(const std::vector<double>& p, const std::vector<double>& q) {
  double kl = 0.0;
  for (std::size_t i = 0; i < p.size(); ++i)
    if (p[i] > 0.0) kl += p[i] * (std::log(p[i]) - std::log(std::max(q[i], 1e-300)));
  return std::max(kl, 0.0);
}

/// ‖x − ref‖₂ / ‖ref‖₂ accumulated over many vectors (a Frobenius-norm ratio).
class RelativeError {
 public:
  void add(const float* x, const double* ref, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      const double e = static_cast<double>(x[i]) - ref[i];
      err2_ += e * e;
      ref2_ += ref[i] * ref[i];
    }
  }
  void add(const float* x, const float* ref, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      const double e = static_cast<double>(x[i]) - static_cast<double>(ref[i]);
      err2_ += e * e;
      ref2_ += static_cast<double>(ref[i]) * static_cast<double>(ref[i]);
    }
  }
  double value() const { return ref2_ > 0.0 ? std::sqrt(err2_ / ref2_) : 0.0; }

 private:
  double err2_ = 0.0, ref2_ = 0.0;
};

/// Nearest-rank quantile (0 < q ≤ 1) of v (copied).
inline double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  const std::size_t r = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(r), v.end());
  return v[r];
}

inline double mean(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

}  // namespace kvquality
