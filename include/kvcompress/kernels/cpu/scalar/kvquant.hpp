// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Scalar reference kernels of KVQuant (methods/quantization.md §2; Hooper et al., arXiv
/// 2401.18079): the packed per-slot row format, decoding one slot (non-uniform LUT codes, exact
/// sparse outliers, fp16 attention sinks, RoPE at the slot's own position) and the fused decode
/// kernels over a block of rows.
///
/// Row format (KvqRowFormat; one key row and one value row per slot, unaligned, little-endian):
///   key row    int32 pos | uint8 count | uint8 sink | [fp16 offset, fp16 half_range]⁽¹⁾ |
///              codes ⌈d·b/8⌉ bytes | key_cap × (uint16 channel, fp16 value)
///   value row  uint8 count | uint8 pad | fp16 offset | fp16 half_range |
///              codes ⌈d·b/8⌉ bytes | value_cap × (uint16 channel, fp16 value)
///   (1) only when keys are normalized per token (data-free mode); calibrated keys use the
///       static per-channel (offset, half_range) of the calibration, folded into a pre-scaled LUT
///       lut_c[c][i] = LUT[i]·hr_c + off_c (BB-5 "kernels may pre-multiply the LUT per channel").
/// Codes are an LSB-first bitstream: code c occupies bits [b·c, b·c + b) of the code bytes
/// (b ∈ {2, 4}: the P-KIVI byte order; b = 3 straddles bytes). Both caps are ≥ 1, so at least
/// 4 bytes follow the codes inside the row: the SIMD decoders load 4 bytes at a code's byte. Outlier entries hold ascending
/// channel indices; `count` entries are valid. A sink slot (sink = 1) ignores codes and outliers:
/// its key/value are the fp16 rows sink_k/sink_v[pos] kept by the store.
/// Outlier reconstruction (KvqOutlierMode): kMask — the stored value replaces the dense value
/// (exact, BB-10 [rec]); kAddToDense — dense value + stored value (the reference kernels' two
/// encodings, §12 `outlier_encoding = ref_zero_code / ref_residual`; the encoder chooses code and
/// residual).
///
/// Fused kernels: RoPE turns the query into a per-slot rotation (q·R(pos)k̂ = (R(pos)ᵀq)·k̂), so a
/// per-step q·centroid table would need two tables per channel and per pair; instead every slot is
/// decoded once into a buffer (codes → pre-scaled LUT, outliers, RoPE with the slot's position)
/// and dotted with all query rows of
/// the call; values are decoded once and added to all rows. Nothing outside the current slot is
/// dequantized. The ISA overloads (avx2/avx512 headers) vectorize the code unpacking + LUT
/// gathers and the dot/axpy; decoded values agree with scalar up to FMA contraction of
/// LUT·hr + off (one rounding), and fp32 summation order differs.

#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kvcompress/config.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/kernels/isa.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

/// Largest number of query rows one call of the KVQuant decode kernels handles.
inline constexpr int kKvqMaxRows = 16;

/// How a stored outlier value combines with the dense code at its channel.
enum class KvqOutlierMode : std::uint8_t {
  kMask,        ///< x̂ = stored value (dense ignored)
  kAddToDense,  ///< x̂ = dense value + stored value
};

/// Byte geometry of KVQuant key/value rows (see the file comment).
struct KvqRowFormat {
  std::size_t d = 0;
  int bits = 0;
  std::size_t key_cap = 0;      ///< outlier entries per key row
  std::size_t value_cap = 0;    ///< outlier entries per value row
  bool key_dynamic = false;     ///< keys carry their own per-token (offset, half_range)

  std::size_t code_bytes() const { return (d * static_cast<std::size_t>(bits) + 7) / 8; }
  std::size_t key_params() const { return 6; }
  std::size_t key_codes() const { return key_params() + (key_dynamic ? 4 : 0); }
  std::size_t key_outliers() const { return key_codes() + code_bytes(); }
  std::size_t key_row_bytes() const { return key_outliers() + 4 * key_cap; }
  std::size_t value_codes() const { return 6; }
  std::size_t value_outliers() const { return value_codes() + code_bytes(); }
  std::size_t value_row_bytes() const { return value_outliers() + 4 * value_cap; }
};

