// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Scalar reference kernels of GEAR's error-correction terms (arXiv 2403.05527; methods/
/// quantization.md §7, BB-10, BB-11, BB-15). The quantized backbone uses the KIVI blobs and
/// kernels unchanged (kernels/kivi.hpp); these kernels add, per compressed block of n tokens:
///   - the low-rank part L = Q·Pᵀ without materializing it: logits += (q·P)·Q[t]ᵀ and
///     out += (Σ_t p_t Q[t])·Pᵀ;
///   - the sparse outliers exactly: at an outlier position the dense value (backbone, plus L
///     unless the reference flag keeps L there) is replaced by the stored fp16 value, i.e. the
///     kernels add q_c·(val − dense) to the token's logit and p_t·(val − dense) to the output.
///
/// ## Low-rank factor layout (factor-major, so every kernel loop is contiguous)
///   Qᵀ: [rank][n] fp16 (row i = column i of Q), Pᵀ: [rank][d] fp16 (row i = column i of P).
/// ## Outlier entry layout (one entry = 4 bytes)
///   uint16 index (token within the block for key channels, channel for value tokens), then the
///   fp16 value bits. Keys: d channels × `per` entries, channel-major. Values: n tokens × `per`
///   entries, token-major. Indices ascend within a vector.
/// All fields little-endian, read with memcpy (no alignment needed).

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kvcompress/config.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/kernels/cpu/scalar/kivi.hpp"
#include "kvcompress/kernels/isa.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

/// Largest low-rank rank the GEAR kernels handle (stack arrays of kKiviMaxRows × this).
inline constexpr int kGearMaxRank = 128;
/// Bytes of one sparse outlier entry (uint16 index + fp16 value).
inline constexpr std::size_t kGearOutlierEntryBytes = 4;

namespace detail {
inline float gear_f16(const std::uint8_t* base, std::size_t i) {
  std::uint16_t b;
  std::memcpy(&b, base + 2 * i, 2);
  return f16_bits_to_f32(b);
}
/// L[t][c] = Σ_i Q[t][i]·P[c][i] (block of n tokens, d channels).
inline float gear_lowrank_at(const std::uint8_t* qf, const std::uint8_t* pf, int rank, std::size_t n, std::size_t d,
                             std::size_t t, std::size_t c) {
  float acc = 0.0f;
  for (int i = 0; i < rank; ++i) acc += gear_f16(qf, i * n + t) * gear_f16(pf, i * d + c);
  return acc;
}
inline void gear_entry(const std::uint8_t* e, std::uint16_t* idx, float* val) {
  std::uint16_t b;
  std::memcpy(idx, e, 2);
  std::memcpy(&b, e + 2, 2);
  *val = f16_bits_to_f32(b);
}
}  // namespace detail

/// logits[r·ldl + t] += Σ_i (q_r·P[:, i])·Q[t][i] for t < n. q: [rows][d], rows ≤ 16.
inline void gear_lowrank_logits(const std::uint8_t* qf, const std::uint8_t* pf, std::size_t n, int d, int rank,
                                const float* q, int rows, float* logits, std::size_t ldl, isa::scalar) {
  assert(rows >= 1 && rows <= kKiviMaxRows && rank <= kGearMaxRank);
  if (rank <= 0) return;
  const std::size_t ud = static_cast<std::size_t>(d);
  float a[kKiviMaxRows][kGearMaxRank];
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < rank; ++i) {
      float acc = 0.0f;
      for (int c = 0; c < d; ++c) acc += q[r * d + c] * detail::gear_f16(pf, i * ud + c);
      a[r][i] = acc;
    }
  for (std::size_t t = 0; t < n; ++t)
    for (int r = 0; r < rows; ++r) {
      float acc = 0.0f;
      for (int i = 0; i < rank; ++i) acc += a[r][i] * detail::gear_f16(qf, i * n + t);
      logits[static_cast<std::size_t>(r) * ldl + t] += acc;
    }
}

