// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// CalibQuant — "CalibQuant: 1-Bit KV Cache Quantization for Multimodal LLMs", Insu Han, Zeliang
/// Zhang, Zhiyuan Wang, Yifan Zhu, Susan Liang, Jiani Liu, Haiting Lin, Mingjie Zhao, Chenliang Xu,
/// Kun Wan, Wentian Zhao; arXiv 2502.14882 (2025). methods/quantization.md §4 (reference code
/// insuhan/calibquant at 1dcfce8).
///
/// What it does: tokens labelled kImage / kVideo by the engine (TokenInfo of the six-argument
/// append; labels are never inferred) are quantized to 1 bit per element, per channel over the
/// whole visual span (one group = one maximal run of consecutive tokens of one visual modality),
/// with the range shrunk by α (`lo = α·min`, `hi = α·max`, α_K = 0.5, α_V = 0.3), so every channel
/// reconstructs to exactly {α·min, α·max}. System, text, special and generated tokens stay fp16.
/// Attention over the visual span runs on the raw bits with the post-scaling identities (BB-15,
/// kernels/calibquant.hpp), and the span's pre-softmax logits of every query row are remapped
/// from [m, M] to [m + δ_min, M + δ_max] (calibration, common/logit_calibration.hpp) before the
/// cache's single softmax over all segments.
///
/// Interpretation choices (spec [rec] where it gives one):
/// * Metadata: fp16 scale s and float offset z = lo per (channel, span) for K and for V (the
///   spec's zero-range [rec]: no division by s; x̂ = s·code + z, exact for s = 0).
///   Codes are packed per token along channels, P-CALIB (MSB first), the codes themselves
///   (identity table); `Config::calib_index_lut` reproduces the reference's packing of indices
///   into the table of distinct codes in order of first appearance. For 1 bit that table is
///   {first code, other code}, so the stored bit is code XOR (first code of the span); the flag
///   changes the stored bits only, never the reconstruction. "First" is taken per (layer, KV
///   head) stream (the reference scans its first 10 000 entries of the layer tensor).
/// * When a span is quantized: a span is complete once a token that does not belong to it follows
///   (text after the image, an image→video switch, or the first generated token). Complete spans
///   are quantized at the start of the next append call, and at the end of a single-token append
///   (decode), so a prompt appended in one call is attended with its visual KV still in fp16
///   (the reference's exact prefill) and the 1-bit visual KV is used from the first decode step
///   on. An open span (visual tokens at the end) stays fp16 until it completes.
///   Streamed video (spec [rec]: per frame) needs frame boundaries; without them a run of video
///   tokens is one span; an engine separates frames by labelling a separator token kSpecial.
/// * Calibration: m, M are taken per query row (query head) over the logits of every quantized
///   visual slot of the stream (all spans jointly; the reference has one span), after the
///   1/√d scaling; skipped when (M + δ_max) − (m + δ_min) ≤ 0 unless `calib_always`. Slots that
///   eviction killed inside a span still count towards m, M (the store does not see liveness).
/// * Without modality labels (the five-argument append) every token is text: nothing is
///   quantized. CalibQuant needs no offline data: its "calibration" is the online logit remap, so
///   there is no calibration file and no data-free fallback to document.
/// * Beyond kMaxSegments segments a new visual run is kept in fp16 (as text).
///
/// Storage per (layer, KV head): two chains of pool blocks (all blocks the same size, 512·d
/// bytes) plus a fixed directory (fixed_bytes): the text chain holds fp16 rows (block: 128 key
/// rows then 128 value rows), dense in slot order over text segments (and visual spans still in
/// fp16); the visual chain is a stream of d/4-byte units (key bits d/8 bytes, then value bits
/// d/8 bytes, per token), each quantized span a record of 32 parameter units (s_K[d], z_K[d],
/// s_V[d], z_V[d] fp16 = 8·d bytes) followed by one unit per token. Visual bits per element of a
/// span of N tokens: 1 + 32/N (spec "Storage format"). The directory maps each chain's blocks to
/// pool blocks and lists the segments (first slot, count, chain start, kind).
///
/// Eviction (BB-16): fp16 slots are removed physically; a slot inside a quantized span stays
/// (masked by the cache) until every slot of its span is dead, then the span's record is freed.
/// truncate() inside a span keeps the span's parameters (no other slot changes).

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
#include "kvcompress/kernels/calibquant.hpp"
#include "kvcompress/kernels/convert.hpp"
#include "kvcompress/kernels/dense_attention.hpp"
#include "kvcompress/policies/quant/common/affine_quant.hpp"
#include "kvcompress/policies/quant/common/bit_packing.hpp"
#include "kvcompress/policies/quant/common/logit_calibration.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {

