// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// KVQuant (methods/quantization.md §2 and the §12 flags): "KVQuant: Towards 10 Million Context
/// Length LLM Inference with KV Cache Quantization", C. Hooper, S. Kim, H. Mohammadzadeh,
/// M. W. Mahoney, Y. S. Shao, K. Keutzer, A. Gholami; NeurIPS 2024; arXiv 2401.18079. Reference
/// code SqueezeAILab/KVQuant at 57a2383.
///
///   quant::KVQuant<Bits>   Bits ∈ {2, 3, 4} ("kvquant_nuq2" / "nuq3" / "nuq4")
///   quant::KVQuantNuq3     the paper's headline setting (nuq3-1%, first token fp16)
///
/// What is stored per (layer, KV head), per slot (row format: kernels/cpu/scalar/kvquant.hpp):
///  * keys **pre-RoPE** (BB-14): the cache hands the original absolute positions through the
///    six-argument append (`TokenInfo`); each key row keeps its int32 position, so compaction
///    (eviction) and truncation move positions with their rows. RoPE is applied at attention time
///    to each decoded key with its own position (Config::rope: rotate-half default, interleaved,
///    base, linear/NTK scaling). read() uses quant/common/rope.hpp's arithmetic exactly; the fused
///    logits use its angle-addition tables (kernels::KvqRope, ≲ 3e-7 apart). read()/materialize return
///    post-RoPE keys (BB-16 rule 4: scorers and mergers work on post-RoPE keys).
///  * calibrated keys: per channel, static thresholds t_lo/t_hi from the calibration; an element
///    is an outlier iff x > t_hi or x < t_lo (strict), or its channel has half_range 0 and
///    x ≠ offset ([rec] edge case); others get the nearest code of the layer's key LUT after
///    (x − offset_c)/hr_c with fp16 (offset_c, hr_c) = lut_normalization(t_lo, t_hi) (BB-5).
///  * values: per token (value_scope = head, see below), dynamic: the ⌊(p/2)(d−1)⌋ + 1 largest and
///    as many smallest elements are outliers (equal to the reference's inclusive quantile rule
///    for distinct values; ties → lowest index), (offset, hr) = lut_normalization(min, max) of the
///    rest (the reference's "replace outliers by the median, then min/max"), codes of the value LUT.
///  * outliers in fp16 with a uint16 channel index (BB-10), exact: the dense slot is masked
///    (default). `outlier_encoding = kRefZeroCode` stores code 2^b/2 − 1 plus x − offset,
///    `kRefResidual` stores the nearest code plus x − x̂_code (§12), both reconstructed dense + sparse.
///  * attention sinks: tokens at position < n_sink (default 1: the first token of the sequence)
///    keep fp16 K and V in a per-stream table (fixed_bytes); the slot's row only flags them. An
///    evicted sink leaves with its row (BB-16 rule 2); nothing is promoted.
///
/// Interpretations and deviations (stated, not silent):
///  * The pool's blocks are fixed-size, so every row reserves a fixed number of outlier entries.
///    Values: exactly 2·(⌊(p/2)(d−1)⌋+1) (the rule's count). Calibrated keys (data-dependent
///    count, ≈ p·d on average): `key_outlier_cap` entries per token and head (0 = auto =
///    max(2, ⌈3·p·d⌉), 4 at d = 128, p = 1%); a token with more key outliers keeps the ones of
///    largest |normalized value| and clamps the rest to the LUT ends. Set key_outlier_cap = d for
///    the spec's uncapped default (memory cost 32 bits per reserved entry / d per element).
///    `cap_outliers = true` reproduces the deployment cap ⌊(p/2)·d⌋ + 1 per side (per head).
///  * value_scope = layer (statistics over all KV heads of a token, the spec's default) needs the
///    cache to hand one store all heads of a token; the Store contract gives one head, so only
///    value_scope = head is implemented (kLayer is rejected by Config::validate).
///  * Data-free fallback (calibration == nullptr): both LUTs are the NF datatype (nf_lut, the
///    reference's `--nf`), and keys are normalized per token like values (dynamic top-k outliers,
///    an fp16 (offset, hr) per key row) instead of per channel: the spec's [rec] "online per-block
///    key ranges" would need token-axis groups; per-token keeps rows independent and append-only.
///  * Stream identity: a calibrated Config holds one LUT pair per layer and thresholds per (layer,
///    head); KVCache constructs each store with (d, config, table, layer, kv_head) and it picks
///    its own. The three-argument constructor (a store used alone) accepts only a calibration
///    with a single layer and KV head (else InvalidArgument, never a silently wrong stream).
///  * Prefill staging: under an Evict with kSelectsAtPrefillEnd (H2O, SnapKV, …) KVCache stages
///    the prompt in fp16 *after* rope_keys, so prefill attention, scores and merges see post-RoPE
///    keys, and un-rotates the kept rows before this store encodes them (BB-16 rules 1 and 4).
///  * Inputs: |x| ≤ kMaxAbsInput = 32752 (fp16 max / 2), so sinks, outliers and the reference
///    residual encodings (x − offset) fit fp16.
///
/// Calibration (Fisher-weighted k-means LUTs, key thresholds, Q-Norm, save/load, NF fallback):
/// kvquant_calibration.hpp. Attention (kernels/kvquant.hpp): each slot is decoded once per call
/// (codes → LUT, outliers exact, RoPE at its position) and dotted with all query rows of the
/// GQA group; no whole-history dequantization.
///
/// Memory (exact, memory_bytes): whole 64-slot blocks of (key row + value row) plus the fp16 sink
/// table (2·n_sink·d·2 bytes). Row bytes: key 6 (+4 data-free) + ⌈d·b/8⌉ + 4·key_cap; value
/// 6 + ⌈d·b/8⌉ + 4·value_cap. The cache adds its per-slot metadata.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kvcompress/core/block_pool.hpp"
#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/core/token_info.hpp"
#include "kvcompress/core/token_row_store.hpp"
#include "kvcompress/kernels/kvquant.hpp"
#include "kvcompress/policies/quant/common/lut_quant.hpp"
#include "kvcompress/policies/quant/common/rope.hpp"
#include "kvcompress/policies/quant/kvquant_calibration.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {

