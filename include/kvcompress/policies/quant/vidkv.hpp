// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// VidKV — "Plug-and-Play 1.x-Bit KV Cache Quantization for Video Large Language Models", Keda
/// Tao, Haoxuan You, Yang Sui, Can Qin, Huan Wang; arXiv 2503.16257 (2025).
/// methods/quantization.md §6 (reference code KD-TAO/VidKV at 0e55c39).
///
/// Keys and values are quantized per channel in groups of G = 32 tokens.
/// * Keys, B_K = 1 + k bits: the ⌊k·d⌋ channels with the largest range max_t − min_t over the flush
///   block get 2-bit min–max codes (BB-1); the other m = d − ⌊k·d⌋ ("normal") channels get 1 bit.
///   With B_K ∈ {1.5, 1.75} (paper) or `fft_for_all_1bit` (reference) the normal channels of each
///   token are DFT'd (BB-9, common/channel_dft.hpp) and every real frequency channel is quantized
///   by sign with s = mean|y| over the group, ŷ ∈ {0, s} (paper eq. 5; `one_bit_levels =
///   kPlusMinusScale` for ±s), x̂ = inverse DFT of ŷ. Otherwise (plain 1-bit) the normal channels
///   use 1-bit min–max codes (BB-1 with b = 1) — our reading of the paper's "plain 1-bit".
/// * Values, 1.58 bits: ternary per channel (BB-3): α = mean|v| over the group, τ = γ·α (γ = 0.7,
///   paper), t = sign(v)·[|v| > τ], v̂ = α·t (`ternary_scale = kNone` reproduces the reference
///   dequantizer, v̂ = t). Codes t + 1 in 2 bits.
/// * STP (Stp = true, "V 1.66"): the top round(p·N_vis) visual tokens (p = 0.2) of a flush block get
///   2-bit min–max value codes instead (per channel over the group's protected tokens; the
///   ternary α is then over the unprotected ones). **Fallback (our interpretation)**: the paper
///   ranks visual tokens by I_i = mean_j x_v,i·x_t,jᵀ over *input embeddings*, which the cache
///   never sees; we use the same formula on this (layer, KV head)'s cached keys: I_i = k_i ·
///   mean_j k_t,j over the tokens labelled kText in the append call (and the fp window). Without
///   text tokens nothing is protected. Visual = kImage or kVideo (labels from TokenInfo).
///
/// Streaming ([rec] of §6, BB-13 K-block flush instead of requantize-all): a multi-token append
/// (prefill chunk) quantizes the largest multiple of 32 of (window + new tokens) at once — one
/// channel selection and one STP ranking over all of them — and keeps the rest (< 32) in an fp16
/// window; single-token appends grow the window to R = 128 and then flush those R tokens as R/32
/// new groups with their own channel selection. Nothing already quantized is touched again.
/// `Config::flush = kRequantizeAll` reproduces the reference (error compounds; O(T) per flush);
/// `freeze_channels` reuses the prompt's channel selection for later blocks (faster decode).
/// The reference's layer-wide channel selection is not offered: a per-(layer, KV head) store
/// cannot see the other heads.
///
/// Reference-compatibility flags (§12): gamma (0.5), fft_for_all_1bit, fft_layout = kComplexFull
/// (2 reals per frequency, the reference's storage), one_bit_levels, ternary_scale.
///
/// Attention runs on the codes (kernels/vidkv.hpp): each group's metadata is folded into per-plane
/// weights, and the DFT is applied to the query (adjoint of the inverse, once per flush block and
/// row), never to the cache. Storage per (layer, KV head): blocks of R slots holding R/32 key
/// group blobs then R/32 value group blobs (layout: Geometry below), plus an fp16 window of R rows.
/// Eviction (BB-16): window slots are removed physically; slots inside a quantized group stay
/// masked until the whole group is dead. truncate() into a group dequantizes its survivors back
/// into the window.
///
/// FFT-channel scales are computed in double and saturate at the fp16 maximum (an FFT sum can
/// exceed the fp16 range even when every input is representable).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kvcompress/core/block_pool.hpp"
#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/core/modality.hpp"
#include "kvcompress/core/token_info.hpp"
#include "kvcompress/kernels/convert.hpp"
#include "kvcompress/kernels/dense_attention.hpp"
#include "kvcompress/kernels/vidkv.hpp"
#include "kvcompress/policies/quant/common/affine_quant.hpp"
#include "kvcompress/policies/quant/common/channel_dft.hpp"
#include "kvcompress/policies/quant/common/sign_ternary_quant.hpp"
#include "kvcompress/policies/quant/common/top_k_mask.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {

/// VidKV with key bits B_K = KeyBitsX4/4 ∈ {1, 1.25, 1.5, 1.75, 2}, ternary values, optional STP,
/// residual window Residual tokens (multiple of 32).
template <int KeyBitsX4 = 6, bool Stp = false, int Residual = 128>
struct VidKV {
  static_assert(KeyBitsX4 >= 4 && KeyBitsX4 <= 8, "quant::VidKV: KeyBitsX4 must be in [4, 8] (B_K = 1 … 2)");
  static_assert(Residual >= 32 && Residual % 32 == 0, "quant::VidKV: Residual must be a positive multiple of 32");

  static constexpr const char* kName = Stp ? "vidkv_stp" : "vidkv";
  static constexpr float kMaxAbsInput = kHalfMax;
  static constexpr int kGroup = kernels::kVidKVGroup;
  static constexpr int kResidual = Residual;
  static constexpr bool kStp = Stp;
  /// Nominal key bits (paper naming, metadata excluded).
  static constexpr double kNominalKeyBits = KeyBitsX4 / 4.0;
  /// 2-bit key channels ⌊k·d⌋, k = B_K − 1.
  static constexpr int two_bit_channels(int d) { return (KeyBitsX4 - 4) * d / 4; }

