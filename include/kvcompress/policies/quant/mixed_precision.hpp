// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Two-tier token-wise quantization store: every token is encoded at one of two bit widths chosen
/// by the eviction axis (core/precision_tier.hpp). This is the KV half of ZipVL — "ZipVL:
/// Efficient Large Vision-Language Models with Dynamic Token Sparsification and KV Cache
/// Compression", He et al., arXiv 2410.08584 (eviction spec §7 step 5: important tokens T at
/// b_h = 4 bits, the others U at b_l = 2 bits; step 6: decode tokens are decided in batches) —
/// whose quantizer follows its lineage ZipCache ("ZipCache: Accurate and Efficient KV Cache
/// Quantization with Salient Token Identification", He et al., arXiv 2405.14256, §4.2).
///
/// Interpretation (neither paper publishes code; eviction spec §7 "Gaps": quantizer details follow
/// ZipCache/KIVI conventions):
/// * Channel-separable token-wise quantization (our reading of ZipCache §4.2): keys are divided
///   channel-wise by c_i = sqrt(max_t |K[t][i]|) (c_i = 1 where that maximum is 0), then the
///   normalised key row and the value row are each quantized per token in channel groups of
///   Group, asymmetric min–max with fp16 scale and minimum at the tier's bit width (KIVI's value
///   row format and kernels, kernels/cpu/scalar/kivi.hpp). Attention folds c into the query:
///   q·(c∘k̂) = (q∘c)·k̂. c is computed once, at the store's first encode, over every row the store
///   holds or is being given then (in a cache: the whole kept prompt at end_prefill), and is reset
///   when the store becomes empty. Normalised keys are clamped to ±kHalfMax/2 so the fp16 metadata
///   stays finite for a later key far above its channel's prompt maximum (a guard; no effect on
///   keys within 32752·c_i).
/// * Group = 32 channels (KIVI's G; ZipCache's token-wise group size is not stated in the spec).
/// * Pending tokens: a token whose tier is not decided yet (kPending) waits in an fp16 window of
///   Config::window slots (default 128). Slots keep their order: encoded rows form the prefix
///   [0, encoded()), the window holds [encoded(), size()). Leading window slots whose tier is
///   decided are encoded as soon as they reach the front; when an append would overflow the
///   window, its oldest slots are encoded first, a still-pending one at the high tier (fallback:
///   no policy decided, keep the better precision). Deciding a tier is the policy's business: the
///   store receives tiers with each appended token (TokenInfo::tier) and, before each append,
///   for every slot (apply_tiers; tiers of encoded slots are ignored — an encoded row never
///   changes precision).
///
/// Storage per (layer, KV head): BlockTable blocks sized for B = 64 high-tier rows:
///   [header: u32 row count, one tier byte per possible row (max rows = K region / low row bytes),
///    padded to 64][K region: B × high row bytes, padded to 64][V region: same size]
/// Rows are packed in slot order; a row's K bytes sit at an offset computed from the tiers of the
/// rows before it in its block and its V bytes at the same offset of the V region, so runs of
/// equal tier are contiguous in both regions. A row that does not fit starts the next block (rows
/// never straddle blocks), so low-tier rows pack about HighBits/LowBits times denser and memory
/// really shrinks; max_blocks covers the all-high worst case. Window rings (fp16 K and V plus one
/// tier byte per slot) and c (d floats) are fixed per stream.
///
/// Eviction (BB-16): every slot is independent, so evicted slots are removed physically;
/// compaction repacks the surviving rows forward (no re-quantization, no precision change).

#include <algorithm>
#include <cassert>
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
#include "kvcompress/core/precision_tier.hpp"
#include "kvcompress/core/token_info.hpp"
#include "kvcompress/kernels/convert.hpp"
#include "kvcompress/kernels/dense_attention.hpp"
#include "kvcompress/kernels/kivi.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {

/// Two-tier token-wise store: kHigh tokens at HighBits, kLow tokens at LowBits (each 2, 4 or 8,
/// LowBits ≤ HighBits), channel groups of Group (a multiple of 32/LowBits dividing head_dim).
/// Paper defaults: `MixedPrecision<4, 2, 32>` = ZipVLMixed.
template <int HighBits = 4, int LowBits = 2, int Group = 32>
struct MixedPrecision {
  static_assert(HighBits == 2 || HighBits == 4 || HighBits == 8, "quant::MixedPrecision: HighBits must be 2, 4 or 8");
  static_assert(LowBits == 2 || LowBits == 4 || LowBits == 8, "quant::MixedPrecision: LowBits must be 2, 4 or 8");
  static_assert(LowBits <= HighBits, "quant::MixedPrecision: LowBits must not exceed HighBits");
  static_assert(Group > 0 && Group % (32 / LowBits) == 0,
                "quant::MixedPrecision: Group must be a positive multiple of 32/LowBits (packed code words)");

  static constexpr const char* kName =
      HighBits == 4 && LowBits == 2 && Group == 32 ? "zipvl_mixed" : "mixed_precision";
  static constexpr int kHighBits = HighBits;
  static constexpr int kLowBits = LowBits;
  static constexpr int kGroup = Group;
  /// The store takes per-token tiers (TokenInfo::tier) and apply_tiers().
  static constexpr bool kPrecisionTiers = true;
  /// Window rows and quantization metadata are fp16.
  static constexpr float kMaxAbsInput = kHalfMax;
  /// Largest head_dim the stack buffers of logits() cover (CacheShape allows up to 256).
  static constexpr int kMaxHeadDim = 256;

  struct Config {
    std::size_t window = 128;  ///< fp16 slots waiting for a tier decision (≥ 1)

    void validate(const CacheShape& shape) const {
      constexpr const char* where = "quant::MixedPrecision";
      kvcompress::detail::require(window >= 1, where, "window", window, ">= 1");
      kvcompress::detail::require(shape.head_dim % Group == 0 && shape.head_dim <= kMaxHeadDim, where, "head_dim",
                                  shape.head_dim,
                                  "a multiple of the channel group " + std::to_string(Group) + " and <= " +
                                      std::to_string(kMaxHeadDim));
    }
  };

  class Store {
   public:
    /// High-tier rows per block (the all-high worst case).
    static constexpr std::size_t kBlockRows = 64;

    static std::size_t block_tokens(const Config&) { return kBlockRows; }
    static std::size_t block_bytes(int d, const Config&) { return geometry(d).block; }
    static std::size_t max_blocks(std::size_t capacity, const Config&) {
      return (capacity + kBlockRows - 1) / kBlockRows;
    }
    /// fp16 K and V window rings, one tier byte per window slot, c as d floats.
    static std::size_t fixed_bytes(int d, const Config& cfg) {
      const std::size_t ud = static_cast<std::size_t>(d);
      return cfg.window * (2 * ud * sizeof(half) + sizeof(PrecisionTier)) + ud * sizeof(float);
    }
    static std::size_t scratch_floats(int d, const Config&) { return static_cast<std::size_t>(d); }

    Store(int d, const Config& cfg, BlockTable table)
        : d_(d), window_(cfg.window), geo_(geometry(d)), table_(std::move(table)),
          ring_k_(cfg.window * static_cast<std::size_t>(d)), ring_v_(cfg.window * static_cast<std::size_t>(d)),
          ring_tier_(cfg.window, PrecisionTier::kPending), c_(static_cast<std::size_t>(d), 1.0f) {}

    /// Slots held.
    std::size_t size() const { return n_; }
    /// Slots encoded (the prefix [0, encoded())); the rest wait in the fp16 window.
    std::size_t encoded() const { return ne_; }
    /// Tier of slot j: the one it is encoded at, or its current (possibly pending) window tier.
    PrecisionTier tier(std::size_t j) const {
      if (j >= ne_) return ring_tier_[ring_index(j)];
      PrecisionTier t = PrecisionTier::kPending;
      for_runs(j, j + 1, [&](const std::uint8_t*, const std::uint8_t*, PrecisionTier rt, std::size_t, std::size_t) {
        t = rt;
      });
      return t;
    }
    /// Key channel scales c (meaningful once encoded() > 0).
    const float* key_scales() const { return c_.data(); }

    void append(const float* k, const float* v, std::size_t ld, std::size_t n, float* scratch) {
      append(k, v, ld, n, TokenInfo{}, scratch);
    }

