// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AKVQ-VL — "AKVQ-VL: Attention-Aware KV Cache Adaptive 2-Bit Quantization for Vision-Language
/// Models", Zunhai Su, Wang Shen, Linge Li, Zhe Chen, Hanyu Wei, Huangqi Yu, Kehong Yuan, arXiv
/// 2501.15021 (2025) (methods/quantization.md §5; no reference code, the spec's [2nd]/[rec]
/// reading is followed).
///
/// Layers are TSA (text-salient attention; default: the first two layers, the spec's [rec]) or
/// PSA (pivot-token-salient attention; the rest). Precision classes per (layer, KV head):
///   TSA: last R = 128 slots fp16; other text tokens 4-bit; visual (IMAGE/VIDEO) tokens 2-bit.
///        "Text" = every non-visual modality: SYSTEM, TEXT, GENERATED (spec: generated counts as
///        text) and SPECIAL (our reading: markers are not visual content).
///   PSA: pivots (P = 15) ∪ last R = 128 slots fp16; everything else 2-bit.
/// Quantization: per token, groups of min(128, d) channels after a Walsh–Hadamard rotation
/// (BB-9, block-diagonal for d = 80/96), asymmetric with integer zero point (BB-1), clip 0.8 for
/// 2-bit and 1.0 for 4-bit (kernels/cpu/scalar/akvq_vl.hpp). Streaming ([rec]): a token is
/// written in fp16 while it is among the last R physical slots; when it leaves, it is quantized
/// with its class precision unless it is a pivot.
///
/// Rotation (BB-9, §5 step 4): keys and values are rotated once when written (K' = K·H,
/// V' = V·H, the [rec] for engines whose W_V/W_O cannot be folded). At attention time the query
/// is rotated (q' = qH, so q'·k' = q·k exactly) and the attention output is rotated back
/// (Σ p_j v_j = H·Σ p_j v'_j): the cache never un-rotates history. read() returns keys and values
/// in the original (un-rotated) space, so scorers and mergers see ordinary post-RoPE keys.
///
/// Pivot detection — interpretation. The paper proxies pivots by tokens with massive activations
/// in the residual stream at a probe layer (spec [rec]: score max_c |h_{t,c}| at the input of
/// layer 2, top P at prefill, frozen). Hidden states do not reach the cache, so this store offers
/// the documented fallback PivotScore::kKeyMaxAbs: the same statistic on the only activation it
/// sees, max_c |k_{t,c}| of the incoming (un-rotated) key of the stream; kNone disables pivots.
/// Candidates are the non-GENERATED tokens of PSA layers (the set is frozen after the prompt:
/// generated tokens are covered by the recent window, spec step 3). The running top-P over all
/// candidates seen is exact for the whole prompt: a token outside the current top P can never
/// re-enter it, so a token leaving the window is quantized unless it is in the running top P;
/// a pivot displaced by a later, higher-scoring token is quantized at that moment (from its fp16
/// row, as it would have been when it left the window). Ties keep the earlier token. A host hook
/// for real probe-layer scores needs a TokenInfo field (requested from the lead).
///
/// Storage per (layer, KV head): blocks of 128 slots: [128] int32 pos, [128] uint8 class,
/// [128] uint16 fp16-row index, [128] key rows, [128] value rows (2-bit plane + metadata,
/// 64-byte aligned regions). TSA streams of AkvqVl (4-bit text) hold a second block per 128
/// slots with the second 2-bit plane of 4-bit rows, so PSA streams never pay for 4-bit storage
/// (max_blocks reserves two per 128 slots when some layer is TSA). fp16 rows (R + P) live in a
/// fixed side pool. Eviction (BB-16): per-token rows, so evicted slots are removed physically
/// and dropped from the pivot list; no other token is promoted in their place.
///
/// Layer table: Config::layer_types (one per layer) or Config::tsa_layers leading TSA layers.
/// KVCache constructs each store with its (layer, kv_head), so a store knows its layer type; the
/// 3-argument constructor (a store used alone) accepts only a uniform table.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "kvcompress/core/block_pool.hpp"
#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/core/modality.hpp"
#include "kvcompress/core/token_info.hpp"
#include "kvcompress/kernels/akvq_vl.hpp"
#include "kvcompress/kernels/convert.hpp"
#include "kvcompress/policies/quant/common/fp16_row_pool.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {

/// Attention pattern of a layer (§5 step 1).
enum class AkvqLayerType : std::uint8_t { kTsa, kPsa };
/// Pivot score source (file comment).
enum class AkvqPivotScore : std::uint8_t { kKeyMaxAbs, kNone };
/// Precision class of a slot.
enum class AkvqClass : std::uint8_t { kFp16 = 0, kLow = 1, kHigh = 2 };

/// AKVQ-VL with 2-bit tokens and HighBits-bit TSA text tokens (4 = paper; 2 = ablation without
/// the TSA text boost).
template <int HighBits = 4>
struct AkvqVlQuant {
  static_assert(HighBits == 2 || HighBits == 4, "quant::AkvqVlQuant: HighBits must be 2 or 4");
  static constexpr const char* kName = HighBits == 4 ? "akvq_vl" : "akvq_vl_2bit_text";
  static constexpr int kLowBits = 2;
  static constexpr int kHighBits = HighBits;
  /// fp16 window rows and fp16 scales bound the input.
  static constexpr float kMaxAbsInput = kHalfMax;

  /// Runtime knobs; defaults are the paper's (R = 128, P = 15, clip 0.8 / 1.0, group 128).
  struct Config {
    std::size_t recent_window = 128;       ///< R: last R slots fp16
    std::size_t pivots = 15;               ///< P: pivots per PSA stream
    int tsa_layers = 2;                    ///< layers [0, tsa_layers) are TSA (used if layer_types empty)
    std::vector<AkvqLayerType> layer_types;///< optional explicit table, one per layer
    float clip_low = 0.8f;                 ///< clip ratio of 2-bit rows
    float clip_high = 1.0f;                ///< clip ratio of 4-bit rows
    std::size_t group = 128;               ///< channel group; effective min(group, head_dim)
    AkvqPivotScore pivot_score = AkvqPivotScore::kKeyMaxAbs;

    AkvqLayerType type_of(int layer) const {
      if (!layer_types.empty()) return layer_types[static_cast<std::size_t>(layer)];
      return layer < tsa_layers ? AkvqLayerType::kTsa : AkvqLayerType::kPsa;
    }
    bool any_tsa() const {
      if (!layer_types.empty())
        return std::find(layer_types.begin(), layer_types.end(), AkvqLayerType::kTsa) != layer_types.end();
      return tsa_layers > 0;
    }
    std::size_t group_for(int d) const { return std::min(group, static_cast<std::size_t>(d)); }

    void validate(const CacheShape& shape) const {
      constexpr const char* where = "quant::AkvqVl";
      kvcompress::detail::require(recent_window + pivots <= 4096, where, "recent_window + pivots",
                                  recent_window + pivots, "<= 4096");
      kvcompress::detail::require(tsa_layers >= 0, where, "tsa_layers", tsa_layers, ">= 0");
      kvcompress::detail::require(layer_types.empty() || layer_types.size() == static_cast<std::size_t>(shape.num_layers),
                                  where, "layer_types.size()", layer_types.size(),
                                  "0 or num_layers = " + std::to_string(shape.num_layers));
      kvcompress::detail::require(clip_low > 0.0f && clip_low <= 1.0f, where, "clip_low", clip_low, "in (0, 1]");
      kvcompress::detail::require(clip_high > 0.0f && clip_high <= 1.0f, where, "clip_high", clip_high, "in (0, 1]");
      const std::size_t g = group_for(shape.head_dim);
      kvcompress::detail::require(g >= 8 && g % 8 == 0 && static_cast<std::size_t>(shape.head_dim) % g == 0, where,
                                  "group", group,
                                  "a multiple of 8 whose min with head_dim divides head_dim " +
                                      std::to_string(shape.head_dim));
    }
  };

  class Store {
   public:
    static constexpr std::size_t kBlockTokens = 128;