/// Positions per low-part table of the angle-addition RoPE path.
inline constexpr std::int64_t kKvqRopeLo = 16;

/// RoPE of a pre-RoPE key store: θ_i (already including NTK base scaling) and the linear
/// position divisor, angle_i = (pos / pos_div)·θ_i.
/// Exact path (lo_cos == nullptr): angles in double, cos/sin rounded to fp32 once — the
/// arithmetic of quant/common/rope.hpp. Table path: pos = 16·hi + lo; cos/sin of the lo part come
/// from [16][d/2] tables (built once per store, double → fp32), those of the hi part are computed
/// in double once per distinct hi within a kernel call (consecutive slots share it), and combined
/// by angle addition in fp32 (|error| ≲ 3e-7 vs the exact path). Decode then costs d/2 sincos
/// per 16 consecutive slots instead of per slot.
struct KvqRope {
  const double* theta = nullptr;  ///< [d/2]
  double pos_div = 1.0;
  bool interleaved = false;       ///< pairs (2i, 2i+1) instead of (i, i + d/2)
  const float* lo_cos = nullptr;  ///< [kKvqRopeLo][d/2] cos(lo/pos_div·θ_i), or nullptr
  const float* lo_sin = nullptr;  ///< [kKvqRopeLo][d/2]
};

/// Per-call cache of the hi-part cos/sin (table path): hc/hs hold d/2 floats each.
struct KvqRopeState {
  float* hc = nullptr;
  float* hs = nullptr;
  std::int64_t hi = -1;
};

/// Everything a decode kernel needs besides the rows.
struct KvqTables {
  const float* lut_k = nullptr;     ///< [2^b] normalized key LUT (dynamic keys)
  const float* lut_k_c = nullptr;   ///< [d][2^b] pre-scaled key LUT (static keys)
  const float* lut_v = nullptr;     ///< [2^b] normalized value LUT
  const half* sink_k = nullptr;     ///< [n_sink][d]
  const half* sink_v = nullptr;     ///< [n_sink][d]
  KvqOutlierMode outliers = KvqOutlierMode::kMask;
  KvqRope rope;
};

namespace detail {

inline float kvq_f16(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return f16_bits_to_f32(h);
}
inline std::uint16_t kvq_u16(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return h;
}

}  // namespace detail

/// Code c of an LSB-first bitstream of b-bit codes.
inline std::uint8_t kvq_code(const std::uint8_t* codes, std::size_t c, int bits) {
  const std::size_t bit = c * static_cast<std::size_t>(bits);
  unsigned v = codes[bit / 8] >> (bit % 8);
  if (bit % 8 + static_cast<std::size_t>(bits) > 8) v |= static_cast<unsigned>(codes[bit / 8 + 1]) << (8 - bit % 8);
  return static_cast<std::uint8_t>(v & ((1u << bits) - 1u));
}

/// Sets code c of an LSB-first bitstream to q (other codes unchanged).
inline void kvq_set_code(std::uint8_t* codes, std::size_t c, int bits, std::uint8_t q) {
  const std::size_t bit = c * static_cast<std::size_t>(bits);
  const unsigned mask = (1u << bits) - 1u;
  const unsigned sh = static_cast<unsigned>(bit % 8);
  codes[bit / 8] = static_cast<std::uint8_t>((codes[bit / 8] & ~(mask << sh)) | (static_cast<unsigned>(q) << sh));
  if (sh + static_cast<unsigned>(bits) > 8) {
    const unsigned hs = 8 - sh;
    codes[bit / 8 + 1] = static_cast<std::uint8_t>((codes[bit / 8 + 1] & ~(mask >> hs)) | (static_cast<unsigned>(q) >> hs));
  }
}