    void append(const float* k, const float* v, std::size_t ld, std::size_t n, const TokenInfo& info,
                float* scratch) {
      const auto tier_of = [&](std::size_t t) { return info.tier ? info.tier[t] : PrecisionTier::kPending; };
      if (!c_ready_ && n > 0) {
        // The first encode happens in this call iff the first slot of (window, incoming) is decided
        // or the window overflows (a pending front leaves only by overflow).
        const bool front_decided = n_ > ne_ ? ring_tier_[ring_base_] != PrecisionTier::kPending
                                            : tier_of(0) != PrecisionTier::kPending;
        if (front_decided || (n_ - ne_) + n > window_) compute_scales(k, ld, n, scratch);
      }
      drain(scratch);
      for (std::size_t t = 0; t < n; ++t) {
        if (n_ - ne_ == window_) encode_front(scratch);
        const std::size_t r = ring_index(n_);
        kernels::convert(k + t * ld, ring_k_.data() + r * ud(), ud(), best_isa{});
        kernels::convert(v + t * ld, ring_v_.data() + r * ud(), ud(), best_isa{});
        ring_tier_[r] = tier_of(t);
        ++n_;
        drain(scratch);
      }
    }

    /// Takes tier[j] for every slot j in [0, size()): window slots adopt it, and the decided
    /// front of the window is encoded. O(window).
    void apply_tiers(const PrecisionTier* tier, float* scratch) {
      if (tier == nullptr) return;
      for (std::size_t j = ne_; j < n_; ++j) ring_tier_[ring_index(j)] = tier[j];
      if (!c_ready_ && n_ > ne_ && ring_tier_[ring_base_] != PrecisionTier::kPending)
        compute_scales(nullptr, 0, 0, scratch);
      drain(scratch);
    }

    void logits(const float* q, int rows, float* out, std::size_t ldl) const {
      assert(rows >= 1 && rows <= kernels::kKiviMaxRows && d_ <= kMaxHeadDim);
      if (ne_ > 0) {
        float qc[kernels::kKiviMaxRows * kMaxHeadDim];  // q∘c
        float rows_buf[kDequantRows * kMaxHeadDim];      // dequantized normalised keys
        for (int r = 0; r < rows; ++r)
          for (std::size_t i = 0; i < ud(); ++i) qc[r * ud() + i] = q[r * ud() + i] * c_[i];
        for_runs(0, ne_, [&](const std::uint8_t* kp, const std::uint8_t*, PrecisionTier t, std::size_t j,
                             std::size_t cnt) {
          const std::size_t rb = row_bytes(t);
          for (std::size_t a = 0; a < cnt; a += kDequantRows) {
            const std::size_t m = std::min(kDequantRows, cnt - a);
            kernels::kivi_dequantize_value_rows(kp + a * rb, m, d_, Group, bits(t), rows_buf, ud(), best_isa{});
            kernels::dense_logits(rows_buf, ud(), m, d_, qc, rows, out + j + a, ldl, best_isa{});
          }
        });
      }
      for_window([&](const half* k, const half*, std::size_t j, std::size_t cnt) {
        kernels::dense_logits(k, ud(), cnt, d_, q, rows, out + j, ldl, best_isa{});
      });
    }

    void accumulate(const float* p, std::size_t ldp, int rows, float* out) const {
      for_runs(0, ne_, [&](const std::uint8_t*, const std::uint8_t* vp, PrecisionTier t, std::size_t j,
                           std::size_t cnt) {
        kernels::kivi_value_accumulate(vp, cnt, d_, Group, bits(t), p + j, ldp, rows, out, best_isa{});
      });
      for_window([&](const half*, const half* v, std::size_t j, std::size_t cnt) {
        kernels::dense_accumulate(v, ud(), cnt, d_, p + j, ldp, rows, out, best_isa{});
      });
    }