/// How outliers combine with the dense code (§12 `outlier_encoding`).
enum class KVQuantOutlierEncoding {
  kMask,         ///< dense slot ignored, sparse holds x (exact) [rec]
  kRefZeroCode,  ///< reference prefill kernels: code 2^b/2 − 1, sparse x − offset
  kRefResidual,  ///< reference decode append: nearest code, sparse x − x̂_code
};

/// Scope of the per-token value statistics (§2 Values step 4).
enum class KVQuantValueScope {
  kHead,   ///< each head's d elements (implemented)
  kLayer,  ///< all KV heads of the token (needs a cache change; rejected)
};

/// KVQuant with Bits-bit non-uniform datatypes (file comment).
template <int Bits>
struct KVQuant {
  static_assert(Bits >= 2 && Bits <= 4, "quant::KVQuant<Bits>: Bits must be 2, 3 or 4 (nuq2/3/4)");
  static constexpr int kBits = Bits;
  static constexpr const char* kName = Bits == 2 ? "kvquant_nuq2" : (Bits == 3 ? "kvquant_nuq3" : "kvquant_nuq4");
  static constexpr float kMaxAbsInput = kHalfMax / 2.0f;
  static constexpr std::size_t kBlockTokens = 64;
  /// Keys are stored pre-RoPE (BB-14; BB-16 rule 4 key space). append() takes pre-RoPE keys,
  /// read() returns post-RoPE keys; rope_keys converts between the two for callers that hold
  /// rows of the other space (a full-precision staging copy, a merge write-back).
  static constexpr bool kPreRopeKeys = true;

  /// Runtime knobs; defaults = paper (1% outliers, first token fp16, masked outliers).
  struct Config {
    /// Calibrated datatypes and key thresholds (shared, immutable); nullptr = data-free mode.
    std::shared_ptr<const KVQuantCalibration> calibration;
    float outlier_fraction = 0.01f;  ///< p ∈ (0, 0.5)
    int n_sink = 1;                  ///< fp16 sink tokens: positions [0, n_sink), ≤ 64
    int key_outlier_cap = 0;         ///< calibrated keys: outlier entries per row (0 = auto)
    bool cap_outliers = false;       ///< reference deployment per-side key cap
    KVQuantOutlierEncoding outlier_encoding = KVQuantOutlierEncoding::kMask;
    KVQuantValueScope value_scope = KVQuantValueScope::kHead;
    common::RopeParams rope{};       ///< rope.head_dim must equal the cache's head_dim

