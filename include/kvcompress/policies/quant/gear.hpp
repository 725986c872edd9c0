// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// GEAR — "GEAR: An Efficient KV Cache Compression Recipe for Near-Lossless Generative Inference
/// of LLM" (v4: "... efficient error reduction framework"), Hao Kang, Qingru Zhang, Souvik Kundu,
/// Geonhwa Jeong, Zaoxing Liu, Tushar Krishna, Tuo Zhao; arXiv 2403.05527 (2024).
/// Spec: methods/quantization.md §7 (+ BB-1, BB-4 P-KIVI, BB-10, BB-11, BB-13 "buffer-n_b",
/// BB-15, BB-16, §12 flags). Reference code opengear-project/GEAR at efe0bfe.
///
/// Per (layer, KV head), tokens arrive in a full-precision (fp16) buffer of n_b slots; whenever
/// the buffer is full it is compressed as one block (BB-13 buffer-n_b), for K and V separately:
///  1. Sparse S (BB-10): per vector — keys: each channel over the block's n_b tokens; values: each
///     token over its d channels — the k = max(1, round(s·len/2)) largest and k smallest entries
///     ([rec] count rule; ties lowest index first) are stored exactly (fp16 of the fp16 input,
///     i.e. bit exact) and replaced by the vector mean (over the whole vector) in a working copy.
///  2. Backbone: KIVI quantization (BB-1, asymmetric min–max, fp16 scale/min) of the working copy:
///     keys per channel in groups of G tokens, values per token in groups of Gv channels, in
///     KIVI's blobs (kernels/cpu/scalar/kivi.hpp; P-KIVI-convertible) and with KIVI's kernels.
///  3. Residual E = X − (Q̂ with S restored), zero at outlier positions.
///  4. Low rank L = Q·Pᵀ of E (n_b × d, per head) by BB-11 power iteration with `loops`
///     iterations from a seeded start (common/power_iteration.hpp: allocation-free, tested
///     against the Eigen version in calib/low_rank.hpp). Q, P stored as fp16.
///  5. X̂ = Q̂ + L + S, with the sparse value forced exactly at outlier positions ([rec]; the
///     reference adds L there too: Config::lowrank_at_outliers = true).
/// Fused attention (BB-15): logits = KIVI key logits over the codes + (q·P)·Qᵀ + exact outlier
/// corrections q_c·(x − dense) + dense dot over the buffer; values likewise. Nothing is
/// dequantized wholesale.
///
/// Interpretation choices (spec silent or reference-specific), all documented in the spec's
/// terms:
///  - The reference compresses the whole prompt remainder n − (n mod n_b) as ONE block with the
///    prefill rank. The pool store has fixed-size blocks, so here the prompt is compressed in
///    n_b-token blocks; blocks flushed by a multi-token append (prefill chunk) get
///    `rank_prefill`, blocks flushed by a single-token append (decode) get `rank_decode`. Every
///    block reserves max(rank_prefill, rank_decode) factor rows (memory_bytes() counts them).
///  - The buffer is flushed eagerly at n_b (after the append), so 0 ≤ |buffer| < n_b between
///    calls and a prompt of n tokens leaves n mod n_b in fp16, as the reference.
///  - The power iteration restarts from the same seeded P for every block (reference: unseeded
///    torch.rand; §12 "seed = none" is not reproduced).
///  - Outlier storage: uint16 index + fp16 value = 32 bits per outlier (the spec's [2nd] GEAR
///    accounting is 16 + 32 bits); counts are fixed per vector, so no offsets are needed.
///  - §12 `levels = ref_square` (bits² − 1) equals 2^b − 1 for the supported 2 and 4 bits;
///    `outlier_count = ref_hidden` needs all heads of a token and is not offered by a per-head
///    store. The GEAR-KCVT variant (whole-block quantization) is not implemented.
///
/// Eviction (BB-16 rule 2): a compressed block is a token-axis group for keys AND for the
/// low-rank factors of both K and V, so its slots cannot be removed one by one: evicted slots stay
/// masked, the block is freed when all its slots are dead. Buffer slots are removed physically.
/// truncate() into a compressed block decodes the surviving slots (with their error) back into
/// the buffer.

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
#include "kvcompress/kernels/convert.hpp"
#include "kvcompress/kernels/dense_attention.hpp"
#include "kvcompress/kernels/gear.hpp"
#include "kvcompress/kernels/kivi.hpp"
#include "kvcompress/policies/quant/common/extremes_inplace.hpp"
#include "kvcompress/policies/quant/common/power_iteration.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {

