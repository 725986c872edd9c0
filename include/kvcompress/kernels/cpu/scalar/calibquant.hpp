// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Scalar reference kernels of CalibQuant (arXiv 2502.14882; methods/quantization.md §4, BB-4
/// P-CALIB, BB-15 post-scaling): fused decode attention over 1-bit per-channel codes of a visual
/// span, computed on the raw bits with the affine metadata folded into the other operand.
///
/// ## Code row (one token)
/// `row_bytes` apart, each row holds the token's d key bits (d/8 bytes, P-CALIB: channel c is bit
/// 7 − (c mod 8) of byte c/8, i.e. MSB first) — the value bits of the same token follow in the
/// store's layout, but the kernels only see one operand at a time (`codes` + `stride`).
///
/// ## Post-scaling identities (BB-15, with the float offset z = lo of the spec's [rec])
///   logit_t = Σ_c (q_c·s_c)·code_{t,c} + Σ_c q_c·z_c
///   out_c  += s_c·Σ_t p_t·code_{t,c} + z_c·Σ_t p_t
/// `s` and `z` are fp32 here (the store widens its fp16 metadata once per call), so both kernels
/// are exact fp32 evaluations of the dequantize-then-dot form up to summation order.

#include <cstddef>
#include <cstdint>

#include "kvcompress/config.hpp"
#include "kvcompress/kernels/isa.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

/// Largest head dimension the CalibQuant kernels accept (stack buffers are sized for it).
inline constexpr int kCalibQuantMaxDim = 256;
/// Largest number of query rows one call handles.
inline constexpr int kCalibQuantMaxRows = 16;

/// Bit c (P-CALIB, MSB first) of a 1-bit code row.
inline unsigned calibquant_bit(const std::uint8_t* row, int c) {
  return (row[c >> 3] >> (7 - (c & 7))) & 1u;
}

/// out[r·ldl + t] = Σ_c q[r·d + c]·(s_c·code_{t,c} + z_c) for t < n, via the post-scaling identity.
/// \param codes  n code rows, row t at codes + t·stride (d/8 bytes of key bits each)
inline void calibquant_key_logits(const std::uint8_t* codes, std::size_t stride, std::size_t n, int d,
                                  const float* s, const float* z, const float* q, int rows, float* out,
                                  std::size_t ldl, isa::scalar) {
  float qs[kCalibQuantMaxDim];
  for (int r = 0; r < rows; ++r) {
    const float* qr = q + static_cast<std::size_t>(r) * static_cast<std::size_t>(d);
    float bias = 0.0f;
    for (int c = 0; c < d; ++c) {
      qs[c] = qr[c] * s[c];
      bias += qr[c] * z[c];
    }
    float* o = out + static_cast<std::size_t>(r) * ldl;
    for (std::size_t t = 0; t < n; ++t) {
      const std::uint8_t* row = codes + t * stride;
      float acc = 0.0f;
      for (int c = 0; c < d; ++c)
        if (calibquant_bit(row, c)) acc += qs[c];
      o[t] = acc + bias;
    }
  }
}

/// out[r·d + c] += s_c·Σ_t p[r·ldp + t]·code_{t,c} + z_c·Σ_t p[r·ldp + t] for t < n.
inline void calibquant_value_accumulate(const std::uint8_t* codes, std::size_t stride, std::size_t n, int d,
                                        const float* s, const float* z, const float* p, std::size_t ldp,
                                        int rows, float* out, isa::scalar) {
  float acc[kCalibQuantMaxDim];
  for (int r = 0; r < rows; ++r) {
    const float* pr = p + static_cast<std::size_t>(r) * ldp;
    for (int c = 0; c < d; ++c) acc[c] = 0.0f;
    float psum = 0.0f;
    for (std::size_t t = 0; t < n; ++t) {
      const float pt = pr[t];
      psum += pt;
      const std::uint8_t* row = codes + t * stride;
      for (int c = 0; c < d; ++c)
        if (calibquant_bit(row, c)) acc[c] += pt;
    }
    float* o = out + static_cast<std::size_t>(r) * static_cast<std::size_t>(d);
    for (int c = 0; c < d; ++c) o[c] += s[c] * acc[c] + z[c] * psum;
  }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