  /// Streaming rule (BB-13): K-block flush ([rec], default) or the reference's requantize-all.
  enum class Flush { kBlock, kRequantizeAll };

  struct Config {
    float gamma = 0.7f;        ///< ternary threshold factor (paper 0.7; reference code 0.5)
    float stp_ratio = 0.2f;    ///< p: protected fraction of the visual tokens (Stp only)
    common::DftLayout fft_layout = common::DftLayout::kCompact;  ///< kComplexFull: reference storage
    bool fft_for_all_1bit = false;  ///< reference: FFT also when B_K ∉ {1.5, 1.75}
    common::SignLevels one_bit_levels = common::SignLevels::kZeroOrScale;  ///< FFT 1-bit levels
    common::TernaryScale ternary_scale = common::TernaryScale::kAlpha;     ///< kNone: reference dequant
    /// kRequantizeAll (reference): every flush dequantizes all groups (rounded to fp16 as the
    /// reference's fp16 tensors), recomputes the channel selection over them and the new tokens,
    /// and re-encodes every group; STP masks of earlier groups are kept. O(T) per flush.
    Flush flush = Flush::kBlock;
    /// Block flush only: reuse the first flush block's (the prompt's) channel selection for every
    /// later block (the spec's "frozen from prefill" alternative). All groups then share one map,
    /// so attention transforms each query once per step instead of once per flush block.
    bool freeze_channels = false;

    /// True if the normal key channels go through the DFT.
    bool use_fft(int d) const {
      return d - two_bit_channels(d) > 0 && (KeyBitsX4 == 6 || KeyBitsX4 == 7 || fft_for_all_1bit);
    }
    void validate(const CacheShape& shape) const {
      const char* where = "quant::VidKV";
      kvcompress::detail::require(std::isfinite(gamma) && gamma >= 0.0f, where, "gamma", gamma,
                                  "a finite value >= 0 (paper 0.7)");
      kvcompress::detail::require(stp_ratio >= 0.0f && stp_ratio <= 1.0f, where, "stp_ratio", stp_ratio,
                                  "in [0, 1] (paper 0.2)");
      kvcompress::detail::require(shape.head_dim % 32 == 0 || shape.head_dim == 80 || shape.head_dim == 96, where,
                                  "head_dim", shape.head_dim, "one of {64, 80, 96, 128, 256}");
    }
  };

  /// Byte layout of one 32-token group (all offsets 4-byte aligned, fields little-endian).
  /// Key blob: [channel map: ⌈d/32⌉ uint32, bit c = 2-bit channel][2-bit planes: n2 × 2 uint32]
  /// [1-bit planes: F1 × uint32][s2: n2 fp16][min2: n2 fp16][s1: F1 fp16][z1: F1 fp16, plain only]
  /// Value blob: [planes: d × 2 uint32][α: d fp16] + (Stp) [protected mask uint32][s2: d fp16]
  /// [min2: d fp16]. F1 = m (compact DFT or plain) or 2m (complex_full DFT).
  struct Geometry {
    int n2 = 0, m = 0, f1 = 0;
    bool fft = false, plain_z = false;
    std::size_t map = 0, w2 = 0, w1 = 0, s2 = 0, min2 = 0, s1 = 0, z1 = 0, key = 0;
    std::size_t v_words = 0, v_alpha = 0, v_mask = 0, v_s2 = 0, v_min2 = 0, value = 0, block = 0;
  };
  static Geometry geometry(int d, const Config& cfg) {
    Geometry g;
    const std::size_t ud = static_cast<std::size_t>(d);
    g.n2 = two_bit_channels(d);
    g.m = d - g.n2;
    g.fft = cfg.use_fft(d);
    g.f1 = g.fft && cfg.fft_layout == common::DftLayout::kComplexFull ? 2 * g.m : g.m;
    g.plain_z = !g.fft;
    const std::size_t n2 = static_cast<std::size_t>(g.n2), f1 = static_cast<std::size_t>(g.f1);
    g.map = 0;
    g.w2 = g.map + (ud + 31) / 32 * 4;
    g.w1 = g.w2 + n2 * 8;
    g.s2 = g.w1 + f1 * 4;
    g.min2 = g.s2 + n2 * 2;
    g.s1 = g.min2 + n2 * 2;
    g.z1 = g.s1 + f1 * 2;
    g.key = (g.z1 + (g.plain_z ? f1 * 2 : 0) + 3) / 4 * 4;
    g.v_words = 0;
    g.v_alpha = ud * 8;
    g.v_mask = g.v_alpha + ud * 2;
    g.v_s2 = g.v_mask + 4;
    g.v_min2 = g.v_s2 + ud * 2;
    g.value = Stp ? (g.v_min2 + ud * 2 + 3) / 4 * 4 : (g.v_mask + 3) / 4 * 4;
    g.block = align_up(static_cast<std::size_t>(Residual / kGroup) * (g.key + g.value));
    return g;
  }
  /// Stored key / value bits per element of a quantized group (codes + metadata + channel map).
  static double key_bits_per_element(int d, const Config& cfg) {
    return 8.0 * static_cast<double>(geometry(d, cfg).key) / (kGroup * static_cast<double>(d));
  }
  static double value_bits_per_element(int d, const Config& cfg) {
    return 8.0 * static_cast<double>(geometry(d, cfg).value) / (kGroup * static_cast<double>(d));
  }

