// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Scalar reference for decode attention over a dense (float or half) cache: the logits
/// q·k_t for a tile of query rows and the probability-weighted sum of value rows. Both loops read
/// each cache row once for all query rows (GQA group × query tile), which is what the SIMD
/// overloads optimise.

#include <cassert>
#include <cstddef>

#include "kvcompress/config.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/kernels/isa.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

/// Largest number of query rows one call of the attention kernels handles.
inline constexpr int kMaxQueryRows = 16;

/// logits[r·ldl + t] = Σ_c q[r][c] · k[t][c] for t in [0, n), r in [0, rows).
/// \tparam T     cache element type: float or half.
/// \param k      [n][ldk] keys; row t starts at k + t·ldk, the first d elements are used.
/// \param q      [rows][d] queries, contiguous, already scaled by 1/√d.
/// \param rows   1..16.
/// \param logits [rows][ldl] output (overwritten).
template <class T>
inline void dense_logits(const T* k, std::size_t ldk, std::size_t n, int d, const float* q,
                         int rows, float* logits, std::size_t ldl, isa::scalar) {
  assert(rows >= 1 && rows <= kMaxQueryRows && d >= 1);
  float acc[kMaxQueryRows];
  for (std::size_t t = 0; t < n; ++t) {
    const T* kt = k + t * ldk;
    for (int r = 0; r < rows; ++r) acc[r] = 0.0f;
    for (int c = 0; c < d; ++c) {
      const float kc = to_float(kt[c]);
      for (int r = 0; r < rows; ++r) acc[r] += q[r * d + c] * kc;
    }
    for (int r = 0; r < rows; ++r) logits[static_cast<std::size_t>(r) * ldl + t] = acc[r];
  }
}

/// out[r][c] += Σ_t p[r·ldp + t] · v[t][c] for t in [0, n), c in [0, d).
/// \param v   [n][ldv] values (float or half), first d elements of each row used.
/// \param p   [rows][ldp] weights (softmax numerators).
/// \param out [rows][d] accumulator, contiguous.
template <class T>
inline void dense_accumulate(const T* v, std::size_t ldv, std::size_t n, int d, const float* p,
                             std::size_t ldp, int rows, float* out, isa::scalar) {
  assert(rows >= 1 && rows <= kMaxQueryRows && d >= 1);
  for (std::size_t t = 0; t < n; ++t) {
    const T* vt = v + t * ldv;
    for (int c = 0; c < d; ++c) {
      const float vc = to_float(vt[c]);
      for (int r = 0; r < rows; ++r) out[r * d + c] += p[static_cast<std::size_t>(r) * ldp + t] * vc;
    }
  }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