    void validate(const CacheShape& s) const {
      constexpr const char* where = "quant::KVQuant::Config";
      const int d = s.head_dim;
      kvcompress::detail::require(d >= 2 && d % 2 == 0 && d <= 1024, where, "head_dim", d,
                                  "an even head dimension in [2, 1024] (RoPE pairs)");
      kvcompress::detail::require(outlier_fraction > 0.0f && outlier_fraction < 0.5f, where, "outlier_fraction",
                                  outlier_fraction, "in (0, 0.5)");
      kvcompress::detail::require(n_sink >= 0 && n_sink <= 64, where, "n_sink", n_sink, "in [0, 64]");
      kvcompress::detail::require(key_outlier_cap >= 0 && key_outlier_cap <= std::min(d, 255), where,
                                  "key_outlier_cap", key_outlier_cap,
                                  "0 (auto) or in [1, min(head_dim, 255)]");
      kvcompress::detail::require(value_scope == KVQuantValueScope::kHead, where, "value_scope", "layer",
                                  "head (value_scope = layer needs all KV heads of a token in one store)");
      kvcompress::detail::require(rope.head_dim == static_cast<std::size_t>(d), where, "rope.head_dim", rope.head_dim,
                                  "the cache's head_dim = " + std::to_string(d));
      kvcompress::detail::require(std::isfinite(rope.base) && rope.base > 1.0, where, "rope.base", rope.base,
                                  "a finite base > 1");
      kvcompress::detail::require(std::isfinite(rope.factor) && rope.factor > 0.0, where, "rope.factor", rope.factor,
                                  "a finite scaling factor > 0");
      kvcompress::detail::require(2 * value_per_side(d) <= 255, where, "outlier_fraction", outlier_fraction,
                                  "at most 255 value outliers per token row");
      if (calibration) {
        const KVQuantCalibration& c = *calibration;
        c.validate(where);
        kvcompress::detail::require(c.bits == Bits, where, "calibration.bits", c.bits,
                                    "the policy's Bits = " + std::to_string(Bits));
        kvcompress::detail::require(c.num_layers == s.num_layers, where, "calibration.num_layers", c.num_layers,
                                    "the cache's num_layers = " + std::to_string(s.num_layers));
        kvcompress::detail::require(c.num_kv_heads == s.num_kv_heads, where, "calibration.num_kv_heads",
                                    c.num_kv_heads, "the cache's num_kv_heads = " + std::to_string(s.num_kv_heads));
        kvcompress::detail::require(c.head_dim == d, where, "calibration.head_dim", c.head_dim,
                                    "the cache's head_dim = " + std::to_string(d));
      }
    }

    /// Value (and data-free key) outliers per side: ⌊(p/2)(d − 1)⌋ + 1.
    std::size_t value_per_side(int d) const {
      return static_cast<std::size_t>(std::floor(static_cast<double>(outlier_fraction) / 2.0 * (d - 1))) + 1;
    }
    /// Deployment cap per side for calibrated keys: ⌊(p/2)·d⌋ + 1.
    std::size_t key_cap_per_side(int d) const {
      return static_cast<std::size_t>(std::floor(static_cast<double>(outlier_fraction) / 2.0 * d)) + 1;
    }
    /// Outlier entries reserved per key row.
    std::size_t key_entries(int d) const {
      if (!calibration) return std::min<std::size_t>(static_cast<std::size_t>(d), 2 * value_per_side(d));
      if (key_outlier_cap > 0) return static_cast<std::size_t>(key_outlier_cap);
      if (cap_outliers) return std::min<std::size_t>(static_cast<std::size_t>(d), 2 * key_cap_per_side(d));
      const auto a = static_cast<std::size_t>(std::ceil(3.0 * outlier_fraction * d));
      return std::min<std::size_t>(std::min<std::size_t>(static_cast<std::size_t>(d), 255), std::max<std::size_t>(2, a));
    }
    /// Row geometry for head_dim d.
    kernels::KvqRowFormat format(int d) const {
      kernels::KvqRowFormat f;
      f.d = static_cast<std::size_t>(d);
      f.bits = Bits;
      f.key_cap = key_entries(d);
      f.value_cap = std::min<std::size_t>(static_cast<std::size_t>(d), 2 * value_per_side(d));
      f.key_dynamic = !calibration;
      return f;
    }
  };