    /// Rows [j0, j1): encoded keys are c∘k̂ (dequantized), window rows their fp16 input.
    void read(std::size_t j0, std::size_t j1, float* k, float* v, std::size_t ld, float*) const {
      for_runs(j0, std::min(j1, ne_), [&](const std::uint8_t* kp, const std::uint8_t* vp, PrecisionTier t,
                                          std::size_t j, std::size_t cnt) {
        float* kd = k + (j - j0) * ld;
        kernels::kivi_dequantize_value_rows(kp, cnt, d_, Group, bits(t), kd, ld, best_isa{});
        kernels::kivi_dequantize_value_rows(vp, cnt, d_, Group, bits(t), v + (j - j0) * ld, ld, best_isa{});
        for (std::size_t a = 0; a < cnt; ++a)
          for (std::size_t i = 0; i < ud(); ++i) kd[a * ld + i] *= c_[i];
      });
      for (std::size_t j = std::max(j0, ne_); j < j1; ++j) {
        kernels::convert(ring_k_.data() + ring_index(j) * ud(), k + (j - j0) * ld, ud(), best_isa{});
        kernels::convert(ring_v_.data() + ring_index(j) * ud(), v + (j - j0) * ld, ud(), best_isa{});
      }
    }

    /// Token-wise storage: every slot is retained iff kept.
    std::size_t plan_compact(const std::uint8_t* keep, std::uint8_t* retained) const {
      std::size_t count = 0;
      for (std::size_t j = 0; j < n_; ++j) {
        retained[j] = keep[j] ? 1 : 0;
        count += retained[j];
      }
      return count;
    }

    /// Repacks the retained encoded rows forward (a destination never lies after its source, so
    /// one forward pass with memmove suffices) and compacts the window inside its ring.
    void compact(const std::uint8_t* retained, float*) {
      std::size_t src = 0, ne = 0, dst_b = 0, dst_rows = 0, dst_used = 0;
      for (std::size_t b = 0; b < table_.size(); ++b) {
        std::uint8_t* blk = block(b);
        const std::uint32_t cnt = row_count(blk);  // read before any header of this block is rewritten
        std::size_t off = 0;
        for (std::uint32_t i = 0; i < cnt; ++i, ++src) {
          const auto t = static_cast<PrecisionTier>(blk[kCountBytes + i]);
          const std::size_t rb = row_bytes(t);
          if (retained[src]) {
            if (dst_used + rb > geo_.region) {
              set_row_count(block(dst_b), dst_rows);
              ++dst_b;
              dst_rows = dst_used = 0;
            }
            std::uint8_t* dst = block(dst_b);
            if (dst != blk || dst_used != off) {
              std::memmove(dst + geo_.k_off + dst_used, blk + geo_.k_off + off, rb);
              std::memmove(dst + geo_.v_off + dst_used, blk + geo_.v_off + off, rb);
            }
            dst[kCountBytes + dst_rows] = static_cast<std::uint8_t>(t);  // index ≤ i: already read
            ++dst_rows;
            dst_used += rb;
            ++ne;
          }
          off += rb;
        }
      }
      if (ne > 0) set_row_count(block(dst_b), dst_rows);
      table_.shrink_to(ne > 0 ? dst_b + 1 : 0);
      tail_used_ = dst_used;
      // Window slots [ne_, n_): compact inside the ring (destination index ≤ source index).
      std::size_t o = 0;
      for (std::size_t j = ne_; j < n_; ++j) {
        if (!retained[j]) continue;
        const std::size_t s = ring_index(j), dd = (ring_base_ + o) % window_;
        if (s != dd) {
          std::memcpy(ring_k_.data() + dd * ud(), ring_k_.data() + s * ud(), ud() * sizeof(half));
          std::memcpy(ring_v_.data() + dd * ud(), ring_v_.data() + s * ud(), ud() * sizeof(half));
          ring_tier_[dd] = ring_tier_[s];
        }
        ++o;
      }
      ne_ = ne;
      n_ = ne + o;
      if (n_ == 0) clear();
    }