/// CalibQuant: 1-bit visual KV with post-scaling and logit calibration; fp16 for everything else.
/// The paper/reference defaults are the Config defaults (`CalibQuant1Bit`).
struct CalibQuant {
  static constexpr const char* kName = "calibquant";
  /// fp16 rows and fp16 metadata.
  static constexpr float kMaxAbsInput = kHalfMax;
  /// Bits per visual code.
  static constexpr int kBits = 1;
  /// fp16 rows per text block.
  static constexpr std::size_t kTextBlockTokens = 128;
  /// Blocks per chain the directory can map.
  static constexpr std::size_t kMaxChainBlocks = 1024;
  /// Segments (text runs and visual spans) per stream.
  static constexpr std::size_t kMaxSegments = 256;
  /// Parameter units of a span record (8·d bytes = 32 units of d/4 bytes).
  static constexpr std::size_t kParamUnits = 32;
  /// Visual units per block (512·d / (d/4)), independent of d.
  static constexpr std::size_t kUnitsPerBlock = 2048;
  /// Largest capacity the directory supports.
  static constexpr std::size_t kMaxCapacity = kTextBlockTokens * kMaxChainBlocks;

  /// Hyperparameters (defaults: the reference code's constants, spec §4 "Hyperparameters").
  struct Config {
    float alpha_k = 0.5f;     ///< key range shrink α_K ∈ (0, 1]
    float alpha_v = 0.3f;     ///< value range shrink α_V ∈ (0, 1]
    float delta_min = 0.0f;   ///< calibration: the row minimum moves by δ_min
    float delta_max = -3.0f;  ///< calibration: the row maximum moves by δ_max
    bool calibrate = true;    ///< apply the logit remap (b ≤ 2 in the reference: always for 1 bit)
    bool calib_always = false;     ///< reference: remap even when the target width is ≤ 0
    bool calib_index_lut = false;  ///< reference: store indices into the first-appearance table

    void validate(const CacheShape& shape) const {
      const char* where = "quant::CalibQuant";
      kvcompress::detail::require(alpha_k > 0.0f && alpha_k <= 1.0f, where, "alpha_k", alpha_k, "in (0, 1]");
      kvcompress::detail::require(alpha_v > 0.0f && alpha_v <= 1.0f, where, "alpha_v", alpha_v, "in (0, 1]");
      kvcompress::detail::require(std::isfinite(delta_min), where, "delta_min", delta_min, "a finite value");
      kvcompress::detail::require(std::isfinite(delta_max), where, "delta_max", delta_max, "a finite value");
      kvcompress::detail::require(shape.head_dim % 8 == 0 && shape.head_dim <= kernels::kCalibQuantMaxDim, where,
                                  "head_dim", shape.head_dim, "a multiple of 8 and <= 256");
      kvcompress::detail::require(shape.capacity <= kMaxCapacity, where, "capacity", shape.capacity,
                                  "<= " + std::to_string(kMaxCapacity) + " slots per stream");
    }
  };

  /// One directory entry: a run of consecutive slots of one kind.
  struct Segment {
    std::uint32_t first;  ///< first slot
    std::uint32_t count;  ///< slots
    std::uint32_t start;  ///< text: first text row; visual: first unit of the record
    std::uint8_t kind;    ///< kText, kPending (visual, still fp16) or kVisual (1-bit)
    std::uint8_t mod;     ///< Modality of a (pending) visual span
    std::uint8_t kflip;   ///< calib_index_lut: stored key bit = code XOR kflip
    std::uint8_t vflip;   ///< same for values
  };
  static constexpr std::uint8_t kText = 0, kPending = 1, kVisual = 2;

