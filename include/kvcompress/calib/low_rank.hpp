// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-11 of methods/quantization.md: rank-r approximation R ≈ Q·Pᵀ by power iteration, as GEAR
/// (arXiv 2403.05527; reference opengear-project/GEAR at efe0bfe, compress_function.py
/// `fake_poweriteration`) applies it to the quantization residual of each head's block.
///   P ← uniform[0, 1)^{d×r}  (torch.rand; here from mt19937_64, seeded [rec] instead of unseeded)
///   repeat `loops` times:
///     on the last iteration P ← orth(P)       (thin QR)
///     Q ← R·P
///     on the last iteration Q ← orth(Q)       (thin QR)
///     P ← Rᵀ·Q
///   R ≈ Q·Pᵀ = Q·Qᵀ·R  (projection onto span(Q); Q has orthonormal columns)
/// GEAR uses loops = 3, rank 4 at prefill and 2 for decode blocks. With r = min(n, d) the
/// approximation is exact up to rounding; a rank-1 residual is recovered exactly with r = 1.
/// Arithmetic is fp32 (as the reference); Householder QR from Eigen. P is filled row by row
/// (torch.rand's memory order). Uses Eigen: calibration/flush-time code, not the decode kernels.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>

#include <Eigen/Dense>

#include "kvcompress/calib/seeded_random.hpp"
#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace calib {

/// Factors of a rank-r approximation R ≈ q·pᵀ.
struct LowRankFactors {
  Eigen::MatrixXf q;  ///< [n][r], orthonormal columns
  Eigen::MatrixXf p;  ///< [d][r]

  /// q·pᵀ, the approximation of R ([n][d]).
  Eigen::MatrixXf reconstruct() const { return q * p.transpose(); }
};

namespace detail {

/// Orthonormal basis of the column space of m (thin Householder QR; m is tall or square).
inline Eigen::MatrixXf orthonormal_columns(const Eigen::MatrixXf& m) {
  Eigen::HouseholderQR<Eigen::MatrixXf> qr(m);
  return qr.householderQ() * Eigen::MatrixXf::Identity(m.rows(), m.cols());
}

}  // namespace detail

/// Rank-`rank` approximation of r ([n][d]) by `loops` power iterations from a seeded start.
/// Throws InvalidArgument unless 1 ≤ rank ≤ min(n, d), loops ≥ 1 and every entry is finite.
inline LowRankFactors power_iteration_low_rank(const Eigen::Ref<const Eigen::MatrixXf>& r, int rank,
                                               int loops, std::uint64_t seed = kDefaultSeed) {
  constexpr const char* where = "calib::power_iteration_low_rank";
  const Eigen::Index n = r.rows(), d = r.cols();
  kvcompress::detail::require(rank >= 1 && rank <= std::min(n, d), where, "rank", rank,
                              "an integer in [1, min(n, d)] = [1, " + std::to_string(std::min(n, d)) + "]");
  kvcompress::detail::require(loops >= 1, where, "loops", loops, "≥ 1 (GEAR: 3)");
  kvcompress::detail::require(r.allFinite(), where, "r", "non-finite entries", "a finite matrix");

  std::mt19937_64 rng(seed);
  LowRankFactors f;
  f.p.resize(d, rank);
  for (Eigen::Index i = 0; i < d; ++i)
    for (Eigen::Index j = 0; j < rank; ++j) f.p(i, j) = static_cast<float>(uniform01(rng));
  for (int it = 0; it < loops; ++it) {
    const bool last = it == loops - 1;
    if (last) f.p = detail::orthonormal_columns(f.p);
    f.q = r * f.p;
    if (last) f.q = detail::orthonormal_columns(f.q);
    f.p = r.transpose() * f.q;
  }
  return f;
}

}  // namespace calib
KVCOMPRESS_NAMESPACE_END