/// Position stored in a key row.
inline std::int32_t kvq_row_pos(const std::uint8_t* key_row) {
  std::int32_t p;
  std::memcpy(&p, key_row, sizeof p);
  return p;
}

/// Rotates x[0..d) by RoPE at `pos` (see KvqRope for the two paths; st may be null: exact).
inline void kvq_rope(float* x, std::size_t d, std::int32_t pos, const KvqRope& r, KvqRopeState* st = nullptr) {
  const std::size_t half = d / 2;
  const bool table = st != nullptr && r.lo_cos != nullptr && pos >= 0;
  const std::int64_t hi = pos / kKvqRopeLo, lo = pos % kKvqRopeLo;
  if (table && st->hi != hi) {
    const double ph = static_cast<double>(hi * kKvqRopeLo) / r.pos_div;
    for (std::size_t i = 0; i < half; ++i) {
      st->hc[i] = static_cast<float>(std::cos(ph * r.theta[i]));
      st->hs[i] = static_cast<float>(std::sin(ph * r.theta[i]));
    }
    st->hi = hi;
  }
  if (table) {
    // Straight-line loops per layout so the compiler vectorizes them.
    const float* lc = r.lo_cos + static_cast<std::size_t>(lo) * half;
    const float* ls = r.lo_sin + static_cast<std::size_t>(lo) * half;
    const float* hc = st->hc;
    const float* hs = st->hs;
    if (!r.interleaved) {
      float* xa = x;
      float* xb = x + half;
      for (std::size_t i = 0; i < half; ++i) {
        const float c = hc[i] * lc[i] - hs[i] * ls[i];
        const float s = hs[i] * lc[i] + hc[i] * ls[i];
        const float a = xa[i], b = xb[i];
        xa[i] = a * c - b * s;
        xb[i] = a * s + b * c;
      }
    } else {
      for (std::size_t i = 0; i < half; ++i) {
        const float c = hc[i] * lc[i] - hs[i] * ls[i];
        const float s = hs[i] * lc[i] + hc[i] * ls[i];
        const float a = x[2 * i], b = x[2 * i + 1];
        x[2 * i] = a * c - b * s;
        x[2 * i + 1] = a * s + b * c;
      }
    }
    return;
  }
  const double p = static_cast<double>(pos) / r.pos_div;
  for (std::size_t i = 0; i < half; ++i) {
    const float c = static_cast<float>(std::cos(p * r.theta[i]));
    const float s = static_cast<float>(std::sin(p * r.theta[i]));
    const std::size_t a = r.interleaved ? 2 * i : i;
    const std::size_t b = r.interleaved ? 2 * i + 1 : i + half;
    const float xa = x[a], xb = x[b];
    x[a] = xa * c - xb * s;
    x[b] = xa * s + xb * c;
  }
}

namespace detail {

inline void kvq_apply_outliers(const std::uint8_t* ent, std::size_t count, KvqOutlierMode mode, float* x) {
  for (std::size_t k = 0; k < count; ++k) {
    const std::uint16_t c = kvq_u16(ent + 4 * k);
    const float v = kvq_f16(ent + 4 * k + 2);
    x[c] = mode == KvqOutlierMode::kMask ? v : x[c] + v;
  }
}

inline void kvq_sink(const half* rows, std::int32_t pos, std::size_t d, float* x) {
  const half* s = rows + static_cast<std::size_t>(pos) * d;
  for (std::size_t c = 0; c < d; ++c) x[c] = to_float(s[c]);
}

}  // namespace detail