  class Store {
   public:
    static std::size_t block_tokens(const Config&) { return Residual; }
    static std::size_t block_bytes(int d, const Config& cfg) { return geometry(d, cfg).block; }
    static std::size_t max_blocks(std::size_t capacity, const Config&) { return (capacity + Residual - 1) / Residual; }
    /// fp16 window (keys and values), its modality labels and the frozen channel map.
    static std::size_t fixed_bytes(int d, const Config&) {
      return static_cast<std::size_t>(Residual) * (4 * static_cast<std::size_t>(d) + 1) + 256;
    }
    /// Two 32-token groups of K and V rows, the DFT buffer (≤ 2d per token) and row statistics.
    static std::size_t scratch_floats(int d, const Config&) { return 140 * static_cast<std::size_t>(d); }

    Store(int d, const Config& cfg, BlockTable table)
        : d_(d), cfg_(cfg), geo_(geometry(d, cfg)), table_(std::move(table)),
          win_k_(static_cast<std::size_t>(Residual) * static_cast<std::size_t>(d)), win_v_(win_k_.size()),
          win_mod_(Residual) {
      if (geo_.fft) dft_ = common::ChannelDft(geo_.m, cfg.fft_layout);
      protect_.reserve(Residual);
    }

    std::size_t size() const { return n_; }
    /// Slots held as codes (a multiple of 32) / in the fp16 window.
    std::size_t quantized_slots() const { return nq_; }
    std::size_t window_slots() const { return n_ - nq_; }
    const Geometry& layout() const { return geo_; }
    /// Raw blobs of group g (for tests and tools).
    const std::uint8_t* key_blob(std::size_t g) const { return key_group(g * kGroup); }
    const std::uint8_t* value_blob(std::size_t g) const { return value_group(g * kGroup); }

    void append(const float* k, const float* v, std::size_t ld, std::size_t n, float* scratch) {
      append(k, v, ld, n, TokenInfo{}, scratch);
    }

    void append(const float* k, const float* v, std::size_t ld, std::size_t n, const TokenInfo& info,
                float* scratch) {
      const std::size_t w = n_ - nq_;
      if (n == 1) {
        kernels::convert(k, win_k_.data() + w * ud(), ud(), best_isa{});
        kernels::convert(v, win_v_.data() + w * ud(), ud(), best_isa{});
        win_mod_[w] = static_cast<std::uint8_t>(info.mod ? info.mod[0] : Modality::kText);
        ++n_;
        if (w + 1 >= static_cast<std::size_t>(Residual))
          flush(Source{this, w + 1, w + 1, nullptr, nullptr, 0, nullptr}, Residual, scratch);
        return;
      }
      const std::size_t total = w + n;
      const Source src{this, w, total, k, v, ld, info.mod};
      const std::size_t F = total / kGroup * kGroup;
      if (F > 0) flush(src, F, scratch);
      // The remaining total − F (< 32) virtual rows become the window.
      float* kr = scratch;
      float* vr = scratch + ud();
      for (std::size_t i = F; i < total; ++i) {
        const std::size_t o = i - F;
        if (i < w) {
          if (o != i) {
            std::memcpy(win_k_.data() + o * ud(), win_k_.data() + i * ud(), ud() * sizeof(half));
            std::memcpy(win_v_.data() + o * ud(), win_v_.data() + i * ud(), ud() * sizeof(half));
            win_mod_[o] = win_mod_[i];
          }
        } else {
          src.row(i, kr, vr);
          kernels::convert(kr, win_k_.data() + o * ud(), ud(), best_isa{});
          kernels::convert(vr, win_v_.data() + o * ud(), ud(), best_isa{});
          win_mod_[o] = src.mod(i);
        }
      }
      n_ += n;
    }