/// GEAR with Bits-bit backbone (2 or 4; 8 also accepted). Runtime knobs in Config.
/// Paper/script defaults: `Gear2` (2-bit, G = 64, n_b = 64, ranks 4/2, s = 2 %, loop 3) and
/// `Gear4` (the v1 near-lossless 4-bit setting, same knobs).
template <int Bits>
struct Gear {
  static_assert(Bits == 2 || Bits == 4 || Bits == 8, "quant::Gear: Bits must be 2, 4 or 8");
  static constexpr const char* kName = Bits == 2 ? "gear2" : Bits == 4 ? "gear4" : "gear8";
  static constexpr int kBits = Bits;
  /// Buffer, metadata, factors and outliers are fp16.
  static constexpr float kMaxAbsInput = kHalfMax;

  struct Config {
    int group = 64;              ///< G: key quantization group (tokens); multiple of 16, divides buffer
    int value_group = 64;        ///< value group (channels); Gv = largest divisor of d ≤ this, multiple of 32/b
    int buffer = 64;             ///< n_b: streaming buffer / block length (tokens) [rec] 64
    int rank_prefill = 4;        ///< r for blocks flushed by a multi-token append (0 = no low rank)
    int rank_decode = 2;         ///< r for blocks flushed by a single-token append
    float sparsity = 0.02f;      ///< s: outlier fraction (0 = GEAR-L, no sparse part)
    int loops = 3;               ///< power iterations
    std::uint64_t seed = 0;      ///< power-iteration start (seeded [rec])
    bool lowrank_at_outliers = false;  ///< §12 reference flag: add L at outlier positions too

    void validate(const CacheShape& shape) const {
      constexpr const char* w = "quant::Gear";
      const int d = shape.head_dim;
      kvcompress::detail::require(d % (32 / Bits) == 0 && d <= 65535, w, "head_dim", d,
                                  "a multiple of " + std::to_string(32 / Bits));
      kvcompress::detail::require(group > 0 && group % kernels::kKiviKeyTileTokens == 0, w, "group", group,
                                  "a positive multiple of 16");
      kvcompress::detail::require(buffer >= group && buffer % group == 0 && buffer <= 65535, w, "buffer", buffer,
                                  "a multiple of group = " + std::to_string(group) + " (≤ 65535)");
      kvcompress::detail::require(value_group_for(d, value_group) > 0, w, "value_group", value_group,
                                  "≥ " + std::to_string(32 / Bits) + " so a divisor of head_dim exists");
      const int rmax = std::min({buffer, d, kernels::kGearMaxRank});
      kvcompress::detail::require(rank_prefill >= 0 && rank_prefill <= rmax, w, "rank_prefill", rank_prefill,
                                  "in [0, min(buffer, head_dim, 128)] = [0, " + std::to_string(rmax) + "]");
      kvcompress::detail::require(rank_decode >= 0 && rank_decode <= rmax, w, "rank_decode", rank_decode,
                                  "in [0, min(buffer, head_dim, 128)] = [0, " + std::to_string(rmax) + "]");
      kvcompress::detail::require(std::isfinite(sparsity) && sparsity >= 0.0f && sparsity < 1.0f, w, "sparsity",
                                  sparsity, "a fraction in [0, 1)");
      kvcompress::detail::require(loops >= 1, w, "loops", loops, "≥ 1 (GEAR: 3)");
    }
  };