  class Store {
   public:
    static std::size_t block_tokens(const Config&) { return kTextBlockTokens; }
    static std::size_t block_bytes(int d, const Config&) { return 512 * static_cast<std::size_t>(d); }
    /// Text rows ≤ capacity; visual units ≤ capacity + one record header per segment; one block
    /// of slack per chain for the moment a span exists both as fp16 rows and as codes.
    static std::size_t max_blocks(std::size_t capacity, const Config&) {
      return (capacity + kTextBlockTokens - 1) / kTextBlockTokens +
             (capacity + kParamUnits * kMaxSegments + kUnitsPerBlock - 1) / kUnitsPerBlock + 2;
    }
    /// The directory: two chain maps and the segment list.
    static std::size_t fixed_bytes(int, const Config&) {
      return 2 * kMaxChainBlocks * sizeof(std::uint32_t) + kMaxSegments * sizeof(Segment);
    }
    /// Per-channel min/max of K and V (4·d) and one K and one V row (2·d).
    static std::size_t scratch_floats(int d, const Config&) { return 6 * static_cast<std::size_t>(d); }

    Store(int d, const Config& cfg, BlockTable table)
        : d_(d), cfg_(cfg), table_(std::move(table)), text_ids_(kMaxChainBlocks), vis_ids_(kMaxChainBlocks),
          segs_(kMaxSegments) {}

    // ---- inspection ------------------------------------------------------------------------
    std::size_t size() const { return n_; }
    std::size_t num_segments() const { return nseg_; }
    const Segment& segment(std::size_t i) const { return segs_[i]; }
    /// Slots held as 1-bit codes / as fp16 visual tokens awaiting their span's end.
    std::size_t quantized_slots() const { return count_kind(kVisual); }
    std::size_t pending_slots() const { return count_kind(kPending); }
    std::size_t text_rows() const { return text_rows_; }
    std::size_t visual_units() const { return vis_units_; }
    std::size_t text_blocks() const { return n_text_; }
    std::size_t visual_blocks() const { return n_vis_; }
    /// Bytes of one visual unit (one token's key and value bits).
    std::size_t unit_bytes() const { return ud() / 4; }

    // ---- append ----------------------------------------------------------------------------
    /// Without labels every token is text (kept fp16).
    void append(const float* k, const float* v, std::size_t ld, std::size_t n, float* scratch) {
      append(k, v, ld, n, TokenInfo{}, scratch);
    }

    void append(const float* k, const float* v, std::size_t ld, std::size_t n, const TokenInfo& info,
                float* scratch) {
      settle(scratch);
      for (std::size_t t = 0; t < n; ++t) {
        const Modality m = info.mod ? info.mod[t] : Modality::kText;
        const bool visual = m == Modality::kImage || m == Modality::kVideo;
        Segment* last = nseg_ ? &segs_[nseg_ - 1] : nullptr;
        bool as_text = true;
        if (visual) {
          if (last && last->kind == kPending && last->mod == static_cast<std::uint8_t>(m)) {
            as_text = false;
          } else if (nseg_ + 2 <= kMaxSegments) {
            segs_[nseg_++] = Segment{static_cast<std::uint32_t>(n_), 0, static_cast<std::uint32_t>(text_rows_),
                                     kPending, static_cast<std::uint8_t>(m), 0, 0};
            as_text = false;
          }
        }
        if (as_text && !(last && last->kind == kText))
          segs_[nseg_++] = Segment{static_cast<std::uint32_t>(n_), 0, static_cast<std::uint32_t>(text_rows_),
                                   kText, 0, 0, 0};
        grow_text(text_rows_ + 1);
        kernels::convert(k + t * ld, text_k(text_rows_), ud(), best_isa{});
        kernels::convert(v + t * ld, text_v(text_rows_), ud(), best_isa{});
        ++text_rows_;
        ++segs_[nseg_ - 1].count;
        ++n_;
      }
      if (n == 1) settle(scratch);
    }

    // ---- attention -------------------------------------------------------------------------
    void logits(const float* q, int rows, float* out, std::size_t ldl) const {
      float s[kernels::kCalibQuantMaxDim], z[kernels::kCalibQuantMaxDim];
      bool any_visual = false;
      for (std::size_t i = 0; i < nseg_; ++i) {
        const Segment& g = segs_[i];
        if (g.kind != kVisual) {
          for_text_runs(g, [&](std::size_t row, std::size_t off, std::size_t cnt) {
            kernels::dense_logits(text_k(row), ud(), cnt, d_, q, rows, out + g.first + off, ldl, best_isa{});
          });
          continue;
        }
        any_visual = true;
        load_params(g, /*value=*/false, s, z);
        for_unit_runs(g, [&](const std::uint8_t* u, std::size_t off, std::size_t cnt) {
          kernels::calibquant_key_logits(u, unit_bytes(), cnt, d_, s, z, q, rows, out + g.first + off, ldl,
                                         best_isa{});
        });
      }
      if (any_visual && cfg_.calibrate) calibrate(rows, out, ldl);
    }

