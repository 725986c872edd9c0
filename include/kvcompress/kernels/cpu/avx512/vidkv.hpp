// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX-512 VidKV kernels (contract: kernels/cpu/scalar/vidkv.hpp). A 1-bit plane word is a
/// __mmask32 of the group's tokens, so logits add the plane weight under the mask into two
/// 16-token accumulators (`vaddps {k}`) with no decode at all; 2-bit planes and value dots use the
/// AVX2 kernels (calls with isa::avx512 resolve to them for those paths).

#include <cstddef>
#include <cstdint>

#include "kvcompress/kernels/cpu/avx2/vidkv.hpp"
#include "kvcompress/kernels/cpu/scalar/vidkv.hpp"

#if KVCOMPRESS_HAS_AVX512
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

inline void vidkv_plane_logits(const std::uint32_t* words, int bits, int planes, const float* w, std::size_t ldw,
                               int rows, float* out, std::size_t ldl, isa::avx512) {
  if (bits != 1) {
    vidkv_plane_logits(words, bits, planes, w, ldw, rows, out, ldl, isa::avx2{});
    return;
  }
  for (int r = 0; r < rows; ++r) {
    const float* wr = w + static_cast<std::size_t>(r) * ldw;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (int p = 0; p < planes; ++p) {
      const std::uint32_t m = words[p];
      const __m512 wv = _mm512_set1_ps(wr[p]);
      a0 = _mm512_mask_add_ps(a0, static_cast<__mmask16>(m & 0xFFFFu), a0, wv);
      a1 = _mm512_mask_add_ps(a1, static_cast<__mmask16>(m >> 16), a1, wv);
    }
    float* o = out + static_cast<std::size_t>(r) * ldl;
    _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), a0));
    _mm512_storeu_ps(o + 16, _mm512_add_ps(_mm512_loadu_ps(o + 16), a1));
  }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
#endif