    static std::size_t block_tokens(const Config&) { return kBlockTokens; }
    static std::size_t block_bytes(int d, const Config& cfg) { return layout(d, cfg).block; }
    static std::size_t max_blocks(std::size_t capacity, const Config& cfg) {
      return (capacity + kBlockTokens - 1) / kBlockTokens * (HighBits == 4 && cfg.any_tsa() ? 2 : 1);
    }
    /// fp16 side pool (R + P rows, K and V) and the pivot list.
    static std::size_t fixed_bytes(int d, const Config& cfg) {
      return common::Fp16RowPool::bytes_for(cfg.recent_window + cfg.pivots, static_cast<std::size_t>(d)) +
             cfg.pivots * sizeof(Pivot);
    }
    /// Rotated incoming key/value + a row pair for re-encoding fp16 rows.
    static std::size_t scratch_floats(int d, const Config&) { return 4 * static_cast<std::size_t>(d); }

    /// Serves layer 0 (only for a uniform layer table, see the file comment).
    Store(int d, const Config& cfg, BlockTable table) : Store(d, cfg, std::move(table), 0, 0) {
      const bool uniform = cfg.layer_types.empty()
                               ? cfg.tsa_layers == 0
                               : std::all_of(cfg.layer_types.begin(), cfg.layer_types.end(),
                                             [&](AkvqLayerType t) { return t == cfg.layer_types[0]; });
      kvcompress::detail::require(uniform, "quant::AkvqVl::Store", "layer_types", "a mixed TSA/PSA table",
                                  "a uniform table (KVCache passes each store its layer and KV head)");
    }
    Store(int d, const Config& cfg, BlockTable table, int layer, int /*kv_head*/)
        : d_(static_cast<std::size_t>(d)), group_(cfg.group_for(d)), geo_(layout(d, cfg)),
          tsa_(cfg.type_of(layer) == AkvqLayerType::kTsa), ext_(tsa_ && HighBits == 4),
          window_(cfg.recent_window), max_pivots_(tsa_ || cfg.pivot_score == AkvqPivotScore::kNone ? 0 : cfg.pivots),
          clip_low_(cfg.clip_low), clip_high_(cfg.clip_high), table_(std::move(table)),
          rows_(cfg.recent_window + cfg.pivots, static_cast<std::size_t>(d)) {
      pivots_.reserve(cfg.pivots);
    }

    std::size_t size() const { return n_; }
    bool is_tsa() const { return tsa_; }
    /// Slots in the recent window (the last window() physical slots).
    std::size_t window() const { return w_; }
    AkvqClass slot_class(std::size_t j) const { return static_cast<AkvqClass>(cls_of(j) & 0x0f); }
    bool is_pivot(std::size_t j) const { return find_pivot(pos_of(j)) != pivots_.size(); }
    std::size_t num_pivots() const { return pivots_.size(); }
    std::int32_t position(std::size_t j) const { return pos_of(j); }

    void append(const float* k, const float* v, std::size_t ld, std::size_t n, const TokenInfo& info, float* scratch) {
      float* kr = scratch;
      float* vr = scratch + d_;
      for (std::size_t t = 0; t < n; ++t) {
        if (window_ > 0 && w_ == window_) leave_window(n_ - window_, scratch + 2 * d_);
        table_.grow_to(blocks_for(n_ + 1) * (ext_ ? 2 : 1));
        const std::size_t j = n_++;
        const Modality mod = info.mod ? info.mod[t] : Modality::kText;
        const std::int32_t pos = info.pos ? info.pos[t] : static_cast<std::int32_t>(j);
        pos_of(j) = pos;
        const bool visual = mod == Modality::kImage || mod == Modality::kVideo;
        const AkvqClass target = tsa_ && !visual && HighBits == 4 ? AkvqClass::kHigh : AkvqClass::kLow;
        const float* kt = k + t * ld;
        std::copy(kt, kt + d_, kr);
        std::copy(v + t * ld, v + t * ld + d_, vr);
        if (max_pivots_ > 0 && mod != Modality::kGenerated) {
          float score = 0.0f;
          for (std::size_t c = 0; c < d_; ++c) score = std::max(score, std::fabs(kt[c]));
          offer_pivot(score, pos, scratch + 2 * d_);
        }
        kernels::akvq_wht(kr, d_, best_isa{});
        kernels::akvq_wht(vr, d_, best_isa{});
        set_cls(j, AkvqClass::kFp16, target);
        if (window_ > 0 || find_pivot(pos) != pivots_.size()) {
          const std::uint16_t r = rows_.acquire();
          aux_of(j) = r;
          kernels::convert(kr, rows_.key(r), d_, best_isa{});
          kernels::convert(vr, rows_.value(r), d_, best_isa{});
          if (window_ > 0) ++w_;
        } else {
          encode(j, kr, vr, target);
        }
      }
    }