/// out[r][c] += Σ_i (Σ_t p[r·ldp + t]·Q[t][i])·P[c][i]. out: [rows][d], rows ≤ 16.
inline void gear_lowrank_accumulate(const std::uint8_t* qf, const std::uint8_t* pf, std::size_t n, int d, int rank,
                                    const float* p, std::size_t ldp, int rows, float* out, isa::scalar) {
  assert(rows >= 1 && rows <= kKiviMaxRows && rank <= kGearMaxRank);
  if (rank <= 0) return;
  const std::size_t ud = static_cast<std::size_t>(d);
  float b[kKiviMaxRows][kGearMaxRank];
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < rank; ++i) {
      float acc = 0.0f;
      for (std::size_t t = 0; t < n; ++t) acc += p[static_cast<std::size_t>(r) * ldp + t] * detail::gear_f16(qf, i * n + t);
      b[r][i] = acc;
    }
  for (int c = 0; c < d; ++c)
    for (int r = 0; r < rows; ++r) {
      float acc = 0.0f;
      for (int i = 0; i < rank; ++i) acc += b[r][i] * detail::gear_f16(pf, i * ud + c);
      out[r * d + c] += acc;
    }
}

namespace detail {

/// Software fp16 load (the scalar path); the AVX2 header passes an F16C one.
struct GearF16Soft {
  static float load(const std::uint8_t* base, std::size_t i) { return gear_f16(base, i); }
};

/// Body of gear_key_outlier_logits, shared by every ISA (F16 = how fp16 is widened). Entries are
/// channel-major, so a channel's scale, minimum and P row are loaded once.
template <class F16>
inline void gear_key_outlier_logits_impl(const std::uint8_t* groups, int G, int d, int bits,
                                         const std::uint8_t* entries, int per, std::size_t n, const std::uint8_t* qf,
                                         const std::uint8_t* pf, int rank, bool lowrank_at_outliers, const float* q,
                                         int rows, float* logits, std::size_t ldl) {
  const std::size_t gbytes = kivi_key_group_bytes(G, d, bits), code_bytes = static_cast<std::size_t>(G) * d * bits / 8;
  const std::size_t ud = static_cast<std::size_t>(d);
  const int lr = lowrank_at_outliers ? 0 : rank;
  float pc[kGearMaxRank];
  for (int c = 0; c < d; ++c) {
    for (int i = 0; i < lr; ++i) pc[i] = F16::load(pf, static_cast<std::size_t>(i) * ud + c);
    for (int e = 0; e < per; ++e) {
      std::uint16_t t;
      float x;
      gear_entry(entries + (static_cast<std::size_t>(c) * per + e) * kGearOutlierEntryBytes, &t, &x);
      const std::uint8_t* blob = groups + (t / static_cast<std::size_t>(G)) * gbytes;
      const float sc = F16::load(blob + code_bytes, static_cast<std::size_t>(c));
      const float zc = F16::load(blob + code_bytes + 2 * ud, static_cast<std::size_t>(c));
      float dense = static_cast<float>(kivi_key_code(blob, d, bits, static_cast<int>(t % static_cast<std::size_t>(G)), c)) * sc + zc;
      for (int i = 0; i < lr; ++i) dense += F16::load(qf, static_cast<std::size_t>(i) * n + t) * pc[i];
      const float delta = x - dense;
      for (int r = 0; r < rows; ++r) logits[static_cast<std::size_t>(r) * ldl + t] += q[r * d + c] * delta;
    }
  }
}

/// Body of gear_value_outlier_accumulate (entries token-major: a token's Q row loaded once).
template <class F16>
inline void gear_value_outlier_accumulate_impl(const std::uint8_t* rows_data, std::size_t n, int d, int Gv, int bits,
                                               const std::uint8_t* entries, int per, const std::uint8_t* qf,
                                               const std::uint8_t* pf, int rank, bool lowrank_at_outliers,
                                               const float* p, std::size_t ldp, int rows, float* out) {
  const std::size_t row_bytes = kivi_value_row_bytes(d, Gv, bits), code_bytes = static_cast<std::size_t>(d) * bits / 8;
  const std::size_t ud = static_cast<std::size_t>(d);
  const int lr = lowrank_at_outliers ? 0 : rank, vpw = 32 / bits;
  float qt[kGearMaxRank];
  for (std::size_t t = 0; t < n; ++t) {
    for (int i = 0; i < lr; ++i) qt[i] = F16::load(qf, static_cast<std::size_t>(i) * n + t);
    const std::uint8_t* row = rows_data + t * row_bytes;
    for (int e = 0; e < per; ++e) {
      std::uint16_t c;
      float x;
      gear_entry(entries + (t * per + e) * kGearOutlierEntryBytes, &c, &x);
      const std::uint32_t word = kivi_load_u32(row + 4 * static_cast<std::size_t>(c / vpw));
      const float code = static_cast<float>((word >> (bits * (c % vpw))) & ((1u << bits) - 1u));
      float dense = code * F16::load(row + code_bytes, static_cast<std::size_t>(c / Gv)) +
                    F16::load(row + code_bytes + 2 * static_cast<std::size_t>(d / Gv), static_cast<std::size_t>(c / Gv));
      for (int i = 0; i < lr; ++i) dense += qt[i] * F16::load(pf, static_cast<std::size_t>(i) * ud + c);
      const float delta = x - dense;
      for (int r = 0; r < rows; ++r) out[static_cast<std::size_t>(r) * ud + c] += p[static_cast<std::size_t>(r) * ldp + t] * delta;
    }
  }
}

}  // namespace detail