    void accumulate(const float* p, std::size_t ldp, int rows, float* out) const {
      float s[kernels::kCalibQuantMaxDim], z[kernels::kCalibQuantMaxDim];
      for (std::size_t i = 0; i < nseg_; ++i) {
        const Segment& g = segs_[i];
        if (g.kind != kVisual) {
          for_text_runs(g, [&](std::size_t row, std::size_t off, std::size_t cnt) {
            kernels::dense_accumulate(text_v(row), ud(), cnt, d_, p + g.first + off, ldp, rows, out, best_isa{});
          });
          continue;
        }
        load_params(g, /*value=*/true, s, z);
        for_unit_runs(g, [&](const std::uint8_t* u, std::size_t off, std::size_t cnt) {
          kernels::calibquant_value_accumulate(u + ud() / 8, unit_bytes(), cnt, d_, s, z, p + g.first + off, ldp,
                                               rows, out, best_isa{});
        });
      }
    }

    // ---- maintenance -----------------------------------------------------------------------
    /// Dequantized contents of slots [j0, j1): x̂ = s16·code + z16 for visual slots, fp16 rows
    /// otherwise.
    void read(std::size_t j0, std::size_t j1, float* k, float* v, std::size_t ld, float*) const {
      float sk[kernels::kCalibQuantMaxDim], zk[kernels::kCalibQuantMaxDim];
      float sv[kernels::kCalibQuantMaxDim], zv[kernels::kCalibQuantMaxDim];
      std::size_t loaded = SIZE_MAX;
      for (std::size_t j = j0; j < j1; ++j) {
        const std::size_t i = segment_of(j);
        const Segment& g = segs_[i];
        float* kd = k + (j - j0) * ld;
        float* vd = v + (j - j0) * ld;
        const std::size_t off = j - g.first;
        if (g.kind != kVisual) {
          kernels::convert(text_k(g.start + off), kd, ud(), best_isa{});
          kernels::convert(text_v(g.start + off), vd, ud(), best_isa{});
          continue;
        }
        if (loaded != i) {
          load_params(g, false, sk, zk);
          load_params(g, true, sv, zv);
          loaded = i;
        }
        const std::uint8_t* u = unit(g.start + kParamUnits + off);
        for (int c = 0; c < d_; ++c) {
          kd[c] = static_cast<float>(kernels::calibquant_bit(u, c)) * sk[c] + zk[c];
          vd[c] = static_cast<float>(kernels::calibquant_bit(u + ud() / 8, c)) * sv[c] + zv[c];
        }
      }
    }

    /// A quantized span is retained whole if any of its slots is kept; other slots iff kept.
    std::size_t plan_compact(const std::uint8_t* keep, std::uint8_t* retained) const {
      std::size_t count = 0;
      for (std::size_t i = 0; i < nseg_; ++i) {
        const Segment& g = segs_[i];
        const std::size_t a = g.first, b = g.first + g.count;
        if (g.kind == kVisual) {
          const bool any = std::any_of(keep + a, keep + b, [](std::uint8_t x) { return x != 0; });
          std::fill(retained + a, retained + b, static_cast<std::uint8_t>(any));
          count += any ? g.count : 0;
        } else {
          for (std::size_t j = a; j < b; ++j) count += (retained[j] = keep[j] ? 1 : 0);
        }
      }
      return count;
    }

    void compact(const std::uint8_t* retained, float*) {
      std::size_t slot = 0, row = 0, units = 0, ns = 0;
      for (std::size_t i = 0; i < nseg_; ++i) {
        const Segment g = segs_[i];
        Segment out = g;
        out.first = static_cast<std::uint32_t>(slot);
        out.count = 0;
        if (g.kind == kVisual) {
          if (!retained[g.first]) continue;
          const std::size_t len = kParamUnits + g.count;
          for (std::size_t u = 0; u < len; ++u)
            if (units + u != g.start + u) std::memcpy(unit(units + u), unit(g.start + u), unit_bytes());
          out.start = static_cast<std::uint32_t>(units);
          out.count = g.count;
          units += len;
        } else {
          out.start = static_cast<std::uint32_t>(row);
          for (std::size_t o = 0; o < g.count; ++o) {
            if (!retained[g.first + o]) continue;
            if (row != g.start + o) {
              std::memcpy(text_k(row), text_k(g.start + o), ud() * sizeof(half));
              std::memcpy(text_v(row), text_v(g.start + o), ud() * sizeof(half));
            }
            ++row;
            ++out.count;
          }
          if (out.count == 0) continue;
          Segment* prev = ns ? &segs_[ns - 1] : nullptr;
          if (prev && prev->kind == out.kind && (out.kind == kText || prev->mod == out.mod)) {
            prev->count += out.count;
            slot += out.count;
            continue;
          }
        }
        slot += out.count;
        segs_[ns++] = out;
      }
      nseg_ = ns;
      n_ = slot;
      text_rows_ = row;
      vis_units_ = units;
      trim_blocks();
    }

