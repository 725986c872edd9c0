// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Scalar reference for the two reductions of an fp32 softmax: the maximum of a row and the
/// in-place shifted exponential with its sum. The SIMD overloads replace `std::exp` by a
/// polynomial (see the AVX2/AVX-512 headers for its error bound).

#include <cmath>
#include <cstddef>
#include <limits>

#include "kvcompress/config.hpp"
#include "kvcompress/kernels/isa.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

/// Largest element of x[0..n); −inf when n == 0. −inf entries are allowed (masked logits).
inline float max_value(const float* x, std::size_t n, isa::scalar) {
  float m = -std::numeric_limits<float>::infinity();
  for (std::size_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

/// In place x[i] = exp(x[i] − m); returns Σ x[i] (fp32, sequential).
/// x[i] = −inf maps to exactly 0. If m itself is −inf (every entry masked) all outputs are 0 and
/// the sum is 0 rather than NaN, so a fully masked row contributes nothing.
inline float exp_shift_sum(float* x, std::size_t n, float m, isa::scalar) {
  if (m == -std::numeric_limits<float>::infinity()) {
    for (std::size_t i = 0; i < n; ++i) x[i] = 0.0f;
    return 0.0f;
  }
  float sum = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  return sum;
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
