// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX-512 CQ kernels (layouts: kernels/cpu/scalar/cq.hpp). cq_table_logits gathers 16 slots
/// per vector (`vgatherdps` zmm) and sums groups in scalar order, so it is bit-identical to
/// scalar and AVX2 for equal tables. The table build and the value gather have no AVX-512
/// overload: their loops are 8-wide FMA chains over K that are bound by loads, and calls with
/// isa::avx512 resolve to the AVX2 kernels through the tag chain (as KIVI's decode kernels do).

#include "kvcompress/kernels/cpu/avx2/cq.hpp"

#if KVCOMPRESS_HAS_AVX512
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {
inline __m512i cq_load16(const std::uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m512i cq_load16(const std::uint16_t* p) {
  return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
}  // namespace detail

template <class Index>
inline void cq_table_logits(const Index* idx, std::size_t stride, std::size_t n, std::size_t groups,
                            const float* table, std::size_t ncent, float* out, isa::avx512) {
  std::size_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m512 acc = _mm512_setzero_ps();
    for (std::size_t g = 0; g < groups; ++g) {
      const __m512i ix = detail::cq_load16(idx + g * stride + j);
      acc = _mm512_add_ps(acc, _mm512_i32gather_ps(ix, table + g * ncent, 4));
    }
    _mm512_storeu_ps(out + j, acc);
  }
  if (j < n) cq_table_logits(idx + j, stride, n - j, groups, table, ncent, out + j, isa::avx2{});
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
#endif