  /// Gv for head dim d: the largest divisor of d that is ≤ g and a multiple of 32/b (KIVI's rule).
  static constexpr int value_group_for(int d, int g) {
    for (int x = std::min(g, d); x >= 1; --x)
      if (d % x == 0 && x % (32 / Bits) == 0) return x;
    return 0;
  }
  /// Outliers per side of a vector of `len` elements: max(1, round(s·len/2)) for s > 0 ([rec]).
  static int outliers_per_side(float s, int len) {
    if (s <= 0.0f) return 0;
    return std::max(1, static_cast<int>(std::lround(static_cast<double>(s) * len / 2.0)));
  }

  class Store {
   public:
    /// Byte layout of one block (n_b tokens of one (layer, KV head)).
    struct Geometry {
      int gv, rmax, per_k, per_v;  // value group, reserved rank, outliers per key channel / value token
      std::size_t key_group, value_row;
      std::size_t values, qk, pk, qv, pv, out_k, out_v, ranks, bytes, block;
    };
    static Geometry geometry(int d, const Config& c) {
      Geometry g{};
      const std::size_t nb = static_cast<std::size_t>(c.buffer), ud = static_cast<std::size_t>(d);
      g.gv = value_group_for(d, c.value_group);
      g.rmax = std::max(c.rank_prefill, c.rank_decode);
      g.per_k = std::min(c.buffer, 2 * outliers_per_side(c.sparsity, c.buffer));
      g.per_v = std::min(d, 2 * outliers_per_side(c.sparsity, d));
      g.key_group = kernels::kivi_key_group_bytes(c.group, d, Bits);
      g.value_row = kernels::kivi_value_row_bytes(d, g.gv, Bits);
      const std::size_t r = static_cast<std::size_t>(g.rmax);
      g.values = g.key_group * (nb / static_cast<std::size_t>(c.group));
      g.qk = g.values + g.value_row * nb;
      g.pk = g.qk + 2 * nb * r;
      g.qv = g.pk + 2 * ud * r;
      g.pv = g.qv + 2 * nb * r;
      g.out_k = g.pv + 2 * ud * r;
      g.out_v = g.out_k + kernels::kGearOutlierEntryBytes * ud * static_cast<std::size_t>(g.per_k);
      g.ranks = g.out_v + kernels::kGearOutlierEntryBytes * nb * static_cast<std::size_t>(g.per_v);
      g.bytes = g.ranks + 2;  // rank of K and of V factors (uint8 each)
      g.block = align_up(g.bytes);
      return g;
    }

    static std::size_t block_tokens(const Config& c) { return static_cast<std::size_t>(c.buffer); }
    static std::size_t block_bytes(int d, const Config& c) { return geometry(d, c).block; }
    static std::size_t max_blocks(std::size_t capacity, const Config& c) {
      return capacity / static_cast<std::size_t>(c.buffer) + 1;
    }
    static std::size_t fixed_bytes(int d, const Config& c) {
      return 2 * static_cast<std::size_t>(c.buffer) * static_cast<std::size_t>(d) * sizeof(half);
    }
    static std::size_t scratch_floats(int d, const Config& c) {
      const std::size_t nb = static_cast<std::size_t>(c.buffer), ud = static_cast<std::size_t>(d);
      return 2 * nb * ud + (nb + ud) * static_cast<std::size_t>(std::max(c.rank_prefill, c.rank_decode)) +
             (std::max(nb, ud) + 1) / 2;  // + outlier selection indices (uint16)
    }

    Store(int d, const Config& c, BlockTable table)
        : d_(d), cfg_(c), geo_(geometry(d, c)), table_(std::move(table)),
          buf_k_(static_cast<std::size_t>(c.buffer) * static_cast<std::size_t>(d)),
          buf_v_(static_cast<std::size_t>(c.buffer) * static_cast<std::size_t>(d)),
          side_k_(static_cast<std::size_t>(outliers_per_side(c.sparsity, c.buffer))),
          side_v_(static_cast<std::size_t>(outliers_per_side(c.sparsity, d))) {}