    /// Per 32-token group: metadata widened once, folded into plane weights for up to kChunk
    /// query rows at a time (each plane is decoded once per chunk by the kernels).
    void logits(const float* q, int rows, float* out, std::size_t ldl) const {
      constexpr int kChunk = 4;
      float wp[kChunk][512], w1[kChunk * 512], w2[kChunk * 256], qn[256];
      float s2f[256], m2f[256], s1f[512], z1f[256], bias[kChunk];
      int two_idx[256], norm_idx[256];
      const bool sym = cfg_.one_bit_levels == common::SignLevels::kPlusMinusScale;
      const std::size_t n2 = static_cast<std::size_t>(geo_.n2), f1 = static_cast<std::size_t>(geo_.f1);
      const std::size_t ng = nq_ / kGroup;
      for (std::size_t g0 = 0; g0 < ng;) {
        std::size_t g1 = g0 + 1;
        while (g1 < ng && same_map(g0, g1)) ++g1;
        const std::uint8_t* map = key_blob(g0) + geo_.map;
        int i2 = 0, im = 0;
        for (int c = 0; c < d_; ++c) (map_bit(map, c) ? two_idx[i2++] : norm_idx[im++]) = c;
        for (int r0 = 0; r0 < rows; r0 += kChunk) {
          const int nr = std::min(kChunk, rows - r0);
          if (geo_.fft)
            for (int a = 0; a < nr; ++a) {
              const float* qr = q + static_cast<std::size_t>(r0 + a) * ud();
              for (int i = 0; i < im; ++i) qn[i] = qr[norm_idx[i]];
              dft_.adjoint(qn, wp[a]);
            }
          for (std::size_t g = g0; g < g1; ++g) {
            const std::uint8_t* kb = key_blob(g);
            for (std::size_t i = 0; i < n2; ++i) {
              s2f[i] = f16_at(kb, geo_.s2, static_cast<int>(i));
              m2f[i] = f16_at(kb, geo_.min2, static_cast<int>(i));
            }
            for (std::size_t f = 0; f < f1; ++f) s1f[f] = f16_at(kb, geo_.s1, static_cast<int>(f));
            if (!geo_.fft)
              for (std::size_t f = 0; f < f1; ++f) z1f[f] = f16_at(kb, geo_.z1, static_cast<int>(f));
            for (int a = 0; a < nr; ++a) {
              const float* qr = q + static_cast<std::size_t>(r0 + a) * ud();
              float bsum = 0.0f;
              float* w2r = w2 + static_cast<std::size_t>(a) * n2;
              float* w1r = w1 + static_cast<std::size_t>(a) * f1;
              for (std::size_t i = 0; i < n2; ++i) {
                const float qc = qr[two_idx[i]];
                w2r[i] = qc * s2f[i];
                bsum += qc * m2f[i];
              }
              if (geo_.fft) {
                for (std::size_t f = 0; f < f1; ++f) {
                  const float ws = wp[a][f] * s1f[f];
                  w1r[f] = sym ? 2.0f * ws : ws;
                  if (sym) bsum -= ws;
                }
              } else {
                for (std::size_t f = 0; f < f1; ++f) {
                  const float qc = qr[norm_idx[f]];
                  w1r[f] = qc * s1f[f];
                  bsum += qc * z1f[f];
                }
              }
              bias[a] = bsum;
            }
            float* o = out + static_cast<std::size_t>(r0) * ldl + g * kGroup;
            for (int a = 0; a < nr; ++a)
              for (int t = 0; t < kGroup; ++t) o[static_cast<std::size_t>(a) * ldl + static_cast<std::size_t>(t)] = bias[a];
            const auto* words = reinterpret_cast<const std::uint32_t*>(kb);
            if (n2) kernels::vidkv_plane_logits(words + geo_.w2 / 4, 2, geo_.n2, w2, n2, nr, o, ldl, best_isa{});
            if (f1) kernels::vidkv_plane_logits(words + geo_.w1 / 4, 1, geo_.f1, w1, f1, nr, o, ldl, best_isa{});
          }
        }
        g0 = g1;
      }
      if (n_ > nq_)
        kernels::dense_logits(win_k_.data(), ud(), n_ - nq_, d_, q, rows, out + nq_, ldl, best_isa{});
    }

    void accumulate(const float* p, std::size_t ldp, int rows, float* out) const {
      constexpr int kChunk = 4;
      float D[kChunk * 256], Dp[kChunk * 256], pu[kChunk * kGroup], pp[kChunk * kGroup];
      float af[256], s2f[256], m2f[256], Pu[kChunk], Pp[kChunk];
      const bool alpha = cfg_.ternary_scale == common::TernaryScale::kAlpha;
      for (std::size_t g = 0; g < nq_ / kGroup; ++g) {
        const std::uint8_t* vb = value_blob(g);
        const auto* words = reinterpret_cast<const std::uint32_t*>(vb + geo_.v_words);
        const std::uint32_t mask = Stp ? u32_at(vb, geo_.v_mask) : 0u;
        for (int c = 0; c < d_; ++c) {
          af[c] = alpha ? f16_at(vb, geo_.v_alpha, c) : 1.0f;
          if (Stp && mask) {
            s2f[c] = f16_at(vb, geo_.v_s2, c);
            m2f[c] = f16_at(vb, geo_.v_min2, c);
          }
        }
        for (int r0 = 0; r0 < rows; r0 += kChunk) {
          const int nr = std::min(kChunk, rows - r0);
          for (int a = 0; a < nr; ++a) {
            const float* pr = p + static_cast<std::size_t>(r0 + a) * ldp + g * kGroup;
            Pu[a] = Pp[a] = 0.0f;
            for (int t = 0; t < kGroup; ++t) {
              const bool prot = (mask >> t) & 1u;
              pu[a * kGroup + t] = prot ? 0.0f : pr[t];
              pp[a * kGroup + t] = prot ? pr[t] : 0.0f;
              Pu[a] += pu[a * kGroup + t];
              Pp[a] += pp[a * kGroup + t];
            }
          }
          kernels::vidkv_plane_dot(words, 2, d_, pu, kGroup, nr, D, 256, best_isa{});
          if (Stp && mask) kernels::vidkv_plane_dot(words, 2, d_, pp, kGroup, nr, Dp, 256, best_isa{});
          for (int a = 0; a < nr; ++a) {
            float* o = out + static_cast<std::size_t>(r0 + a) * ud();
            const float* Da = D + a * 256;
            for (int c = 0; c < d_; ++c) o[c] += af[c] * (Da[c] - Pu[a]);
            if (Stp && mask) {
              const float* Dpa = Dp + a * 256;
              for (int c = 0; c < d_; ++c) o[c] += s2f[c] * Dpa[c] + m2f[c] * Pp[a];
            }
          }
        }
      }
      if (n_ > nq_)
        kernels::dense_accumulate(win_v_.data(), ud(), n_ - nq_, d_, p + nq_, ldp, rows, out, best_isa{});
    }