    void truncate(std::size_t m, float*) {
      if (m >= n_) return;
      std::size_t ns = 0, rows = 0, units = 0;
      for (std::size_t i = 0; i < nseg_; ++i) {
        Segment& g = segs_[i];
        if (g.first >= m) break;
        g.count = static_cast<std::uint32_t>(std::min<std::size_t>(g.count, m - g.first));
        if (g.kind == kVisual) units = g.start + kParamUnits + g.count;
        else rows = g.start + g.count;
        ns = i + 1;
      }
      nseg_ = ns;
      n_ = m;
      text_rows_ = rows;
      vis_units_ = units;
      trim_blocks();
    }

    void clear() {
      n_ = nseg_ = text_rows_ = vis_units_ = n_text_ = n_vis_ = 0;
      table_.shrink_to(0);
    }

    std::size_t memory_bytes() const {
      return table_.size() * block_bytes(d_, cfg_) + fixed_bytes(d_, cfg_);
    }

   private:
    std::size_t ud() const { return static_cast<std::size_t>(d_); }
    std::size_t bb() const { return block_bytes(d_, cfg_); }

    std::size_t count_kind(std::uint8_t kind) const {
      std::size_t c = 0;
      for (std::size_t i = 0; i < nseg_; ++i) c += segs_[i].kind == kind ? segs_[i].count : 0;
      return c;
    }
    std::size_t segment_of(std::size_t j) const {
      std::size_t i = 0;
      while (i + 1 < nseg_ && segs_[i + 1].first <= j) ++i;
      return i;
    }

    half* text_k(std::size_t row) {
      return reinterpret_cast<half*>(table_.block(text_ids_[row / kTextBlockTokens])) + (row % kTextBlockTokens) * ud();
    }
    const half* text_k(std::size_t row) const {
      return reinterpret_cast<const half*>(table_.block(text_ids_[row / kTextBlockTokens])) +
             (row % kTextBlockTokens) * ud();
    }
    half* text_v(std::size_t row) { return text_k(row) + kTextBlockTokens * ud(); }
    const half* text_v(std::size_t row) const { return text_k(row) + kTextBlockTokens * ud(); }
    std::uint8_t* unit(std::size_t u) {
      return reinterpret_cast<std::uint8_t*>(table_.block(vis_ids_[u / kUnitsPerBlock])) + (u % kUnitsPerBlock) * unit_bytes();
    }
    const std::uint8_t* unit(std::size_t u) const {
      return reinterpret_cast<const std::uint8_t*>(table_.block(vis_ids_[u / kUnitsPerBlock])) +
             (u % kUnitsPerBlock) * unit_bytes();
    }

    /// f(first_row, offset_in_segment, count) over block-contiguous runs of a text segment.
    template <class F>
    void for_text_runs(const Segment& g, F&& f) const {
      for (std::size_t o = 0; o < g.count;) {
        const std::size_t row = g.start + o;
        const std::size_t cnt = std::min<std::size_t>(g.count - o, kTextBlockTokens - row % kTextBlockTokens);
        f(row, o, cnt);
        o += cnt;
      }
    }
    /// f(units, offset_in_segment, count) over block-contiguous runs of a span's code units.
    template <class F>
    void for_unit_runs(const Segment& g, F&& f) const {
      for (std::size_t o = 0; o < g.count;) {
        const std::size_t u = g.start + kParamUnits + o;
        const std::size_t cnt = std::min<std::size_t>(g.count - o, kUnitsPerBlock - u % kUnitsPerBlock);
        f(unit(u), o, cnt);
        o += cnt;
      }
    }