namespace detail {

// x[c] = table[c·stride + code_c] (stride 0: a shared LUT, then y = x·hr + off), with the bit
// width a compile-time constant so code extraction is shifts and masks.
template <int B>
inline void kvq_lut_decode(const std::uint8_t* codes, std::size_t d, const float* table, std::size_t stride,
                           float hr, float off, bool affine, float* x) {
  for (std::size_t c = 0; c < d; ++c) {
    const float y = table[c * stride + kvq_code(codes, c, B)];
    x[c] = affine ? y * hr + off : y;
  }
}

inline void kvq_lut_decode_any(int bits, const std::uint8_t* codes, std::size_t d, const float* table,
                               std::size_t stride, float hr, float off, bool affine, float* x) {
  switch (bits) {
    case 2: kvq_lut_decode<2>(codes, d, table, stride, hr, off, affine, x); break;
    case 3: kvq_lut_decode<3>(codes, d, table, stride, hr, off, affine, x); break;
    case 4: kvq_lut_decode<4>(codes, d, table, stride, hr, off, affine, x); break;
    default:
      for (std::size_t c = 0; c < d; ++c) {
        const float y = table[c * stride + kvq_code(codes, c, bits)];
        x[c] = affine ? y * hr + off : y;
      }
  }
}

}  // namespace detail

/// LUT decoder of the scalar path: x[c] = table[c·stride + code_c] (·hr + off if affine).
/// The SIMD headers provide functors with the same call signature.
struct KvqScalarLut {
  void operator()(int bits, const std::uint8_t* codes, std::size_t d, const float* table, std::size_t stride,
                  float hr, float off, bool affine, float* x) const {
    detail::kvq_lut_decode_any(bits, codes, d, table, stride, hr, off, affine, x);
  }
};

/// Decodes one key row to x[0..d): pre-RoPE reconstruction, then RoPE at the row's position if
/// `rotate` (the post-RoPE key attention uses). st: hi-part cache of the table path (or null).
template <class Lut = KvqScalarLut>
inline void kvq_decode_key(const std::uint8_t* row, const KvqRowFormat& f, const KvqTables& t, bool rotate,
                           float* x, KvqRopeState* st = nullptr, const Lut& lut = Lut{}) {
  const std::int32_t pos = kvq_row_pos(row);
  const std::size_t d = f.d;
  const std::size_t L = std::size_t{1} << f.bits;
  if (row[5]) {
    detail::kvq_sink(t.sink_k, pos, d, x);
  } else {
    const std::uint8_t* codes = row + f.key_codes();
    if (f.key_dynamic)
      lut(f.bits, codes, d, t.lut_k, 0, detail::kvq_f16(row + 8), detail::kvq_f16(row + 6), true, x);
    else
      lut(f.bits, codes, d, t.lut_k_c, L, 0.0f, 0.0f, false, x);
    detail::kvq_apply_outliers(row + f.key_outliers(), row[4], t.outliers, x);
  }
  if (rotate) kvq_rope(x, d, pos, t.rope, st);
}

/// Decodes one value row to x[0..d). `pos` is the slot's position (for sinks).
template <class Lut = KvqScalarLut>
inline void kvq_decode_value(const std::uint8_t* row, std::int32_t pos, bool sink, const KvqRowFormat& f,
                             const KvqTables& t, float* x, const Lut& lut = Lut{}) {
  const std::size_t d = f.d;
  if (sink) {
    detail::kvq_sink(t.sink_v, pos, d, x);
    return;
  }
  const std::uint8_t* codes = row + f.value_codes();
  lut(f.bits, codes, d, t.lut_v, 0, detail::kvq_f16(row + 4), detail::kvq_f16(row + 2), true, x);
  detail::kvq_apply_outliers(row + f.value_outliers(), row[0], t.outliers, x);
}

/// out[r·ldl] = Σ_c q[r·d + c]·x[c] for r < rows (one slot's logits). fp32, channel order.
inline void kvq_dot_rows(const float* x, std::size_t d, const float* q, int rows, float* out, std::size_t ldl,
                         isa::scalar) {
  for (int r = 0; r < rows; ++r) {
    const float* qr = q + static_cast<std::size_t>(r) * d;
    float acc = 0.0f;
    for (std::size_t c = 0; c < d; ++c) acc += qr[c] * x[c];
    out[static_cast<std::size_t>(r) * ldl] = acc;
  }
}