    void read(std::size_t j0, std::size_t j1, float* k, float* v, std::size_t ld, float* scratch) const {
      std::size_t decoded = SIZE_MAX;
      float* gk = scratch;
      float* gv = gk + kGroup * ud();
      float* tmp = gv + kGroup * ud();
      for (std::size_t j = j0; j < j1; ++j) {
        float* kd = k + (j - j0) * ld;
        float* vd = v + (j - j0) * ld;
        if (j < nq_) {
          const std::size_t g = j / kGroup;
          if (g != decoded) {
            decode_group(g, gk, gv, tmp);
            decoded = g;
          }
          std::copy(gk + (j % kGroup) * ud(), gk + (j % kGroup + 1) * ud(), kd);
          std::copy(gv + (j % kGroup) * ud(), gv + (j % kGroup + 1) * ud(), vd);
        } else {
          kernels::convert(win_k_.data() + (j - nq_) * ud(), kd, ud(), best_isa{});
          kernels::convert(win_v_.data() + (j - nq_) * ud(), vd, ud(), best_isa{});
        }
      }
    }

    std::size_t plan_compact(const std::uint8_t* keep, std::uint8_t* retained) const {
      std::size_t count = 0;
      for (std::size_t g0 = 0; g0 < nq_; g0 += kGroup) {
        const bool any = std::any_of(keep + g0, keep + g0 + kGroup, [](std::uint8_t x) { return x != 0; });
        std::fill(retained + g0, retained + g0 + kGroup, static_cast<std::uint8_t>(any));
        count += any ? kGroup : 0;
      }
      for (std::size_t j = nq_; j < n_; ++j) count += (retained[j] = keep[j] ? 1 : 0);
      return count;
    }

    void compact(const std::uint8_t* retained, float*) {
      std::size_t nq = 0;
      for (std::size_t g0 = 0; g0 < nq_; g0 += kGroup) {
        if (!retained[g0]) continue;
        if (nq != g0) {
          std::memcpy(key_group(nq), key_group(g0), geo_.key);
          std::memcpy(value_group(nq), value_group(g0), geo_.value);
        }
        nq += kGroup;
      }
      std::size_t o = 0;
      for (std::size_t j = nq_; j < n_; ++j) {
        if (!retained[j]) continue;
        const std::size_t i = j - nq_;
        if (o != i) {
          std::memcpy(win_k_.data() + o * ud(), win_k_.data() + i * ud(), ud() * sizeof(half));
          std::memcpy(win_v_.data() + o * ud(), win_v_.data() + i * ud(), ud() * sizeof(half));
          win_mod_[o] = win_mod_[i];
        }
        ++o;
      }
      nq_ = nq;
      n_ = nq + o;
      table_.shrink_to(blocks_for(nq_));
    }

    void truncate(std::size_t m, float* scratch) {
      if (m >= n_) return;
      if (m >= nq_) {
        n_ = m;
        return;
      }
      const std::size_t g0 = m / kGroup * kGroup;
      const std::size_t keep = m - g0;  // survivors of the cut group go back to the window
      if (keep > 0) {
        float* gk = scratch;
        float* gv = gk + kGroup * ud();
        decode_group(g0 / kGroup, gk, gv, gv + kGroup * ud());
        for (std::size_t t = 0; t < keep; ++t) {
          kernels::convert(gk + t * ud(), win_k_.data() + t * ud(), ud(), best_isa{});
          kernels::convert(gv + t * ud(), win_v_.data() + t * ud(), ud(), best_isa{});
          win_mod_[t] = static_cast<std::uint8_t>(Modality::kText);  // labels of quantized slots are not kept
        }
      }
      nq_ = g0;
      n_ = m;
      table_.shrink_to(blocks_for(nq_));
    }

    void clear() {
      n_ = nq_ = 0;
      have_frozen_ = false;
      table_.shrink_to(0);
    }

    std::size_t memory_bytes() const { return table_.size() * geo_.block + fixed_bytes(d_, cfg_); }

   private:
    /// The virtual sequence of one flush: `w` window rows, then the call's input rows.
    struct Source {
      const Store* s;
      std::size_t w;      ///< window rows first
      std::size_t total;  ///< window + input rows
      const float* k;
      const float* v;
      std::size_t ld;
      const Modality* mods;
      /// fp16-rounded K and V of virtual row i (what the window would have stored).
      void row(std::size_t i, float* kr, float* vr) const {
        const std::size_t d = s->ud();
        if (i < w) {
          kernels::convert(s->win_k_.data() + i * d, kr, d, best_isa{});
          kernels::convert(s->win_v_.data() + i * d, vr, d, best_isa{});
          return;
        }
        for (std::size_t c = 0; c < d; ++c) {
          kr[c] = to_float(half{f32_to_f16_bits(k[(i - w) * ld + c])});
          vr[c] = to_float(half{f32_to_f16_bits(v[(i - w) * ld + c])});
        }
      }
      std::uint8_t mod(std::size_t i) const {
        return i < w ? s->win_mod_[i] : static_cast<std::uint8_t>(mods ? mods[i - w] : Modality::kText);
      }
    };

    std::size_t ud() const { return static_cast<std::size_t>(d_); }
    static std::size_t blocks_for(std::size_t slots) { return (slots + Residual - 1) / Residual; }
    static bool map_bit(const std::uint8_t* map, int c) { return (map[c >> 3] >> (c & 7)) & 1u; }
    static float f16_at(const std::uint8_t* blob, std::size_t off, int i) {
      std::uint16_t h;
      std::memcpy(&h, blob + off + 2 * static_cast<std::size_t>(i), 2);
      return f16_bits_to_f32(h);
    }
    static void set_f16(std::uint8_t* blob, std::size_t off, int i, float x) {
      const std::uint16_t h = f32_to_f16_bits(x);
      std::memcpy(blob + off + 2 * static_cast<std::size_t>(i), &h, 2);
    }
    static std::uint32_t u32_at(const std::uint8_t* blob, std::size_t off) {
      std::uint32_t x;
      std::memcpy(&x, blob + off, 4);
      return x;
    }
    bool same_map(std::size_t a, std::size_t b) const {
      return std::memcmp(key_blob(a) + geo_.map, key_blob(b) + geo_.map, (ud() + 31) / 32 * 4) == 0;
    }