    /// Byte b of a span record's parameter area (which may straddle two blocks).
    std::uint8_t* param_byte(const Segment& g, std::size_t b) { return unit(g.start + b / unit_bytes()) + b % unit_bytes(); }
    const std::uint8_t* param_byte(const Segment& g, std::size_t b) const {
      return unit(g.start + b / unit_bytes()) + b % unit_bytes();
    }
    half param(const Segment& g, std::size_t idx) const {
      std::uint8_t b[2] = {*param_byte(g, 2 * idx), *param_byte(g, 2 * idx + 1)};
      half h;
      std::memcpy(&h, b, 2);
      return h;
    }
    void set_param(const Segment& g, std::size_t idx, half h) {
      std::uint8_t b[2];
      std::memcpy(b, &h, 2);
      *param_byte(g, 2 * idx) = b[0];
      *param_byte(g, 2 * idx + 1) = b[1];
    }
    /// fp32 (s, z) of the span's keys or values such that x̂ = s·bit + z for the stored bit (the
    /// index-table flip folded in: code = bit XOR flip).
    void load_params(const Segment& g, bool value, float* s, float* z) const {
      const std::size_t base = value ? 2 * ud() : 0;
      const bool flip = (value ? g.vflip : g.kflip) != 0;
      for (int c = 0; c < d_; ++c) {
        const float sc = to_float(param(g, base + static_cast<std::size_t>(c)));
        const float zc = to_float(param(g, base + ud() + static_cast<std::size_t>(c)));
        s[c] = flip ? -sc : sc;
        z[c] = flip ? sc + zc : zc;
      }
    }

    std::size_t acquire() {
      table_.grow_to(table_.size() + 1);
      return table_.size() - 1;
    }
    /// Frees table position pos: the last block moves into it (contents and directory entry).
    void release(std::size_t pos) {
      const std::size_t last = table_.size() - 1;
      if (pos != last) {
        std::memcpy(table_.block(pos), table_.block(last), bb());
        for (std::size_t i = 0; i < n_text_; ++i)
          if (text_ids_[i] == last) text_ids_[i] = static_cast<std::uint32_t>(pos);
        for (std::size_t i = 0; i < n_vis_; ++i)
          if (vis_ids_[i] == last) vis_ids_[i] = static_cast<std::uint32_t>(pos);
      }
      table_.shrink_to(last);
    }
    void grow_text(std::size_t rows) {
      while (n_text_ * kTextBlockTokens < rows) text_ids_[n_text_++] = static_cast<std::uint32_t>(acquire());
    }
    void grow_units(std::size_t units) {
      while (n_vis_ * kUnitsPerBlock < units) vis_ids_[n_vis_++] = static_cast<std::uint32_t>(acquire());
    }
    void trim_blocks() {
      while (n_text_ > (text_rows_ + kTextBlockTokens - 1) / kTextBlockTokens) release(text_ids_[--n_text_]);
      while (n_vis_ > (vis_units_ + kUnitsPerBlock - 1) / kUnitsPerBlock) release(vis_ids_[--n_vis_]);
    }

    /// Quantizes every complete pending span (one followed by another segment).
    void settle(float* scratch) {
      for (std::size_t i = 0; i + 1 < nseg_; ++i)
        if (segs_[i].kind == kPending) quantize_span(i, scratch);
    }