    /// Drops slots ≥ m (encoded rows are cut at their block; no other slot changes).
    void truncate(std::size_t m, float*) {
      if (m >= n_) return;
      if (m == 0) return clear();
      if (m >= ne_) {
        n_ = m;
        return;
      }
      std::size_t before = 0;
      for (std::size_t b = 0; b < table_.size(); ++b) {
        std::uint8_t* blk = block(b);
        const std::size_t cnt = row_count(blk);
        if (before + cnt >= m) {
          const std::size_t keep = m - before;
          set_row_count(blk, keep);
          tail_used_ = 0;
          for (std::size_t i = 0; i < keep; ++i) tail_used_ += row_bytes(static_cast<PrecisionTier>(blk[kCountBytes + i]));
          table_.shrink_to(b + 1);
          break;
        }
        before += cnt;
      }
      n_ = ne_ = m;
      ring_base_ = 0;
    }

    void clear() {
      n_ = ne_ = ring_base_ = tail_used_ = 0;
      c_ready_ = false;
      table_.shrink_to(0);
    }

    std::size_t memory_bytes() const {
      return table_.size() * geo_.block + fixed_bytes(d_, Config{window_});
    }

   private:
    static constexpr std::size_t kDequantRows = 16;  // rows dequantized per dense_logits call
    static constexpr std::size_t kCountBytes = sizeof(std::uint32_t);

    struct Geometry {
      std::size_t high_row, low_row, region, max_rows, k_off, v_off, block;
    };
    static Geometry geometry(int d) {
      Geometry g;
      g.high_row = kernels::kivi_value_row_bytes(d, Group, HighBits);
      g.low_row = kernels::kivi_value_row_bytes(d, Group, LowBits);
      g.region = kBlockRows * g.high_row;
      g.max_rows = g.region / g.low_row;
      g.k_off = align_up(kCountBytes + g.max_rows);
      g.v_off = g.k_off + align_up(g.region);
      g.block = g.v_off + align_up(g.region);
      return g;
    }

    std::size_t ud() const { return static_cast<std::size_t>(d_); }
    static int bits(PrecisionTier t) { return t == PrecisionTier::kLow ? LowBits : HighBits; }
    std::size_t row_bytes(PrecisionTier t) const { return t == PrecisionTier::kLow ? geo_.low_row : geo_.high_row; }
    std::size_t ring_index(std::size_t j) const { return (ring_base_ + (j - ne_)) % window_; }

    std::uint8_t* block(std::size_t b) { return reinterpret_cast<std::uint8_t*>(table_.block(b)); }
    const std::uint8_t* block(std::size_t b) const { return reinterpret_cast<const std::uint8_t*>(table_.block(b)); }
    static std::uint32_t row_count(const std::uint8_t* blk) {
      std::uint32_t c;
      std::memcpy(&c, blk, sizeof c);
      return c;
    }
    static void set_row_count(std::uint8_t* blk, std::size_t c) {
      const auto c32 = static_cast<std::uint32_t>(c);
      std::memcpy(blk, &c32, sizeof c32);
    }

    /// Calls f(k_rows, v_rows, tier, first_slot, count) for the encoded slots [j0, j1) in runs of
    /// equal tier that are contiguous in one block.
    template <class F>
    void for_runs(std::size_t j0, std::size_t j1, F&& f) const {
      std::size_t first = 0;  // slot of the block's first row
      for (std::size_t b = 0; b < table_.size() && first < j1; ++b) {
        const std::uint8_t* blk = block(b);
        const std::size_t cnt = row_count(blk);
        if (first + cnt <= j0) {
          first += cnt;
          continue;
        }
        std::size_t i = 0, off = 0;
        while (i < cnt && first + i < j1) {
          const auto t = static_cast<PrecisionTier>(blk[kCountBytes + i]);
          const std::size_t rb = row_bytes(t);
          std::size_t e = i + 1;
          while (e < cnt && first + e < j1 && blk[kCountBytes + e] == blk[kCountBytes + i]) ++e;
          const std::size_t s = std::max(i, j0 > first ? j0 - first : 0);  // clip the run to [j0, j1)
          if (s < e) f(blk + geo_.k_off + off + (s - i) * rb, blk + geo_.v_off + off + (s - i) * rb, t, first + s, e - s);
          off += (e - i) * rb;
          i = e;
        }
        first += cnt;
      }
    }