    std::uint8_t* key_group(std::size_t j) {
      return reinterpret_cast<std::uint8_t*>(table_.block(j / Residual)) + (j % Residual) / kGroup * geo_.key;
    }
    const std::uint8_t* key_group(std::size_t j) const {
      return reinterpret_cast<const std::uint8_t*>(table_.block(j / Residual)) + (j % Residual) / kGroup * geo_.key;
    }
    std::uint8_t* value_group(std::size_t j) {
      return reinterpret_cast<std::uint8_t*>(table_.block(j / Residual)) + (Residual / kGroup) * geo_.key +
             (j % Residual) / kGroup * geo_.value;
    }
    const std::uint8_t* value_group(std::size_t j) const {
      return reinterpret_cast<const std::uint8_t*>(table_.block(j / Residual)) + (Residual / kGroup) * geo_.key +
             (j % Residual) / kGroup * geo_.value;
    }

    /// Quantizes the first F (multiple of 32) virtual rows of src as one flush block.
    void flush(const Source& src, std::size_t F, float* scratch) {
      float* gk = scratch;                       // [32][d]
      float* gv = gk + kGroup * ud();            // [32][d]
      float* ybuf = gv + kGroup * ud();          // [32][2d]
      float* lo = ybuf + 2 * kGroup * ud();      // [d]
      float* hi = lo + ud();                     // [d]
      float* mean_text = hi + ud();              // [d]
      float* kr = mean_text + ud();              // [d]
      float* vr = kr + ud();                     // [d]
      // 1. Channel selection: the n2 largest key ranges over the block (ties → lower channel);
      //    requantize-all: over every dequantized group too.
      const bool all = cfg_.flush == Flush::kRequantizeAll && nq_ > 0;
      for (int c = 0; c < d_; ++c) {
        lo[c] = INFINITY;
        hi[c] = -INFINITY;
      }
      if (all)
        for (std::size_t g = 0; g < nq_ / kGroup; ++g) {
          decode_group(g, gk, gv, ybuf);
          for (std::size_t i = 0; i < kGroup * ud(); ++i) {
            const float x = to_float(half{f32_to_f16_bits(gk[i])});
            lo[i % ud()] = std::min(lo[i % ud()], x);
            hi[i % ud()] = std::max(hi[i % ud()], x);
          }
        }
      for (std::size_t i = 0; i < F; ++i) {
        src.row(i, kr, vr);
        for (int c = 0; c < d_; ++c) {
          lo[c] = std::min(lo[c], kr[c]);
          hi[c] = std::max(hi[c], kr[c]);
        }
      }
      std::uint8_t map[256];
      std::uint32_t idx[256];
      if (cfg_.freeze_channels && have_frozen_ && !all) {
        std::copy(frozen_, frozen_ + d_, map);
      } else {
        for (int c = 0; c < d_; ++c) lo[c] = hi[c] - lo[c];
        common::top_k_mask(lo, ud(), static_cast<std::size_t>(geo_.n2), map, idx);
        if (!have_frozen_) std::copy(map, map + d_, frozen_);
        have_frozen_ = true;
      }
      // 2. STP protected set over the block's visual tokens (file comment: key-based fallback).
      protect_.assign(F, 0);
      if constexpr (Stp) select_protected(src, F, mean_text, kr, vr);
      // 3. Encode the groups (requantize-all: the old ones first, from their fp16 dequantization).
      if (all)
        for (std::size_t g = 0; g < nq_ / kGroup; ++g) {
          decode_group(g, gk, gv, ybuf);
          for (std::size_t i = 0; i < kGroup * ud(); ++i) {
            gk[i] = to_float(half{f32_to_f16_bits(gk[i])});
            gv[i] = to_float(half{f32_to_f16_bits(gv[i])});
          }
          const std::uint32_t prot = Stp ? u32_at(value_blob(g), geo_.v_mask) : 0u;
          encode_group(gk, gv, map, prot, ybuf, lo, key_group(g * kGroup), value_group(g * kGroup));
        }
      table_.grow_to(blocks_for(nq_ + F));
      for (std::size_t g0 = 0; g0 < F; g0 += kGroup) {
        std::uint32_t prot = 0;
        for (int t = 0; t < kGroup; ++t) {
          src.row(g0 + static_cast<std::size_t>(t), gk + static_cast<std::size_t>(t) * ud(),
                  gv + static_cast<std::size_t>(t) * ud());
          prot |= static_cast<std::uint32_t>(protect_[g0 + static_cast<std::size_t>(t)]) << t;
        }
        encode_group(gk, gv, map, prot, ybuf, lo, key_group(nq_ + g0), value_group(nq_ + g0));
      }
      nq_ += F;
    }