  /// Rotates n key rows k[j·ld .. j·ld + d) to post-RoPE at positions pos[j] (inverse = false)
  /// or back to pre-RoPE (inverse = true, the exact transpose), with cfg.rope (rope.hpp).
  static void rope_keys(const Config& cfg, float* k, std::size_t n, std::size_t ld, const std::int32_t* pos,
                        bool inverse) {
    if (inverse)
      common::rope_unapply_rows(k, n, ld, pos, cfg.rope);
    else
      common::rope_apply_rows(k, n, ld, pos, cfg.rope);
  }

  /// One (layer, KV head) stream.
  class Store : public TokenRowStore<kBlockTokens> {
    using Base = TokenRowStore<kBlockTokens>;

   public:
    static std::size_t block_tokens(const Config&) { return kBlockTokens; }
    static std::size_t block_bytes(int d, const Config& c) {
      const auto f = c.format(d);
      return block_bytes_for(f.key_row_bytes(), f.value_row_bytes());
    }
    static std::size_t max_blocks(std::size_t capacity, const Config&) { return max_blocks_for(capacity); }
    /// fp16 sink table: n_sink × (key + value) × d.
    static std::size_t fixed_bytes(int d, const Config& c) {
      return 2 * static_cast<std::size_t>(c.n_sink) * static_cast<std::size_t>(d) * sizeof(half);
    }
    static std::size_t scratch_floats(int, const Config&) { return 0; }

    /// Stream (0, 0); a calibration spanning several layers or heads needs the 5-argument form.
    Store(int d, const Config& c, BlockTable table) : Store(d, c, std::move(table), 0, 0, true) {}

    /// Stream (layer, kv_head) of a cache: picks that stream's LUTs and key thresholds.
    Store(int d, const Config& c, BlockTable table, int layer, int kv_head)
        : Store(d, c, std::move(table), layer, kv_head, false) {}

    /// Appends n slots at consecutive positions after the last appended one (the cache's
    /// positions when nothing was truncated past an evicted tail; prefer the TokenInfo form).
    void append(const float* k, const float* v, std::size_t ld, std::size_t n, float* scratch) {
      std::size_t done = 0;
      while (done < n) {
        const std::size_t c = std::min(pos_tmp_.size(), n - done);
        for (std::size_t t = 0; t < c; ++t) pos_tmp_[t] = static_cast<std::int32_t>(next_pos_ + static_cast<std::int64_t>(t));
        TokenInfo info;
        info.pos = pos_tmp_.data();
        append(k + done * ld, v + done * ld, ld, c, info, scratch);
        done += c;
      }
    }

    /// Appends n slots; k (pre-RoPE) and v are [n][ld] fp32 rows (d used); info.pos gives the
    /// original absolute positions (ascending).
    void append(const float* k, const float* v, std::size_t ld, std::size_t n, const TokenInfo& info, float*) {
      const std::size_t first = begin_append(n);
      for (std::size_t t = 0; t < n; ++t) {
        const std::int32_t pos = info.pos ? info.pos[t] : static_cast<std::int32_t>(next_pos_ + static_cast<std::int64_t>(t));
        encode(k + t * ld, v + t * ld, pos, key_row(first + t), value_row(first + t));
      }
      next_pos_ = (info.pos ? static_cast<std::int64_t>(info.pos[n - 1]) : next_pos_ + static_cast<std::int64_t>(n) - 1) + 1;
    }

    /// logits[r·ldl + j] = q_r · RoPE(pos_j)·k̂_j for every slot j; q is [rows][d], pre-scaled.
    void logits(const float* q, int rows, float* out, std::size_t ldl) const {
      const kernels::KvqTables t = tables();
      for_each_block([&](std::size_t j0, std::size_t nb) {
        kernels::kvq_logits(key_ptr(j0), fmt_.key_row_bytes(), nb, fmt_, t, q, rows, out + j0, ldl, buf_.data(),
                            best_isa{});
      });
    }