/// Exact key outliers of one block: for each of the d·per entries (channel c, token t, value x),
/// logits[r·ldl + t] += q_r[c]·(x − dense(t, c)), dense = backbone + (lowrank_at_outliers ? 0 : L).
/// \param groups the block's n/G key group blobs (contiguous); \param entries d·per entries.
inline void gear_key_outlier_logits(const std::uint8_t* groups, int G, int d, int bits, const std::uint8_t* entries,
                                    int per, std::size_t n, const std::uint8_t* qf, const std::uint8_t* pf, int rank,
                                    bool lowrank_at_outliers, const float* q, int rows, float* logits,
                                    std::size_t ldl, isa::scalar) {
  detail::gear_key_outlier_logits_impl<detail::GearF16Soft>(groups, G, d, bits, entries, per, n, qf, pf, rank,
                                                            lowrank_at_outliers, q, rows, logits, ldl);
}

/// Exact value outliers of one block of n tokens: out[r][c] += p_r[t]·(x − dense(t, c)).
/// \param rows_data the block's n value row blobs; \param entries n·per entries.
inline void gear_value_outlier_accumulate(const std::uint8_t* rows_data, std::size_t n, int d, int Gv, int bits,
                                          const std::uint8_t* entries, int per, const std::uint8_t* qf,
                                          const std::uint8_t* pf, int rank, bool lowrank_at_outliers,
                                          const float* p, std::size_t ldp, int rows, float* out, isa::scalar) {
  detail::gear_value_outlier_accumulate_impl<detail::GearF16Soft>(rows_data, n, d, Gv, bits, entries, per, qf, pf, rank,
                                                                  lowrank_at_outliers, p, ldp, rows, out);
}

/// dst[t][c] += L[t][c] for t < n (decoding a block).
inline void gear_add_lowrank(const std::uint8_t* qf, const std::uint8_t* pf, std::size_t n, int d, int rank,
                             float* dst, std::size_t ld, isa::scalar) {
  for (std::size_t t = 0; t < n; ++t)
    for (int c = 0; c < d; ++c)
      dst[t * ld + c] += detail::gear_lowrank_at(qf, pf, rank, n, static_cast<std::size_t>(d), t, static_cast<std::size_t>(c));
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
