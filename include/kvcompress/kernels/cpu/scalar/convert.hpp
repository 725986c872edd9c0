// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Scalar reference for bulk conversion between fp32 and the 16-bit storage types (`half`,
/// `bfloat16`). Each element goes through the exact conversions of core/float16.hpp (round to
/// nearest even, NaN stays NaN, overflow to ±inf); the SIMD overloads must agree bit for bit.

#include <cstddef>

#include "kvcompress/config.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/kernels/isa.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

/// binary16 → fp32, exact. `src` and `dst` are [n].
inline void convert(const half* src, float* dst, std::size_t n, isa::scalar) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = f16_bits_to_f32(src[i].bits);
}

/// bfloat16 → fp32, exact.
inline void convert(const bfloat16* src, float* dst, std::size_t n, isa::scalar) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_f32(src[i].bits);
}

/// fp32 → binary16, round to nearest even.
inline void convert(const float* src, half* dst, std::size_t n, isa::scalar) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = half{f32_to_f16_bits(src[i])};
}

/// fp32 → bfloat16, round to nearest even; NaN becomes a quiet NaN.
inline void convert(const float* src, bfloat16* dst, std::size_t n, isa::scalar) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = bfloat16{f32_to_bf16_bits(src[i])};
}

/// fp32 → fp32 copy (lets generic code call `convert` for every storage type).
inline void convert(const float* src, float* dst, std::size_t n, isa::scalar) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = src[i];
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