    /// out[r][c] += Σ_j p[r·ldp + j]·v̂_j[c] over every slot j.
    void accumulate(const float* p, std::size_t ldp, int rows, float* out) const {
      const kernels::KvqTables t = tables();
      for_each_block([&](std::size_t j0, std::size_t nb) {
        kernels::kvq_accumulate(key_ptr(j0), fmt_.key_row_bytes(), value_ptr(j0), fmt_.value_row_bytes(), nb, fmt_, t,
                                p + j0, ldp, rows, out, buf_.data(), best_isa{});
      });
    }

    /// Slots [j0, j1) as fp32: post-RoPE key at k[(j−j0)·ld], value at v[(j−j0)·ld].
    void read(std::size_t j0, std::size_t j1, float* k, float* v, std::size_t ld, float*) const {
      for (std::size_t j = j0; j < j1; ++j) decode(j, k + (j - j0) * ld, v + (j - j0) * ld, true);
    }

    /// Slot j's pre-RoPE key and value (inspection, merge write-back checks).
    void read_pre_rope(std::size_t j, float* k, float* v) const { decode(j, k, v, false); }

    /// Original absolute position of slot j.
    std::int32_t position(std::size_t j) const { return kernels::kvq_row_pos(key_ptr(j)); }
    /// Outliers stored for slot j's key / value (0 for sinks).
    std::size_t key_outliers(std::size_t j) const { return key_ptr(j)[4]; }
    std::size_t value_outliers(std::size_t j) const { return value_ptr(j)[0]; }
    /// True if slot j is an fp16 attention sink.
    bool is_sink(std::size_t j) const { return key_ptr(j)[5] != 0; }
    /// Row geometry.
    const kernels::KvqRowFormat& format() const { return fmt_; }

    void truncate(std::size_t n, float* s) {
      Base::truncate(n, s);
      next_pos_ = size() ? static_cast<std::int64_t>(position(size() - 1)) + 1 : 0;
    }
    void clear() { truncate(0, nullptr); }

    /// Blocks held plus the fp16 sink table.
    std::size_t memory_bytes() const { return Base::memory_bytes() + fixed_bytes(static_cast<int>(d_), cfg_); }

   private:
    Store(int d, const Config& c, BlockTable table, int layer, int kv_head, bool implicit_stream)
        : Base(c.format(d).key_row_bytes(), c.format(d).value_row_bytes(), std::move(table)),
          d_(static_cast<std::size_t>(d)), cfg_(c), fmt_(c.format(d)) {
      constexpr const char* where = "quant::KVQuant::Store";
      const std::size_t L = std::size_t{1} << Bits;
      if (c.calibration) {
        const KVQuantCalibration& cal = *c.calibration;
        kvcompress::detail::require(!implicit_stream || (cal.num_layers == 1 && cal.num_kv_heads == 1), where,
                                    "stream", "unknown (3-argument constructor)",
                                    "(layer, kv_head) passed to the constructor when the calibration spans "
                                    "several layers or KV heads");
        kvcompress::detail::require(layer >= 0 && layer < cal.num_layers, where, "layer", layer,
                                    "in [0, calibration.num_layers)");
        kvcompress::detail::require(kv_head >= 0 && kv_head < cal.num_kv_heads, where, "kv_head", kv_head,
                                    "in [0, calibration.num_kv_heads)");
        kvcompress::detail::require(cal.head_dim == d && cal.bits == Bits, where, "calibration", cal.head_dim,
                                    "head_dim and bits of this store");
        lut_k_.assign(cal.key_lut(layer), cal.key_lut(layer) + L);
        lut_v_.assign(cal.value_lut(layer), cal.value_lut(layer) + L);
        const std::size_t base = cal.channel_index(layer, kv_head);
        t_lo_.assign(cal.t_lo.begin() + static_cast<std::ptrdiff_t>(base), cal.t_lo.begin() + static_cast<std::ptrdiff_t>(base + d_));
        t_hi_.assign(cal.t_hi.begin() + static_cast<std::ptrdiff_t>(base), cal.t_hi.begin() + static_cast<std::ptrdiff_t>(base + d_));
        nrm_.resize(d_);
        lut_k_c_.resize(d_ * L);
        for (std::size_t ch = 0; ch < d_; ++ch) {
          nrm_[ch] = common::lut_normalization(t_lo_[ch], t_hi_[ch]);
          for (std::size_t i = 0; i < L; ++i) lut_k_c_[ch * L + i] = lut_k_[i] * nrm_[ch].half_range + nrm_[ch].offset;
        }
      } else {
        lut_k_ = nf_lut(Bits);
        lut_v_ = lut_k_;
      }
      const common::RopeParams& r = c.rope;
      const double dd = static_cast<double>(d);
      const double b = r.scaling == common::RopeScaling::kNtk ? r.base * std::pow(r.factor, dd / (dd - 2.0)) : r.base;
      theta_.resize(d_ / 2);
      for (std::size_t i = 0; i < d_ / 2; ++i) theta_[i] = std::pow(b, -2.0 * static_cast<double>(i) / dd);
      pos_div_ = r.scaling == common::RopeScaling::kLinear ? r.factor : 1.0;
      lo_cos_.resize(static_cast<std::size_t>(kernels::kKvqRopeLo) * (d_ / 2));
      lo_sin_.resize(lo_cos_.size());
      for (std::int64_t lo = 0; lo < kernels::kKvqRopeLo; ++lo)
        for (std::size_t i = 0; i < d_ / 2; ++i) {
          const double a = static_cast<double>(lo) / pos_div_ * theta_[i];
          lo_cos_[static_cast<std::size_t>(lo) * (d_ / 2) + i] = static_cast<float>(std::cos(a));
          lo_sin_[static_cast<std::size_t>(lo) * (d_ / 2) + i] = static_cast<float>(std::sin(a));
        }
      sink_k_.resize(static_cast<std::size_t>(c.n_sink) * d_);
      sink_v_.resize(static_cast<std::size_t>(c.n_sink) * d_);
      buf_.resize(2 * d_);
      score_.resize(d_);
      mark_.resize(d_);
      pos_tmp_.resize(64);
    }

