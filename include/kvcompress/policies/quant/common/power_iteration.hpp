// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-11 of methods/quantization.md without Eigen and without heap allocation: the rank-r power
/// iteration GEAR (arXiv 2403.05527, §7) runs on each flushed block's quantization residual
/// inside Store::append. Same algorithm and same start as calib/low_rank.hpp (the Eigen version,
/// used off the decode path and as this one's test oracle):
///   P ← uniform[0, 1)^{d×r}, filled row by row from mt19937_64(seed) via calib::uniform01
///   repeat `loops` times:
///     on the last iteration P ← orth(P);  Q ← R·P;  on the last iteration Q ← orth(Q);  P ← Rᵀ·Q
///   R ≈ Q·Pᵀ = Q·Qᵀ·R
/// orth() is modified Gram–Schmidt applied twice ("twice is enough"), in place, instead of
/// Householder QR: the columns can differ from Eigen's by sign, which leaves Q·Qᵀ·R unchanged. A
/// column that is numerically dependent on the previous ones (rank(R) < r) is set to zero; it
/// then contributes nothing to Q·Pᵀ, as the extra Householder columns (orthogonal to span(R·P))
/// would not either. T is float (the stores; fp32 as the reference) or double (tests).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>

#include "kvcompress/calib/seeded_random.hpp"
#include "kvcompress/config.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Orthonormalizes the `cols` columns of the row-major [rows][ld] matrix a in place (MGS, two
/// passes); dependent columns become zero.
template <class T>
void orthonormalize_columns(T* a, std::size_t rows, std::size_t cols, std::size_t ld) {
  for (std::size_t j = 0; j < cols; ++j) {
    T norm0 = 0;
    for (std::size_t i = 0; i < rows; ++i) norm0 += a[i * ld + j] * a[i * ld + j];
    norm0 = std::sqrt(norm0);
    for (int pass = 0; pass < 2; ++pass)
      for (std::size_t k = 0; k < j; ++k) {
        T dot = 0;
        for (std::size_t i = 0; i < rows; ++i) dot += a[i * ld + k] * a[i * ld + j];
        for (std::size_t i = 0; i < rows; ++i) a[i * ld + j] -= dot * a[i * ld + k];
      }
    T norm = 0;
    for (std::size_t i = 0; i < rows; ++i) norm += a[i * ld + j] * a[i * ld + j];
    norm = std::sqrt(norm);
    const T tiny = static_cast<T>(sizeof(T) == 4 ? 1e-5 : 1e-12) * norm0;
    const T inv = (norm > tiny && norm > T(0)) ? T(1) / norm : T(0);
    for (std::size_t i = 0; i < rows; ++i) a[i * ld + j] *= inv;
  }
}

/// Rank-`rank` power iteration on r ([n][ldr], d columns used): writes q [n][rank] (orthonormal
/// or zero columns) and p [d][rank] with r ≈ q·pᵀ. Preconditions (checked by the callers'
/// configs): 1 ≤ rank ≤ min(n, d), loops ≥ 1, finite r. No allocation.
template <class T>
void power_iteration_low_rank_inplace(const T* r, std::size_t n, std::size_t d, std::size_t ldr, std::size_t rank,
                                      int loops, std::uint64_t seed, T* q, T* p) {
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < d * rank; ++i) p[i] = static_cast<T>(static_cast<float>(calib::uniform01(rng)));
  for (int it = 0; it < loops; ++it) {
    const bool last = it == loops - 1;
    if (last) orthonormalize_columns(p, d, rank, rank);
    for (std::size_t t = 0; t < n; ++t)  // q = r·p
      for (std::size_t j = 0; j < rank; ++j) {
        T acc = 0;
        for (std::size_t c = 0; c < d; ++c) acc += r[t * ldr + c] * p[c * rank + j];
        q[t * rank + j] = acc;
      }
    if (last) orthonormalize_columns(q, n, rank, rank);
    for (std::size_t c = 0; c < d; ++c)  // p = rᵀ·q
      for (std::size_t j = 0; j < rank; ++j) {
        T acc = 0;
        for (std::size_t t = 0; t < n; ++t) acc += r[t * ldr + c] * q[t * rank + j];
        p[c * rank + j] = acc;
      }
  }
}

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