/// out[r·d + c] += p[r·ldp]·x[c] for r < rows (one slot's value contribution).
inline void kvq_axpy_rows(const float* x, std::size_t d, const float* p, std::size_t ldp, int rows, float* out,
                          isa::scalar) {
  for (int r = 0; r < rows; ++r) {
    const float w = p[static_cast<std::size_t>(r) * ldp];
    if (w == 0.0f) continue;
    float* o = out + static_cast<std::size_t>(r) * d;
    for (std::size_t c = 0; c < d; ++c) o[c] += w * x[c];
  }
}

namespace detail {

template <class Dot, class Lut>
inline void kvq_logits_impl(const std::uint8_t* key_rows, std::size_t stride, std::size_t n, const KvqRowFormat& f,
                            const KvqTables& t, const float* q, int rows, float* logits, std::size_t ldl, float* buf,
                            Dot&& dot, const Lut& lut) {
  assert(rows >= 1 && rows <= kKvqMaxRows);
  KvqRopeState st;
  st.hc = buf + f.d;
  st.hs = st.hc + f.d / 2;
  for (std::size_t j = 0; j < n; ++j) {
    kvq_decode_key(key_rows + j * stride, f, t, true, buf, &st, lut);
    dot(buf, f.d, q, rows, logits + j, ldl);
  }
}

template <class Axpy, class Lut>
inline void kvq_accumulate_impl(const std::uint8_t* key_rows, std::size_t kstride, const std::uint8_t* value_rows,
                                std::size_t vstride, std::size_t n, const KvqRowFormat& f, const KvqTables& t,
                                const float* p, std::size_t ldp, int rows, float* out, float* buf, Axpy&& axpy,
                                const Lut& lut) {
  assert(rows >= 1 && rows <= kKvqMaxRows);
  for (std::size_t j = 0; j < n; ++j) {
    bool any = false;
    for (int r = 0; r < rows; ++r) any |= p[static_cast<std::size_t>(r) * ldp + j] != 0.0f;
    if (!any) continue;
    const std::uint8_t* kr = key_rows + j * kstride;
    kvq_decode_value(value_rows + j * vstride, kvq_row_pos(kr), kr[5] != 0, f, t, buf, lut);
    axpy(buf, f.d, p + j, ldp, rows, out);
  }
}

}  // namespace detail

/// logits[r·ldl + t] = q_r · RoPE(pos_t)·k̂_t for the n key rows at key_rows + t·stride.
/// q is [rows][d] (pre-scaled), rows in 1..16; buf holds 2·d floats.
inline void kvq_logits(const std::uint8_t* key_rows, std::size_t stride, std::size_t n, const KvqRowFormat& f,
                       const KvqTables& t, const float* q, int rows, float* logits, std::size_t ldl, float* buf,
                       isa::scalar) {
  detail::kvq_logits_impl(key_rows, stride, n, f, t, q, rows, logits, ldl, buf,
                          [](const float* x, std::size_t d, const float* qq, int r, float* o, std::size_t l) {
                            kvq_dot_rows(x, d, qq, r, o, l, isa::scalar{});
                          },
                          KvqScalarLut{});
}

/// out[r][c] += Σ_t p[r·ldp + t]·v̂_t[c] over n slots (value rows at value_rows + t·vstride; the
/// slot's key row, for its position and sink flag, at key_rows + t·kstride). buf holds d floats.
/// Slots whose probability is 0 in every row are skipped (masked slots).
inline void kvq_accumulate(const std::uint8_t* key_rows, std::size_t kstride, const std::uint8_t* value_rows,
                           std::size_t vstride, std::size_t n, const KvqRowFormat& f, const KvqTables& t,
                           const float* p, std::size_t ldp, int rows, float* out, float* buf, isa::scalar) {
  detail::kvq_accumulate_impl(key_rows, kstride, value_rows, vstride, n, f, t, p, ldp, rows, out, buf,
                              [](const float* x, std::size_t d, const float* pp, std::size_t l, int r, float* o) {
                                kvq_axpy_rows(x, d, pp, l, r, o, isa::scalar{});
                              },
                              KvqScalarLut{});
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