    kernels::KvqTables tables() const {
      kernels::KvqTables t;
      t.lut_k = lut_k_.data();
      t.lut_k_c = lut_k_c_.empty() ? nullptr : lut_k_c_.data();
      t.lut_v = lut_v_.data();
      t.sink_k = sink_k_.data();
      t.sink_v = sink_v_.data();
      t.outliers = cfg_.outlier_encoding == KVQuantOutlierEncoding::kMask ? kernels::KvqOutlierMode::kMask
                                                                          : kernels::KvqOutlierMode::kAddToDense;
      t.rope.theta = theta_.data();
      t.rope.pos_div = pos_div_;
      t.rope.interleaved = cfg_.rope.layout == common::RopeLayout::kInterleaved;
      t.rope.lo_cos = lo_cos_.data();
      t.rope.lo_sin = lo_sin_.data();
      return t;
    }

    const std::uint8_t* key_ptr(std::size_t j) const { return reinterpret_cast<const std::uint8_t*>(key_row(j)); }
    const std::uint8_t* value_ptr(std::size_t j) const { return reinterpret_cast<const std::uint8_t*>(value_row(j)); }

    void decode(std::size_t j, float* k, float* v, bool rotate) const {
      const kernels::KvqTables t = tables();
      const std::uint8_t* kr = key_ptr(j);
      kernels::kvq_decode_key(kr, fmt_, t, rotate, k);
      kernels::kvq_decode_value(value_ptr(j), kernels::kvq_row_pos(kr), kr[5] != 0, fmt_, t, v);
    }

    static void put_f16(std::uint8_t* p, float x) {
      const std::uint16_t h = f32_to_f16_bits(x);
      std::memcpy(p, &h, sizeof h);
    }
    static float f16(float x) { return f16_bits_to_f32(f32_to_f16_bits(x)); }

    // Marks (mark_ = 1) up to `limit` unmarked candidates (cand(i)) of largest key(i), ties →
    // lowest index. O(d·limit), no allocation.
    template <class Cand, class Key>
    std::size_t pick(std::size_t limit, Cand&& cand, Key&& key) {
      std::size_t got = 0;
      for (; got < limit; ++got) {
        std::size_t best = d_;
        float bv = 0.0f;
        for (std::size_t i = 0; i < d_; ++i) {
          if (mark_[i] || !cand(i)) continue;
          const float kv = key(i);
          if (best == d_ || kv > bv) {
            best = i;
            bv = kv;
          }
        }
        if (best == d_) break;
        mark_[best] = 1;
      }
      return got;
    }

