// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Scalar reference kernels of VidKV (arXiv 2503.16257; methods/quantization.md §6): fused
/// attention over per-channel code planes of one 32-token group, with all metadata, the FFT and
/// the mixed precision folded into per-plane weights by the caller (the store).
///
/// ## Code plane (one channel — or one FFT frequency channel — of one 32-token group)
/// P-KIVI along tokens (BB-4): b = 1: one uint32, token t at bit t; b = 2: two uint32, token t at
/// bits [2·(t mod 16), +2) of word t/16. Planes of one kind lie back to back
/// (`planes·b` words).
///
/// Kernels (exact fp32; SIMD versions differ only in summation order):
///   vidkv_plane_logits: out[r·ldl + t] += Σ_p w[r·ldw + p]·code_{p,t}            (keys)
///   vidkv_plane_dot:    out[r·ldo + p]  = Σ_t p[r·ldp + t]·code_{p,t}             (values)

#include <cstddef>
#include <cstdint>

#include "kvcompress/config.hpp"
#include "kvcompress/kernels/isa.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

/// Tokens of a VidKV group (one plane word per bit).
inline constexpr int kVidKVGroup = 32;
/// Largest number of query rows one call handles.
inline constexpr int kVidKVMaxRows = 16;

/// Code of token t in a b-bit plane (b ∈ {1, 2}).
inline unsigned vidkv_code(const std::uint32_t* plane, int bits, int t) {
  return bits == 1 ? (plane[0] >> t) & 1u : (plane[t >> 4] >> (2 * (t & 15))) & 3u;
}

inline void vidkv_plane_logits(const std::uint32_t* words, int bits, int planes, const float* w, std::size_t ldw,
                               int rows, float* out, std::size_t ldl, isa::scalar) {
  for (int r = 0; r < rows; ++r) {
    float* o = out + static_cast<std::size_t>(r) * ldl;
    const float* wr = w + static_cast<std::size_t>(r) * ldw;
    for (int t = 0; t < kVidKVGroup; ++t) {
      float acc = 0.0f;
      for (int p = 0; p < planes; ++p)
        acc += wr[p] * static_cast<float>(vidkv_code(words + static_cast<std::size_t>(p * bits), bits, t));
      o[t] += acc;
    }
  }
}

inline void vidkv_plane_dot(const std::uint32_t* words, int bits, int planes, const float* p, std::size_t ldp,
                            int rows, float* out, std::size_t ldo, isa::scalar) {
  for (int r = 0; r < rows; ++r) {
    const float* pr = p + static_cast<std::size_t>(r) * ldp;
    float* o = out + static_cast<std::size_t>(r) * ldo;
    for (int q = 0; q < planes; ++q) {
      const std::uint32_t* plane = words + static_cast<std::size_t>(q * bits);
      float acc = 0.0f;
      for (int t = 0; t < kVidKVGroup; ++t) acc += pr[t] * static_cast<float>(vidkv_code(plane, bits, t));
      o[q] = acc;
    }
  }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