    void select_protected(const Source& src, std::size_t F, float* mean_text, float* kr, float* vr) {
      // Mean text key over every row the flush can see (window + this call, the unflushed tail
      // included: the question usually ends the prompt).
      std::size_t n_text = 0;
      std::fill(mean_text, mean_text + ud(), 0.0f);
      for (std::size_t i = 0; i < src.total; ++i) {
        if (src.mod(i) != static_cast<std::uint8_t>(Modality::kText)) continue;
        src.row(i, kr, vr);
        for (int c = 0; c < d_; ++c) mean_text[c] += kr[c];
        ++n_text;
      }
      std::size_t n_vis = 0;
      for (std::size_t i = 0; i < F; ++i) n_vis += is_visual(src.mod(i)) ? 1 : 0;
      if (n_text == 0 || n_vis == 0) return;
      for (int c = 0; c < d_; ++c) mean_text[c] /= static_cast<float>(n_text);
      rel_.resize(n_vis);
      rel_idx_.resize(n_vis);
      vis_pos_.resize(n_vis);
      std::size_t o = 0;
      for (std::size_t i = 0; i < F; ++i) {
        if (!is_visual(src.mod(i))) continue;
        src.row(i, kr, vr);
        double dot = 0.0;
        for (int c = 0; c < d_; ++c) dot += static_cast<double>(kr[c]) * mean_text[c];
        rel_[o] = static_cast<float>(dot);
        vis_pos_[o++] = static_cast<std::uint32_t>(i);
      }
      const std::size_t count = static_cast<std::size_t>(std::lround(cfg_.stp_ratio * static_cast<double>(n_vis)));
      sel_.resize(n_vis);
      common::top_k_mask(rel_.data(), n_vis, std::min(count, n_vis), sel_.data(), rel_idx_.data());
      for (std::size_t i = 0; i < n_vis; ++i)
        if (sel_[i]) protect_[vis_pos_[i]] = 1;
    }
    static bool is_visual(std::uint8_t m) {
      return m == static_cast<std::uint8_t>(Modality::kImage) || m == static_cast<std::uint8_t>(Modality::kVideo);
    }

    void encode_group(const float* gk, const float* gv, const std::uint8_t* map, std::uint32_t prot, float* ybuf,
                      float* tmp, std::uint8_t* kb, std::uint8_t* vb) const {
      std::memset(kb, 0, geo_.key);
      std::memset(vb, 0, geo_.value);
      auto* kw = reinterpret_cast<std::uint32_t*>(kb);
      std::uint8_t codes[kGroup];
      int i2 = 0, i1 = 0;
      for (int c = 0; c < d_; ++c) {
        if (map[c]) {
          kb[geo_.map + static_cast<std::size_t>(c >> 3)] |= static_cast<std::uint8_t>(1u << (c & 7));
          const common::AffineParams p = affine_group(gk + c, ud(), 2, codes);
          std::uint32_t* w = kw + geo_.w2 / 4 + 2 * i2;
          for (int t = 0; t < kGroup; ++t) w[t >> 4] |= static_cast<std::uint32_t>(codes[t]) << (2 * (t & 15));
          set_f16(kb, geo_.s2, i2, to_float(p.scale));
          set_f16(kb, geo_.min2, i2, to_float(p.zero));
          ++i2;
        } else if (!geo_.fft) {
          const common::AffineParams p = affine_group(gk + c, ud(), 1, codes);
          std::uint32_t* w = kw + geo_.w1 / 4 + i1;
          for (int t = 0; t < kGroup; ++t) *w |= static_cast<std::uint32_t>(codes[t]) << t;
          set_f16(kb, geo_.s1, i1, to_float(p.scale));
          set_f16(kb, geo_.z1, i1, to_float(p.zero));
          ++i1;
        }
      }
      if (geo_.fft) {
        const std::size_t f1 = static_cast<std::size_t>(geo_.f1);
        for (int t = 0; t < kGroup; ++t) {
          int i = 0;
          for (int c = 0; c < d_; ++c)
            if (!map[c]) tmp[i++] = gk[static_cast<std::size_t>(t) * ud() + static_cast<std::size_t>(c)];
          dft_.forward(tmp, ybuf + static_cast<std::size_t>(t) * f1);
        }
        for (int f = 0; f < geo_.f1; ++f) {
          double sum = 0.0;
          std::uint32_t w = 0;
          for (int t = 0; t < kGroup; ++t) {
            const float y = ybuf[static_cast<std::size_t>(t) * f1 + static_cast<std::size_t>(f)];
            sum += std::fabs(static_cast<double>(y));
            w |= static_cast<std::uint32_t>(y >= 0.0f ? 1u : 0u) << t;
          }
          kw[geo_.w1 / 4 + static_cast<std::size_t>(f)] = w;
          set_f16(kb, geo_.s1, f, static_cast<float>(std::min<double>(sum / kGroup, kHalfMax)));
        }
      }
      // Values: ternary over unprotected tokens, 2-bit min–max over protected ones, per channel.
      auto* vw = reinterpret_cast<std::uint32_t*>(vb + geo_.v_words);
      float xu[kGroup], xp[kGroup];
      std::uint8_t cu[kGroup], cp[kGroup];
      for (int c = 0; c < d_; ++c) {
        int nu = 0, np = 0;
        for (int t = 0; t < kGroup; ++t) {
          const float x = gv[static_cast<std::size_t>(t) * ud() + static_cast<std::size_t>(c)];
          if ((prot >> t) & 1u) xp[np++] = x;
          else xu[nu++] = x;
        }
        half alpha{};
        if (nu > 0) alpha = common::ternary_quantize(xu, static_cast<std::size_t>(nu), 1, cfg_.gamma, cu);
        common::AffineParams pp{};
        if (np > 0) pp = affine_group(xp, 1, 2, cp, static_cast<std::size_t>(np));
        std::uint32_t* w = vw + 2 * c;
        for (int t = 0, a = 0, b = 0; t < kGroup; ++t) {
          const std::uint8_t q = ((prot >> t) & 1u) ? cp[b++] : cu[a++];
          w[t >> 4] |= static_cast<std::uint32_t>(q) << (2 * (t & 15));
        }
        set_f16(vb, geo_.v_alpha, c, to_float(alpha));
        if constexpr (Stp) {
          set_f16(vb, geo_.v_s2, c, to_float(pp.scale));
          set_f16(vb, geo_.v_min2, c, to_float(pp.zero));
        }
      }
      if constexpr (Stp) std::memcpy(vb + geo_.v_mask, &prot, 4);
    }