    // Writes the marked channels as outlier entries (ascending) and returns their count.
    // dense(i) = x̂ of the dense code at i (for the residual encodings).
    template <class Dense>
    std::uint8_t write_outliers(const float* x, std::uint8_t* codes, std::uint8_t* ent, std::size_t cap,
                                common::LutNormalization (*nrm_of)(const Store&, std::size_t, common::LutNormalization),
                                common::LutNormalization dyn, Dense&& dense) {
      std::size_t cnt = 0;
      const std::uint8_t zero_code = static_cast<std::uint8_t>((1u << Bits) / 2 - 1);
      for (std::size_t i = 0; i < d_ && cnt < cap; ++i) {
        if (!mark_[i]) continue;
        float stored = x[i];
        switch (cfg_.outlier_encoding) {
          case KVQuantOutlierEncoding::kMask: break;
          case KVQuantOutlierEncoding::kRefZeroCode:
            set_code(codes, i, zero_code);
            stored = x[i] - nrm_of(*this, i, dyn).offset;
            break;
          case KVQuantOutlierEncoding::kRefResidual: stored = x[i] - dense(i); break;
        }
        const std::uint16_t ci = static_cast<std::uint16_t>(i);
        std::memcpy(ent + 4 * cnt, &ci, sizeof ci);
        put_f16(ent + 4 * cnt + 2, stored);
        ++cnt;
      }
      return static_cast<std::uint8_t>(cnt);
    }

    static void set_code(std::uint8_t* codes, std::size_t c, std::uint8_t q) { kernels::kvq_set_code(codes, c, Bits, q); }

    static common::LutNormalization channel_nrm(const Store& s, std::size_t i, common::LutNormalization) { return s.nrm_[i]; }
    static common::LutNormalization token_nrm(const Store&, std::size_t, common::LutNormalization n) { return n; }

    // Dynamic per-token encoding (values; data-free keys): top/bottom `per_side` outliers, range of
    // the rest, LUT codes. Writes (offset, hr) at params, codes, entries; returns the count.
    std::uint8_t encode_dynamic(const float* x, const float* lut, std::uint8_t* params, std::uint8_t* codes,
                                std::uint8_t* ent, std::size_t cap) {
      std::fill(mark_.begin(), mark_.end(), 0);
      const std::size_t per_side = cfg_.value_per_side(static_cast<int>(d_));
      auto all = [](std::size_t) { return true; };
      pick(per_side, all, [&](std::size_t i) { return x[i]; });
      pick(per_side, all, [&](std::size_t i) { return -x[i]; });
      float lo = 0.0f, hi = 0.0f;
      bool any = false;
      for (std::size_t i = 0; i < d_; ++i) {
        if (mark_[i]) continue;
        lo = any ? std::min(lo, x[i]) : x[i];
        hi = any ? std::max(hi, x[i]) : x[i];
        any = true;
      }
      // common::lut_normalization's arithmetic; its argument checks build their messages eagerly
      // (heap) and the inputs here are finite and within fp16 (kMaxAbsInput), so they are skipped.
      const common::LutNormalization nrm{f16(0.5f * (hi + lo)), f16(0.5f * (hi - lo))};
      put_f16(params, nrm.offset);
      put_f16(params + 2, nrm.half_range);
      std::memset(codes, 0, fmt_.code_bytes());
      const int L = 1 << Bits;
      for (std::size_t i = 0; i < d_; ++i) set_code(codes, i, common::lut_code(x[i], nrm, lut, L));
      return write_outliers(x, codes, ent, cap, &token_nrm, nrm, [&](std::size_t i) {
        return lut[kernels::kvq_code(codes, i, Bits)] * nrm.half_range + nrm.offset;
      });
    }