    /// logits[r·ldl + j] = q_r·k_j, computed as (q_r H)·(k_j H) on the stored rotated rows.
    void logits(const float* q, int rows, float* out, std::size_t ldl) const {
      float qr[kRowChunk * kMaxD], qs[kRowChunk * (kMaxD / 8)], tmp[kMaxD];
      const std::size_t G = d_ / group_;
      for (int r0 = 0; r0 < rows; r0 += kRowChunk) {
        const int nr = std::min(rows - r0, kRowChunk);
        for (int r = 0; r < nr; ++r) {
          float* x = qr + static_cast<std::size_t>(r) * d_;
          std::copy(q + static_cast<std::size_t>(r0 + r) * d_, q + static_cast<std::size_t>(r0 + r + 1) * d_, x);
          kernels::akvq_wht(x, d_, best_isa{});
          kernels::akvq_group_sums(x, d_, group_, qs + static_cast<std::size_t>(r) * G, best_isa{});
        }
        for (std::size_t j = 0; j < n_; ++j) {
          const AkvqClass c = slot_class(j);
          if (c == AkvqClass::kFp16) {
            kernels::convert(rows_.key(aux_of(j)), tmp, d_, best_isa{});
            for (int r = 0; r < nr; ++r) {
              const float* x = qr + static_cast<std::size_t>(r) * d_;
              float s = 0.0f;
              for (std::size_t i = 0; i < d_; ++i) s += x[i] * tmp[i];
              out[static_cast<std::size_t>(r0 + r) * ldl + j] = s;
            }
          } else {
            const std::uint8_t* ext = c == AkvqClass::kHigh ? key_ext(j) : nullptr;
            for (int r = 0; r < nr; ++r)
              out[static_cast<std::size_t>(r0 + r) * ldl + j] =
                  kernels::akvq_row_dot(key_row(j), ext, d_, group_, qr + static_cast<std::size_t>(r) * d_,
                                        qs + static_cast<std::size_t>(r) * G, best_isa{});
          }
        }
      }
    }

    /// out[r][c] += Σ_j p[r·ldp + j]·v_j[c], accumulated on rotated rows and rotated back once.
    void accumulate(const float* p, std::size_t ldp, int rows, float* out) const {
      float acc[kRowChunk * kMaxD], tmp[kMaxD];
      for (int r0 = 0; r0 < rows; r0 += kRowChunk) {
        const int nr = std::min(rows - r0, kRowChunk);
        std::fill(acc, acc + static_cast<std::size_t>(nr) * d_, 0.0f);
        for (std::size_t j = 0; j < n_; ++j) {
          const AkvqClass c = slot_class(j);
          if (c == AkvqClass::kFp16) kernels::convert(rows_.value(aux_of(j)), tmp, d_, best_isa{});
          const std::uint8_t* ext = c == AkvqClass::kHigh ? value_ext(j) : nullptr;
          for (int r = 0; r < nr; ++r) {
            const float w = p[static_cast<std::size_t>(r0 + r) * ldp + j];
            if (w == 0.0f) continue;
            float* a = acc + static_cast<std::size_t>(r) * d_;
            if (c == AkvqClass::kFp16) {
              for (std::size_t i = 0; i < d_; ++i) a[i] += w * tmp[i];
            } else {
              kernels::akvq_row_axpy(value_row(j), ext, d_, group_, w, a, best_isa{});
            }
          }
        }
        for (int r = 0; r < nr; ++r) {
          float* a = acc + static_cast<std::size_t>(r) * d_;
          kernels::akvq_wht(a, d_, best_isa{});
          float* o = out + static_cast<std::size_t>(r0 + r) * d_;
          for (std::size_t i = 0; i < d_; ++i) o[i] += a[i];
        }
      }
    }