    /// Physical slots; slots in compressed blocks; slots in the fp16 buffer.
    std::size_t size() const { return n_; }
    std::size_t compressed() const { return nc_; }
    std::size_t buffered() const { return n_ - nc_; }
    const Geometry& layout() const { return geo_; }
    /// Raw bytes of compressed block b (for tests and tools; layout in geometry()).
    const std::uint8_t* block_data(std::size_t b) const { return reinterpret_cast<const std::uint8_t*>(table_.block(b)); }
    /// Rank of block b's key and value factors.
    int key_rank(std::size_t b) const { return block_data(b)[geo_.ranks]; }
    int value_rank(std::size_t b) const { return block_data(b)[geo_.ranks + 1]; }

    void append(const float* k, const float* v, std::size_t ld, std::size_t n, float* scratch) {
      const int rank = n > 1 ? cfg_.rank_prefill : cfg_.rank_decode;
      for (std::size_t t = 0; t < n; ++t) {
        const std::size_t b = n_ - nc_;
        kernels::convert(k + t * ld, buf_k_.data() + b * ud(), ud(), best_isa{});
        kernels::convert(v + t * ld, buf_v_.data() + b * ud(), ud(), best_isa{});
        ++n_;
        if (n_ - nc_ == nb()) flush(rank, scratch);
      }
    }

    void logits(const float* q, int rows, float* out, std::size_t ldl) const {
      for (std::size_t b = 0; b < nc_ / nb(); ++b) {
        const std::uint8_t* blk = block_data(b);
        float* o = out + b * nb();
        kernels::kivi_key_logits(blk, nb() / static_cast<std::size_t>(cfg_.group), cfg_.group, d_, Bits, q, rows, o,
                                 ldl, best_isa{});
        kernels::gear_lowrank_logits(blk + geo_.qk, blk + geo_.pk, nb(), d_, key_rank(b), q, rows, o, ldl,
                                     best_isa{});
        if (geo_.per_k > 0)
          kernels::gear_key_outlier_logits(blk, cfg_.group, d_, Bits, blk + geo_.out_k, geo_.per_k, nb(), blk + geo_.qk,
                                           blk + geo_.pk, key_rank(b), cfg_.lowrank_at_outliers, q, rows,
                                           o, ldl, best_isa{});
      }
      if (n_ > nc_) kernels::dense_logits(buf_k_.data(), ud(), n_ - nc_, d_, q, rows, out + nc_, ldl, best_isa{});
    }

    void accumulate(const float* p, std::size_t ldp, int rows, float* out) const {
      for (std::size_t b = 0; b < nc_ / nb(); ++b) {
        const std::uint8_t* blk = block_data(b);
        const float* pb = p + b * nb();
        kernels::kivi_value_accumulate(blk + geo_.values, nb(), d_, geo_.gv, Bits, pb, ldp, rows, out, best_isa{});
        kernels::gear_lowrank_accumulate(blk + geo_.qv, blk + geo_.pv, nb(), d_, value_rank(b), pb, ldp,
                                         rows, out, best_isa{});
        if (geo_.per_v > 0)
          kernels::gear_value_outlier_accumulate(blk + geo_.values, nb(), d_, geo_.gv, Bits, blk + geo_.out_v,
                                                 geo_.per_v, blk + geo_.qv, blk + geo_.pv, value_rank(b),
                                                 cfg_.lowrank_at_outliers, pb, ldp, rows, out, best_isa{});
      }
      if (n_ > nc_)
        kernels::dense_accumulate(buf_v_.data(), ud(), n_ - nc_, d_, p + nc_, ldp, rows, out, best_isa{});
    }

    void read(std::size_t j0, std::size_t j1, float* k, float* v, std::size_t ld, float* scratch) const {
      std::size_t decoded = SIZE_MAX;
      float* kb = scratch;
      float* vb = scratch + nb() * ud();
      for (std::size_t j = j0; j < j1; ++j) {
        float* kd = k + (j - j0) * ld;
        float* vd = v + (j - j0) * ld;
        if (j < nc_) {
          const std::size_t b = j / nb();
          if (b != decoded) {
            decode_block(b, kb, vb);
            decoded = b;
          }
          std::copy(kb + (j % nb()) * ud(), kb + (j % nb() + 1) * ud(), kd);
          std::copy(vb + (j % nb()) * ud(), vb + (j % nb() + 1) * ud(), vd);
        } else {
          kernels::convert(buf_k_.data() + (j - nc_) * ud(), kd, ud(), best_isa{});
          kernels::convert(buf_v_.data() + (j - nc_) * ud(), vd, ud(), best_isa{});
        }
      }
    }

