// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Independent double-precision oracle for cache attention: softmax(q·kᵀ·scale) v over the slots a
/// query may see (slot position ≤ query position), GQA by head index h / group_size. Plain loops;
/// never calls library code.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvref {

/// One KV head's slots as the oracle sees them: K, V are [n][d], pos is [n].
struct HeadSlots {
  std::vector<float> k, v;
  std::vector<std::int32_t> pos;
};

/// out[r] for query rows r of one KV head: q is [rows][d] (unscaled), qpos[r] the row's
/// position. Returns [rows][d] in double; lse (optional) receives log Σ exp(logits).
inline std::vector<double> attention(const HeadSlots& s, int d, const float* q, int rows,
                                     const std::int64_t* qpos, double scale,
                                     std::vector<double>* lse = nullptr) {
  const std::size_t n = s.pos.size();
  std::vector<double> out(static_cast<std::size_t>(rows) * d, 0.0), w(n);
  if (lse) lse->assign(static_cast<std::size_t>(rows), 0.0);
  for (int r = 0; r < rows; ++r) {
    double m = -INFINITY;
    for (std::size_t j = 0; j < n; ++j) {
      if (s.pos[j] > qpos[r]) { w[j] = -INFINITY; continue; }
      double dot = 0;
      for (int c = 0; c < d; ++c) dot += static_cast<double>(q[r * d + c]) * s.k[j * d + c];
      w[j] = dot * scale;
      m = std::fmax(m, w[j]);
    }
    double sum = 0;
    for (std::size_t j = 0; j < n; ++j) {
      w[j] = std::isinf(w[j]) ? 0.0 : std::exp(w[j] - m);
      sum += w[j];
    }
    for (std::size_t j = 0; j < n; ++j)
      for (int c = 0; c < d; ++c) out[r * d + c] += w[j] / sum * s.v[j * d + c];
    if (lse) (*lse)[r] = m + std::log(sum);
  }
  return out;
}

/// Attention probabilities of each row over the slots ([rows][n], double), same masking.
inline std::vector<double> probabilities(const HeadSlots& s, int d, const float* q, int rows,
                                         const std::int64_t* qpos, double scale) {
  const std::size_t n = s.pos.size();
  std::vector<double> p(static_cast<std::size_t>(rows) * n, 0.0);
  for (int r = 0; r < rows; ++r) {
    double m = -INFINITY;
    for (std::size_t j = 0; j < n; ++j) {
      if (s.pos[j] > qpos[r]) continue;
      double dot = 0;
      for (int c = 0; c < d; ++c) dot += static_cast<double>(q[r * d + c]) * s.k[j * d + c];
      p[r * n + j] = dot * scale;
      m = std::fmax(m, p[r * n + j]);
    }
    double sum = 0;
    for (std::size_t j = 0; j < n; ++j) {
      p[r * n + j] = s.pos[j] > qpos[r] ? 0.0 : std::exp(p[r * n + j] - m);
      sum += p[r * n + j];
    }
    for (std::size_t j = 0; j < n; ++j) p[r * n + j] /= sum;
  }
  return p;
}

}  // namespace kvref