    /// BB-1 min–max quantization of n (default 32) values x[t·stride] with b bits.
    static common::AffineParams affine_group(const float* x, std::size_t stride, int bits, std::uint8_t* codes,
                                             std::size_t n = kGroup) {
      const common::AffineParams p = common::affine_params(common::group_range(x, n, stride, 1.0f), bits);
      const float z = to_float(p.zero), inv = common::affine_inverse_scale(to_float(p.scale));
      for (std::size_t t = 0; t < n; ++t) codes[t] = common::affine_code(x[t * stride], z, inv, bits);
      return p;
    }

    /// Dequantizes group g into gk, gv ([32][d] each); tmp holds ≥ 2d + d floats.
    void decode_group(std::size_t g, float* gk, float* gv, float* tmp) const {
      const std::uint8_t* kb = key_blob(g);
      const std::uint8_t* vb = value_blob(g);
      const auto* kw = reinterpret_cast<const std::uint32_t*>(kb);
      int i2 = 0, i1 = 0;
      for (int c = 0; c < d_; ++c) {
        if (map_bit(kb + geo_.map, c)) {
          const float s = f16_at(kb, geo_.s2, i2), z = f16_at(kb, geo_.min2, i2);
          for (int t = 0; t < kGroup; ++t)
            gk[static_cast<std::size_t>(t) * ud() + static_cast<std::size_t>(c)] =
                static_cast<float>(kernels::vidkv_code(kw + geo_.w2 / 4 + 2 * i2, 2, t)) * s + z;
          ++i2;
        } else if (!geo_.fft) {
          const float s = f16_at(kb, geo_.s1, i1), z = f16_at(kb, geo_.z1, i1);
          for (int t = 0; t < kGroup; ++t)
            gk[static_cast<std::size_t>(t) * ud() + static_cast<std::size_t>(c)] =
                static_cast<float>(kernels::vidkv_code(kw + geo_.w1 / 4 + i1, 1, t)) * s + z;
          ++i1;
        }
      }
      if (geo_.fft) {
        const bool sym = cfg_.one_bit_levels == common::SignLevels::kPlusMinusScale;
        float* y = tmp;
        float* xn = tmp + 2 * ud();
        for (int t = 0; t < kGroup; ++t) {
          for (int f = 0; f < geo_.f1; ++f) {
            const float s = f16_at(kb, geo_.s1, f);
            const unsigned code = kernels::vidkv_code(kw + geo_.w1 / 4 + f, 1, t);
            y[f] = code ? s : (sym ? -s : 0.0f);
          }
          dft_.inverse(y, xn);
          int i = 0;
          for (int c = 0; c < d_; ++c)
            if (!map_bit(kb + geo_.map, c)) gk[static_cast<std::size_t>(t) * ud() + static_cast<std::size_t>(c)] = xn[i++];
        }
      }
      const auto* vw = reinterpret_cast<const std::uint32_t*>(vb + geo_.v_words);
      const std::uint32_t mask = Stp ? u32_at(vb, geo_.v_mask) : 0u;
      const bool alpha = cfg_.ternary_scale == common::TernaryScale::kAlpha;
      for (int c = 0; c < d_; ++c) {
        const float a = alpha ? f16_at(vb, geo_.v_alpha, c) : 1.0f;
        for (int t = 0; t < kGroup; ++t) {
          const float q = static_cast<float>(kernels::vidkv_code(vw + 2 * c, 2, t));
          float x = a * (q - 1.0f);
          if (Stp && ((mask >> t) & 1u)) x = q * f16_at(vb, geo_.v_s2, c) + f16_at(vb, geo_.v_min2, c);
          gv[static_cast<std::size_t>(t) * ud() + static_cast<std::size_t>(c)] = x;
        }
      }
    }

    int d_;
    Config cfg_;
    Geometry geo_;
    BlockTable table_;
    std::vector<half> win_k_, win_v_;  // [Residual][d]: slots [nq_, n_)
    std::vector<std::uint8_t> win_mod_;
    common::ChannelDft dft_;
    // Flush-time working memory (grows only when a multi-token append flushes visual tokens).
    std::vector<std::uint8_t> protect_, sel_;
    std::vector<float> rel_;
    std::vector<std::uint32_t> rel_idx_, vis_pos_;
    std::uint8_t frozen_[256] = {};  // first flush block's channel map (freeze_channels)
    bool have_frozen_ = false;
    std::size_t n_ = 0, nq_ = 0;
  };
};

/// Paper settings (§6 "Hyperparameters"): K 1.5-bit (k = 0.5) / V 1.58-bit, γ = 0.7.
using VidKV_K15_V158 = VidKV<6, false, 128>;
/// K 1.75-bit (k = 0.75) / V 1.58-bit.
using VidKV_K175_V158 = VidKV<7, false, 128>;
/// K 1.5-bit / V 1.66-bit with semantic token protection (p = 0.2).
using VidKV_K15_V166 = VidKV<6, true, 128>;

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