    void quantize_span(std::size_t i, float* scratch) {
      Segment& g = segs_[i];
      const std::size_t N = g.count, r0 = g.start;
      float* lo_k = scratch;
      float* hi_k = lo_k + ud();
      float* lo_v = hi_k + ud();
      float* hi_v = lo_v + ud();
      float* xk = hi_v + ud();
      float* xv = xk + ud();
      for (std::size_t t = 0; t < N; ++t) {
        kernels::convert(text_k(r0 + t), xk, ud(), best_isa{});
        kernels::convert(text_v(r0 + t), xv, ud(), best_isa{});
        for (int c = 0; c < d_; ++c) {
          lo_k[c] = t ? std::min(lo_k[c], xk[c]) : xk[c];
          hi_k[c] = t ? std::max(hi_k[c], xk[c]) : xk[c];
          lo_v[c] = t ? std::min(lo_v[c], xv[c]) : xv[c];
          hi_v[c] = t ? std::max(hi_v[c], xv[c]) : xv[c];
        }
      }
      const std::size_t u0 = vis_units_;
      grow_units(u0 + kParamUnits + N);
      Segment rec = g;
      rec.start = static_cast<std::uint32_t>(u0);
      // Metadata first (BB-1 [rec]: codes use the fp16-rounded s and z).
      for (int c = 0; c < d_; ++c) {
        const std::size_t uc = static_cast<std::size_t>(c);
        const common::AffineParams pk =
            common::affine_params({cfg_.alpha_k * lo_k[c], cfg_.alpha_k * hi_k[c]}, kBits);
        const common::AffineParams pv =
            common::affine_params({cfg_.alpha_v * lo_v[c], cfg_.alpha_v * hi_v[c]}, kBits);
        set_param(rec, uc, pk.scale);
        set_param(rec, ud() + uc, pk.zero);
        set_param(rec, 2 * ud() + uc, pv.scale);
        set_param(rec, 3 * ud() + uc, pv.zero);
        lo_k[c] = to_float(pk.zero);
        hi_k[c] = common::affine_inverse_scale(to_float(pk.scale));
        lo_v[c] = to_float(pv.zero);
        hi_v[c] = common::affine_inverse_scale(to_float(pv.scale));
      }
      std::uint8_t ck[kernels::kCalibQuantMaxDim], cv[kernels::kCalibQuantMaxDim];
      for (std::size_t t = 0; t < N; ++t) {
        kernels::convert(text_k(r0 + t), xk, ud(), best_isa{});
        kernels::convert(text_v(r0 + t), xv, ud(), best_isa{});
        for (int c = 0; c < d_; ++c) {
          ck[c] = common::affine_code(xk[c], lo_k[c], hi_k[c], kBits);
          cv[c] = common::affine_code(xv[c], lo_v[c], hi_v[c], kBits);
        }
        if (t == 0 && cfg_.calib_index_lut) {
          rec.kflip = ck[0];
          rec.vflip = cv[0];
        }
        for (int c = 0; c < d_; ++c) {
          ck[c] ^= rec.kflip;
          cv[c] ^= rec.vflip;
        }
        std::uint8_t* u = unit(u0 + kParamUnits + t);
        common::pack_pcalib(ck, ud(), kBits, u);
        common::pack_pcalib(cv, ud(), kBits, u + ud() / 8);
      }
      // Drop the span's fp16 rows: later text rows move down by N.
      for (std::size_t r = r0 + N; r < text_rows_; ++r) {
        std::memcpy(text_k(r - N), text_k(r), ud() * sizeof(half));
        std::memcpy(text_v(r - N), text_v(r), ud() * sizeof(half));
      }
      for (std::size_t j = i + 1; j < nseg_; ++j)
        if (segs_[j].kind != kVisual) segs_[j].start -= static_cast<std::uint32_t>(N);
      text_rows_ -= N;
      vis_units_ = u0 + kParamUnits + N;
      rec.kind = kVisual;
      g = rec;
      trim_blocks();
    }

    /// Logit-range calibration of every row over the quantized visual slots (file comment).
    void calibrate(int rows, float* out, std::size_t ldl) const {
      for (int r = 0; r < rows; ++r) {
        float* row = out + static_cast<std::size_t>(r) * ldl;
        float m = INFINITY, M = -INFINITY;
        for (std::size_t i = 0; i < nseg_; ++i) {
          const Segment& g = segs_[i];
          if (g.kind != kVisual) continue;
          for (std::size_t j = g.first; j < g.first + g.count; ++j) {
            m = std::min(m, row[j]);
            M = std::max(M, row[j]);
          }
        }
        const common::LogitRemap f = common::logit_remap(m, M, cfg_.delta_min, cfg_.delta_max, cfg_.calib_always);
        if (!f.active) continue;
        for (std::size_t i = 0; i < nseg_; ++i) {
          const Segment& g = segs_[i];
          if (g.kind != kVisual) continue;
          for (std::size_t j = g.first; j < g.first + g.count; ++j) row[j] = f(row[j]);
        }
      }
    }

    int d_;
    Config cfg_;
    BlockTable table_;
    std::vector<std::uint32_t> text_ids_, vis_ids_;  // chain block → table position
    std::vector<Segment> segs_;
    std::size_t n_ = 0, nseg_ = 0, text_rows_ = 0, vis_units_ = 0, n_text_ = 0, n_vis_ = 0;
  };
};

/// CalibQuant with the paper/reference defaults (1 bit, α_K = 0.5, α_V = 0.3, δ = (0, −3)).
using CalibQuant1Bit = CalibQuant;

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