    /// Slots [j0, j1) in the original (un-rotated) space.
    void read(std::size_t j0, std::size_t j1, float* k, float* v, std::size_t ld, float*) const {
      for (std::size_t j = j0; j < j1; ++j) {
        float* kd = k + (j - j0) * ld;
        float* vd = v + (j - j0) * ld;
        decode(j, kd, vd);
        kernels::akvq_wht(kd, d_, best_isa{});
        kernels::akvq_wht(vd, d_, best_isa{});
      }
    }

    std::size_t plan_compact(const std::uint8_t* keep, std::uint8_t* retained) const {
      std::size_t cnt = 0;
      for (std::size_t j = 0; j < n_; ++j) cnt += (retained[j] = keep[j] ? 1 : 0);
      return cnt;
    }

    void compact(const std::uint8_t* retained, float*) {
      const std::size_t w0 = n_ - w_;
      std::size_t o = 0, w = 0;
      for (std::size_t j = 0; j < n_; ++j) {
        if (!retained[j]) {
          drop(j);
          continue;
        }
        if (o != j) move_slot(j, o);
        if (j >= w0) ++w;
        ++o;
      }
      n_ = o;
      w_ = w;
      table_.shrink_to(blocks_for(n_) * (ext_ ? 2 : 1));
    }

    void truncate(std::size_t m, float*) {
      if (m >= n_) return;
      const std::size_t w0 = n_ - w_;
      for (std::size_t j = m; j < n_; ++j) drop(j);
      w_ = m > w0 ? m - w0 : 0;
      n_ = m;
      table_.shrink_to(blocks_for(n_) * (ext_ ? 2 : 1));
    }

    void clear() {
      n_ = w_ = 0;
      pivots_.clear();
      rows_.reset();
      table_.shrink_to(0);
    }

    /// Blocks held + the fp16 side pool + the pivot list.
    std::size_t memory_bytes() const {
      return table_.size() * geo_.block + rows_.memory_bytes() + pivots_.capacity() * sizeof(Pivot);
    }

   private:
    struct Pivot {
      float score;
      std::int32_t pos;
    };
    static constexpr int kRowChunk = 16;
    static constexpr std::size_t kMaxD = 256;
    struct Layout {
      std::size_t row, plane, cls_off, aux_off, k_off, v_off, ext_v_off, block;
    };
    static Layout layout(int d, const Config& cfg) {
      const std::size_t ud = static_cast<std::size_t>(d);
      Layout l;
      l.row = kernels::akvq_row_bytes(ud, cfg.group_for(d));
      l.plane = kernels::akvq_plane_bytes(ud);
      l.cls_off = align_up(kBlockTokens * sizeof(std::int32_t));
      l.aux_off = l.cls_off + align_up(kBlockTokens);
      l.k_off = l.aux_off + align_up(kBlockTokens * sizeof(std::uint16_t));
      l.v_off = l.k_off + align_up(kBlockTokens * l.row);
      l.block = l.v_off + align_up(kBlockTokens * l.row);
      l.ext_v_off = align_up(kBlockTokens * l.plane);  // in the extension block
      return l;
    }
    static std::size_t blocks_for(std::size_t n) { return (n + kBlockTokens - 1) / kBlockTokens; }

    std::byte* base(std::size_t j) { return table_.block((j / kBlockTokens) * (ext_ ? 2 : 1)); }
    const std::byte* base(std::size_t j) const { return table_.block((j / kBlockTokens) * (ext_ ? 2 : 1)); }
    const std::byte* extb(std::size_t j) const { return table_.block((j / kBlockTokens) * 2 + 1); }
    std::byte* extb(std::size_t j) { return table_.block((j / kBlockTokens) * 2 + 1); }
    std::size_t slot(std::size_t j) const { return j % kBlockTokens; }