    /// A compressed block is retained whole if any of its slots is kept (dead slots stay masked);
    /// buffer slots are retained iff kept.
    std::size_t plan_compact(const std::uint8_t* keep, std::uint8_t* retained) const {
      std::size_t count = 0;
      for (std::size_t b0 = 0; b0 < nc_; b0 += nb()) {
        const bool any = std::any_of(keep + b0, keep + b0 + nb(), [](std::uint8_t x) { return x != 0; });
        std::fill(retained + b0, retained + b0 + nb(), static_cast<std::uint8_t>(any));
        count += any ? nb() : 0;
      }
      for (std::size_t j = nc_; j < n_; ++j) {
        retained[j] = keep[j] ? 1 : 0;
        count += retained[j];
      }
      return count;
    }

    void compact(const std::uint8_t* retained, float*) {
      std::size_t nblk = 0;
      for (std::size_t b = 0; b < nc_ / nb(); ++b) {
        if (!retained[b * nb()]) continue;
        if (nblk != b) std::memcpy(table_.block(nblk), table_.block(b), geo_.bytes);
        ++nblk;
      }
      std::size_t o = 0;
      for (std::size_t j = nc_; j < n_; ++j) {
        if (!retained[j]) continue;
        const std::size_t src = j - nc_;
        if (src != o) {
          std::memcpy(buf_k_.data() + o * ud(), buf_k_.data() + src * ud(), ud() * sizeof(half));
          std::memcpy(buf_v_.data() + o * ud(), buf_v_.data() + src * ud(), ud() * sizeof(half));
        }
        ++o;
      }
      nc_ = nblk * nb();
      n_ = nc_ + o;
      table_.shrink_to(nblk);
    }

    void truncate(std::size_t m, float* scratch) {
      if (m >= n_) return;
      if (m >= nc_) {
        n_ = m;
        return;
      }
      const std::size_t b = m / nb(), keep = m - b * nb();
      if (keep > 0) {
        float* kb = scratch;
        float* vb = scratch + nb() * ud();
        decode_block(b, kb, vb);
        kernels::convert(kb, buf_k_.data(), keep * ud(), best_isa{});
        kernels::convert(vb, buf_v_.data(), keep * ud(), best_isa{});
      }
      nc_ = b * nb();
      n_ = m;
      table_.shrink_to(b);
    }

    void clear() {
      n_ = nc_ = 0;
      table_.shrink_to(0);
    }

    std::size_t memory_bytes() const { return table_.size() * geo_.block + fixed_bytes(d_, cfg_); }

   private:
    static constexpr std::size_t kEntry = kernels::kGearOutlierEntryBytes;
    std::size_t ud() const { return static_cast<std::size_t>(d_); }
    std::size_t nb() const { return static_cast<std::size_t>(cfg_.buffer); }
    std::uint8_t* block_mut(std::size_t b) { return reinterpret_cast<std::uint8_t*>(table_.block(b)); }