    /// Calls f(k, v, first_slot, count) for the window rows in contiguous ring runs.
    template <class F>
    void for_window(F&& f) const {
      std::size_t j = ne_;
      while (j < n_) {
        const std::size_t r = ring_index(j);
        const std::size_t cnt = std::min(n_ - j, window_ - r);
        f(ring_k_.data() + r * ud(), ring_v_.data() + r * ud(), j, cnt);
        j += cnt;
      }
    }

    /// c_i = sqrt(max |K[t][i]|) over the window rows and the n incoming rows (rounded to fp16 as
    /// the window will hold them); 1 where the maximum is 0.
    void compute_scales(const float* k, std::size_t ld, std::size_t n, float* scratch) {
      std::fill(c_.begin(), c_.end(), 0.0f);
      for (std::size_t t = 0; t < n; ++t)
        for (std::size_t i = 0; i < ud(); ++i) c_[i] = std::max(c_[i], std::fabs(k[t * ld + i]));
      for (std::size_t i = 0; i < ud(); ++i) c_[i] = f16_bits_to_f32(f32_to_f16_bits(c_[i]));
      for_window([&](const half* kw, const half*, std::size_t, std::size_t cnt) {
        for (std::size_t t = 0; t < cnt; ++t) {
          kernels::convert(kw + t * ud(), scratch, ud(), best_isa{});
          for (std::size_t i = 0; i < ud(); ++i) c_[i] = std::max(c_[i], std::fabs(scratch[i]));
        }
      });
      for (float& c : c_) c = c > 0.0f ? std::sqrt(c) : 1.0f;
      c_ready_ = true;
    }

    /// Encodes window front slots while their tier is decided.
    void drain(float* scratch) {
      while (n_ > ne_ && ring_tier_[ring_base_] != PrecisionTier::kPending) encode_front(scratch);
    }

    /// Encodes the window's front slot at its tier (kHigh if still pending) at the end of the last
    /// block, starting a new block when the row does not fit.
    void encode_front(float* scratch) {
      assert(c_ready_);
      const PrecisionTier t =
          ring_tier_[ring_base_] == PrecisionTier::kLow ? PrecisionTier::kLow : PrecisionTier::kHigh;
      const std::size_t rb = row_bytes(t);
      if (table_.size() == 0 || tail_used_ + rb > geo_.region) {
        table_.grow_to(table_.size() + 1);
        set_row_count(block(table_.size() - 1), 0);
        tail_used_ = 0;
      }
      std::uint8_t* blk = block(table_.size() - 1);
      const std::uint32_t cnt = row_count(blk);
      constexpr float kLimit = kHalfMax / 2;  // keeps (max − min)/L and min finite in fp16
      kernels::convert(ring_k_.data() + ring_base_ * ud(), scratch, ud(), best_isa{});
      for (std::size_t i = 0; i < ud(); ++i) scratch[i] = std::min(std::max(scratch[i] / c_[i], -kLimit), kLimit);
      kernels::kivi_quantize_value_rows(scratch, ud(), 1, d_, Group, bits(t), blk + geo_.k_off + tail_used_,
                                        best_isa{});
      kernels::convert(ring_v_.data() + ring_base_ * ud(), scratch, ud(), best_isa{});
      kernels::kivi_quantize_value_rows(scratch, ud(), 1, d_, Group, bits(t), blk + geo_.v_off + tail_used_,
                                        best_isa{});
      blk[kCountBytes + cnt] = static_cast<std::uint8_t>(t);
      set_row_count(blk, cnt + 1);
      tail_used_ += rb;
      ++ne_;
      ring_base_ = (ring_base_ + 1) % window_;
    }

    int d_;
    std::size_t window_;
    Geometry geo_;
    BlockTable table_;
    std::vector<half> ring_k_, ring_v_;    // [window][d] each: slots [ne_, n_) from ring_base_
    std::vector<PrecisionTier> ring_tier_;  // [window]
    std::vector<float> c_;                 // [d] key channel scales
    std::size_t n_ = 0, ne_ = 0, ring_base_ = 0, tail_used_ = 0;  // tail_used_: K bytes of the last block
    bool c_ready_ = false;
  };
};

/// ZipVL's mixed-precision KV (eviction spec §7 step 5): T at 4 bits, U at 2 bits, groups of 32.
using ZipVLMixed = MixedPrecision<4, 2, 32>;

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