    std::int32_t& pos_of(std::size_t j) { return reinterpret_cast<std::int32_t*>(base(j))[slot(j)]; }
    std::int32_t pos_of(std::size_t j) const { return reinterpret_cast<const std::int32_t*>(base(j))[slot(j)]; }
    std::uint8_t& cls_of(std::size_t j) { return reinterpret_cast<std::uint8_t*>(base(j) + geo_.cls_off)[slot(j)]; }
    std::uint8_t cls_of(std::size_t j) const {
      return reinterpret_cast<const std::uint8_t*>(base(j) + geo_.cls_off)[slot(j)];
    }
    std::uint16_t& aux_of(std::size_t j) {
      return reinterpret_cast<std::uint16_t*>(base(j) + geo_.aux_off)[slot(j)];
    }
    std::uint16_t aux_of(std::size_t j) const {
      return reinterpret_cast<const std::uint16_t*>(base(j) + geo_.aux_off)[slot(j)];
    }
    std::uint8_t* key_row(std::size_t j) {
      return reinterpret_cast<std::uint8_t*>(base(j) + geo_.k_off) + slot(j) * geo_.row;
    }
    std::uint8_t* value_row(std::size_t j) {
      return reinterpret_cast<std::uint8_t*>(base(j) + geo_.v_off) + slot(j) * geo_.row;
    }
    const std::uint8_t* key_row(std::size_t j) const {
      return reinterpret_cast<const std::uint8_t*>(base(j) + geo_.k_off) + slot(j) * geo_.row;
    }
    const std::uint8_t* value_row(std::size_t j) const {
      return reinterpret_cast<const std::uint8_t*>(base(j) + geo_.v_off) + slot(j) * geo_.row;
    }
    std::uint8_t* key_ext(std::size_t j) { return reinterpret_cast<std::uint8_t*>(extb(j)) + slot(j) * geo_.plane; }
    std::uint8_t* value_ext(std::size_t j) {
      return reinterpret_cast<std::uint8_t*>(extb(j) + geo_.ext_v_off) + slot(j) * geo_.plane;
    }
    const std::uint8_t* key_ext(std::size_t j) const {
      return reinterpret_cast<const std::uint8_t*>(extb(j)) + slot(j) * geo_.plane;
    }
    const std::uint8_t* value_ext(std::size_t j) const {
      return reinterpret_cast<const std::uint8_t*>(extb(j) + geo_.ext_v_off) + slot(j) * geo_.plane;
    }

    void set_cls(std::size_t j, AkvqClass now, AkvqClass target) {
      cls_of(j) = static_cast<std::uint8_t>(static_cast<unsigned>(now) | (static_cast<unsigned>(target) << 4));
    }
    AkvqClass target_of(std::size_t j) const { return static_cast<AkvqClass>(cls_of(j) >> 4); }