    /// Dequantizes block b: k, v [n_b][d] = Q̂ + L, then the outliers (exact, or + L with the flag).
    void decode_block(std::size_t b, float* k, float* v) const {
      const std::uint8_t* blk = block_data(b);
      const std::size_t groups = nb() / static_cast<std::size_t>(cfg_.group);
      for (std::size_t g = 0; g < groups; ++g)
        kernels::kivi_dequantize_key_group(blk + g * geo_.key_group, cfg_.group, d_, Bits,
                                           k + g * static_cast<std::size_t>(cfg_.group) * ud(), ud(), best_isa{});
      kernels::kivi_dequantize_value_rows(blk + geo_.values, nb(), d_, geo_.gv, Bits, v, ud(), best_isa{});
      kernels::gear_add_lowrank(blk + geo_.qk, blk + geo_.pk, nb(), d_, key_rank(b), k, ud(), best_isa{});
      kernels::gear_add_lowrank(blk + geo_.qv, blk + geo_.pv, nb(), d_, value_rank(b), v, ud(), best_isa{});
      const bool add_l = cfg_.lowrank_at_outliers;
      for (int c = 0; c < d_; ++c)
        for (int e = 0; e < geo_.per_k; ++e) {
          std::uint16_t t;
          float x;
          kernels::detail::gear_entry(blk + geo_.out_k + (static_cast<std::size_t>(c) * geo_.per_k + e) * kEntry, &t, &x);
          k[t * ud() + c] =
              x + (add_l ? kernels::detail::gear_lowrank_at(blk + geo_.qk, blk + geo_.pk, key_rank(b), nb(), ud(), t,
                                                             static_cast<std::size_t>(c))
                         : 0.0f);
        }
      for (std::size_t t = 0; t < nb(); ++t)
        for (int e = 0; e < geo_.per_v; ++e) {
          std::uint16_t c;
          float x;
          kernels::detail::gear_entry(blk + geo_.out_v + (t * geo_.per_v + e) * kEntry, &c, &x);
          v[t * ud() + c] =
              x + (add_l ? kernels::detail::gear_lowrank_at(blk + geo_.qv, blk + geo_.pv, value_rank(b), nb(), ud(), t, c)
                         : 0.0f);
        }
    }

    /// Compresses the full buffer into a new block (steps 1–5 of the file comment).
    void flush(int rank, float* scratch) {
      const std::size_t b = nc_ / nb();
      table_.grow_to(b + 1);
      std::uint8_t* blk = block_mut(b);
      float* x = scratch;                 // [n_b][d] original (fp16 values)
      float* w = scratch + nb() * ud();   // [n_b][d] working copy / residual
      float* fq = w + nb() * ud();        // [n_b][rank]
      float* fp = fq + nb() * static_cast<std::size_t>(geo_.rmax);  // [d][rank]
      std::uint16_t* sel = reinterpret_cast<std::uint16_t*>(fp + ud() * static_cast<std::size_t>(geo_.rmax));
      blk[geo_.ranks] = static_cast<std::uint8_t>(rank);
      blk[geo_.ranks + 1] = static_cast<std::uint8_t>(rank);
      // Keys: outliers per channel over the block's tokens; backbone per-channel groups.
      kernels::convert(buf_k_.data(), x, nb() * ud(), best_isa{});
      std::copy(x, x + nb() * ud(), w);
      std::uint8_t* ok = blk + geo_.out_k;
      for (int c = 0; c < d_ && geo_.per_k > 0; ++c) {
        common::select_extremes_inplace(x + c, nb(), ud(), side_k_, sel);
        store_outliers(x, c, sel, ok + static_cast<std::size_t>(c) * geo_.per_k * kEntry, w, true);
      }
      for (std::size_t g = 0; g < nb() / static_cast<std::size_t>(cfg_.group); ++g)
        kernels::kivi_quantize_key_group(w + g * static_cast<std::size_t>(cfg_.group) * ud(), ud(), cfg_.group, d_,
                                         Bits, blk + g * geo_.key_group, best_isa{});
      if (rank > 0) {
        for (std::size_t g = 0; g < nb() / static_cast<std::size_t>(cfg_.group); ++g)
          kernels::kivi_dequantize_key_group(blk + g * geo_.key_group, cfg_.group, d_, Bits,
                                             w + g * static_cast<std::size_t>(cfg_.group) * ud(), ud(), best_isa{});
        residual_lowrank(x, w, blk + geo_.out_k, true, rank, fq, fp, blk + geo_.qk, blk + geo_.pk);
      }
      // Values: outliers per token over channels; backbone per-token groups.
      kernels::convert(buf_v_.data(), x, nb() * ud(), best_isa{});
      std::copy(x, x + nb() * ud(), w);
      std::uint8_t* ov = blk + geo_.out_v;
      for (std::size_t t = 0; t < nb() && geo_.per_v > 0; ++t) {
        common::select_extremes_inplace(x + t * ud(), ud(), 1, side_v_, sel);
        store_outliers(x, static_cast<int>(t), sel, ov + t * geo_.per_v * kEntry, w, false);
      }
      kernels::kivi_quantize_value_rows(w, ud(), nb(), d_, geo_.gv, Bits, blk + geo_.values, best_isa{});
      if (rank > 0) {
        kernels::kivi_dequantize_value_rows(blk + geo_.values, nb(), d_, geo_.gv, Bits, w, ud(), best_isa{});
        residual_lowrank(x, w, blk + geo_.out_v, false, rank, fq, fp, blk + geo_.qv, blk + geo_.pv);
      }
      nc_ += nb();
    }