    void encode(const float* k, const float* v, std::int32_t pos, std::byte* krow_b, std::byte* vrow_b) {
      auto* kr = reinterpret_cast<std::uint8_t*>(krow_b);
      auto* vr = reinterpret_cast<std::uint8_t*>(vrow_b);
      std::memset(kr, 0, fmt_.key_row_bytes());
      std::memset(vr, 0, fmt_.value_row_bytes());
      std::memcpy(kr, &pos, sizeof pos);
      if (pos >= 0 && pos < cfg_.n_sink) {
        kr[5] = 1;
        half* sk = sink_k_.data() + static_cast<std::size_t>(pos) * d_;
        half* sv = sink_v_.data() + static_cast<std::size_t>(pos) * d_;
        for (std::size_t c = 0; c < d_; ++c) {
          sk[c] = half{f32_to_f16_bits(k[c])};
          sv[c] = half{f32_to_f16_bits(v[c])};
        }
        return;
      }
      // Values: dynamic per token.
      vr[0] = encode_dynamic(v, lut_v_.data(), vr + 2, vr + fmt_.value_codes(), vr + fmt_.value_outliers(), fmt_.value_cap);
      if (!cfg_.calibration) {
        kr[4] = encode_dynamic(k, lut_k_.data(), kr + 6, kr + fmt_.key_codes(), kr + fmt_.key_outliers(), fmt_.key_cap);
        return;
      }
      // Keys: static per-channel thresholds.
      std::uint8_t* codes = kr + fmt_.key_codes();
      const std::size_t L = std::size_t{1} << Bits;
      for (std::size_t c = 0; c < d_; ++c) {
        set_code(codes, c, common::lut_code(k[c], nrm_[c], lut_k_.data(), static_cast<int>(L)));
        const float hr = nrm_[c].half_range;
        const bool out = k[c] > t_hi_[c] || k[c] < t_lo_[c] || (hr == 0.0f && k[c] != nrm_[c].offset);
        mark_[c] = 0;
        score_[c] = out ? (hr > 0.0f ? (k[c] - nrm_[c].offset) / hr
                                     : (k[c] > nrm_[c].offset ? std::numeric_limits<float>::max()
                                                              : -std::numeric_limits<float>::max()))
                        : std::numeric_limits<float>::quiet_NaN();
      }
      auto is_out = [&](std::size_t i) { return !std::isnan(score_[i]); };
      if (cfg_.cap_outliers) {
        // Deployment rule: at most ⌊(p/2)·d⌋ + 1 per side, largest / smallest normalized value.
        const std::size_t side = cfg_.key_cap_per_side(static_cast<int>(d_));
        pick(side, [&](std::size_t i) { return is_out(i) && score_[i] > 0.0f; }, [&](std::size_t i) { return score_[i]; });
        pick(side, [&](std::size_t i) { return is_out(i) && score_[i] < 0.0f; }, [&](std::size_t i) { return -score_[i]; });
      } else {
        pick(fmt_.key_cap, is_out, [&](std::size_t i) { return std::fabs(score_[i]); });
      }
      kr[4] = write_outliers(k, codes, kr + fmt_.key_outliers(), fmt_.key_cap, &channel_nrm, {},
                             [&](std::size_t i) { return lut_k_c_[i * L + kernels::kvq_code(codes, i, Bits)]; });
    }

    std::size_t d_;
    Config cfg_;
    kernels::KvqRowFormat fmt_;
    std::vector<float> lut_k_, lut_v_, lut_k_c_, t_lo_, t_hi_;
    std::vector<common::LutNormalization> nrm_;
    std::vector<double> theta_;
    std::vector<float> lo_cos_, lo_sin_;  // RoPE angle-addition tables [16][d/2] (kernels::KvqRope)
    double pos_div_ = 1.0;
    std::vector<half> sink_k_, sink_v_;
    mutable std::vector<float> buf_;  // one decoded slot + RoPE hi cache, 2·d (one worker per store at a time)
    std::vector<float> score_;
    std::vector<std::uint8_t> mark_;
    std::vector<std::int32_t> pos_tmp_;
    std::int64_t next_pos_ = 0;
  };
};

/// Paper headline setting: nuq3 with 1% outliers and the first token in fp16.
using KVQuantNuq3 = KVQuant<3>;
/// nuq4-1% and nuq2-1% (use Config::calibration with q_norm for 2-bit as the reference does).
using KVQuantNuq4 = KVQuant<4>;
using KVQuantNuq2 = KVQuant<2>;

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