    /// Quantizes rotated rows k, v into slot j with the class's precision.
    void encode(std::size_t j, const float* k, const float* v, AkvqClass c) {
      const bool high = c == AkvqClass::kHigh;
      const int bits = high ? HighBits : kLowBits;
      const float clip = high ? clip_high_ : clip_low_;
      kernels::akvq_quantize_row(k, d_, group_, bits, clip, key_row(j), high ? key_ext(j) : nullptr, best_isa{});
      kernels::akvq_quantize_row(v, d_, group_, bits, clip, value_row(j), high ? value_ext(j) : nullptr, best_isa{});
      set_cls(j, c, c);
    }
    /// Rotated reconstruction of slot j.
    void decode(std::size_t j, float* k, float* v) const {
      const AkvqClass c = slot_class(j);
      if (c == AkvqClass::kFp16) {
        kernels::convert(rows_.key(aux_of(j)), k, d_, best_isa{});
        kernels::convert(rows_.value(aux_of(j)), v, d_, best_isa{});
        return;
      }
      const bool high = c == AkvqClass::kHigh;
      kernels::akvq_dequantize_row(key_row(j), high ? key_ext(j) : nullptr, d_, group_, k, best_isa{});
      kernels::akvq_dequantize_row(value_row(j), high ? value_ext(j) : nullptr, d_, group_, v, best_isa{});
    }
    /// Re-encodes an fp16 slot with its target precision and frees its row.
    void quantize_fp16(std::size_t j, float* scratch) {
      const std::uint16_t r = aux_of(j);
      kernels::convert(rows_.key(r), scratch, d_, best_isa{});
      kernels::convert(rows_.value(r), scratch + d_, d_, best_isa{});
      encode(j, scratch, scratch + d_, target_of(j));
      rows_.release(r);
    }
    /// Slot j leaves the recent window: quantized unless it is a pivot.
    void leave_window(std::size_t j, float* scratch) {
      --w_;
      if (slot_class(j) == AkvqClass::kFp16 && find_pivot(pos_of(j)) == pivots_.size()) quantize_fp16(j, scratch);
    }

    std::size_t find_pivot(std::int32_t pos) const {
      for (std::size_t i = 0; i < pivots_.size(); ++i)
        if (pivots_[i].pos == pos) return i;
      return pivots_.size();
    }
    /// Slot holding position pos (positions ascend), or n_.
    std::size_t find_slot(std::int32_t pos) const {
      std::size_t lo = 0, hi = n_;
      while (lo < hi) {
        const std::size_t mid = (lo + hi) / 2;
        if (pos_of(mid) < pos) lo = mid + 1;
        else hi = mid;
      }
      return lo < n_ && pos_of(lo) == pos ? lo : n_;
    }
    /// Running top-P (file comment); a displaced pivot outside the window is quantized now.
    void offer_pivot(float score, std::int32_t pos, float* scratch) {
      if (pivots_.size() < max_pivots_) {
        pivots_.push_back({score, pos});
        return;
      }
      std::size_t m = 0;  // lowest score; among equals the latest position
      for (std::size_t i = 1; i < pivots_.size(); ++i)
        if (pivots_[i].score < pivots_[m].score ||
            (pivots_[i].score == pivots_[m].score && pivots_[i].pos > pivots_[m].pos))
          m = i;
      if (!(score > pivots_[m].score)) return;
      const std::int32_t old = pivots_[m].pos;
      pivots_[m] = {score, pos};
      const std::size_t j = find_slot(old);
      if (j < n_ - w_ && slot_class(j) == AkvqClass::kFp16) quantize_fp16(j, scratch);
    }

    /// Frees slot j's side data (fp16 row, pivot entry).
    void drop(std::size_t j) {
      if (slot_class(j) == AkvqClass::kFp16) rows_.release(aux_of(j));
      const std::size_t p = find_pivot(pos_of(j));
      if (p != pivots_.size()) pivots_.erase(pivots_.begin() + static_cast<std::ptrdiff_t>(p));
    }
    void move_slot(std::size_t from, std::size_t to) {
      pos_of(to) = pos_of(from);
      cls_of(to) = cls_of(from);
      aux_of(to) = aux_of(from);
      std::memcpy(key_row(to), key_row(from), geo_.row);
      std::memcpy(value_row(to), value_row(from), geo_.row);
      if (ext_) {
        std::memcpy(key_ext(to), key_ext(from), geo_.plane);
        std::memcpy(value_ext(to), value_ext(from), geo_.plane);
      }
    }

    std::size_t d_, group_;
    Layout geo_;
    bool tsa_, ext_;
    std::size_t window_, max_pivots_;
    float clip_low_, clip_high_;
    BlockTable table_;
    common::Fp16RowPool rows_;
    std::vector<Pivot> pivots_;  // running top-P candidates (PSA)
    std::size_t n_ = 0, w_ = 0;
  };
};

/// AKVQ-VL with the paper's defaults (2-bit, 4-bit TSA text, R = 128, P = 15, group 128).
using AkvqVl = AkvqVlQuant<4>;

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