    /// Writes the selected entries of vector `vec` (key channel or value token) and replaces them
    /// by the vector mean in the working copy w.
    void store_outliers(const float* x, int vec, const std::uint16_t* sel, std::uint8_t* dst, float* w, bool key) {
      const std::size_t len = key ? nb() : ud();
      const std::size_t v0 = static_cast<std::size_t>(vec);
      auto at = [&](std::size_t i) { return key ? i * ud() + v0 : v0 * ud() + i; };
      double sum = 0.0;
      for (std::size_t i = 0; i < len; ++i) sum += x[at(i)];
      const float mean = static_cast<float>(sum / static_cast<double>(len));
      const int per = key ? geo_.per_k : geo_.per_v;
      for (int e = 0; e < per; ++e) {
        const std::uint16_t i = sel[e], bits = f32_to_f16_bits(x[at(i)]);
        std::memcpy(dst + kEntry * e, &i, 2);
        std::memcpy(dst + kEntry * e + 2, &bits, 2);
        w[at(i)] = mean;
      }
    }

    /// w holds the dequantized backbone; turns it into E = x − w (0 at outliers), runs the power
    /// iteration and stores the fp16 factors.
    void residual_lowrank(const float* x, float* w, const std::uint8_t* outl, bool key, int rank, float* fq, float* fp,
                          std::uint8_t* dq, std::uint8_t* dp) {
      for (std::size_t i = 0; i < nb() * ud(); ++i) w[i] = x[i] - w[i];
      const int per = key ? geo_.per_k : geo_.per_v;
      const std::size_t vecs = key ? ud() : nb();
      for (std::size_t vec = 0; vec < vecs; ++vec)
        for (int e = 0; e < per; ++e) {
          std::uint16_t i;
          std::memcpy(&i, outl + (vec * per + e) * kEntry, 2);
          w[key ? i * ud() + vec : vec * ud() + i] = 0.0f;
        }
      const std::size_t r = static_cast<std::size_t>(rank);
      common::power_iteration_low_rank_inplace(w, nb(), ud(), ud(), r, cfg_.loops, cfg_.seed, fq, fp);
      for (std::size_t i = 0; i < r; ++i) {  // factor-major fp16: Qᵀ [r][n_b], Pᵀ [r][d]
        for (std::size_t t = 0; t < nb(); ++t) {
          const std::uint16_t h = f32_to_f16_bits(fq[t * r + i]);
          std::memcpy(dq + 2 * (i * nb() + t), &h, 2);
        }
        for (std::size_t c = 0; c < ud(); ++c) {
          const std::uint16_t h = f32_to_f16_bits(fp[c * r + i]);
          std::memcpy(dp + 2 * (i * ud() + c), &h, 2);
        }
      }
    }

    int d_;
    Config cfg_;
    Geometry geo_;
    BlockTable table_;
    std::vector<half> buf_k_, buf_v_;  // [n_b][d] each: slots [nc_, n_)
    std::size_t side_k_, side_v_;      // outliers per side of a key channel / value token
    std::size_t n_ = 0, nc_ = 0;
  };
};

/// GEAR at the reference script's defaults: 2-bit backbone, G = 64, n_b = 64, prefill rank 4,
/// decode rank 2, s = 2 %, loop 3.
using Gear2 = Gear<2>;
/// GEAR with a 4-bit backbone (v1 "near-lossless 4-bit"), same knobs.
using Gear4 = Gear<4>;

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
