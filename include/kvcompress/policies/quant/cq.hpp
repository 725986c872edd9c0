// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// CQ — "KV Cache is 1 Bit Per Channel: Efficient Large Language Model Inference with Coupled
/// Quantization", Tianyi Zhang, Jonah Yi, Zhaozhuo Xu, Anshumali Shrivastava, NeurIPS 2024, arXiv
/// 2405.03917 (methods/quantization.md §3; no reference code exists, the spec's [2nd] reading is
/// followed).
///
/// Every key and value vector of a (layer, KV head) is split into G = d/c groups of c contiguous
/// channels (per head, c | d: the spec's [rec]); each group is stored as the b-bit index of its
/// nearest centroid (BB-6) in that stream's learned codebook C_g (2^b × c; cq_calibration.hpp).
/// Bits per channel = b/c: CQ-8c8b = 1 bit, CQ-4c8b = 2 bits (the paper's 1- and 2-bit settings).
/// No per-token scale or zero point.
///
/// Keys (BB-14): cached pre-RoPE by default (Config::key_space), with each slot's original
/// position kept in its block (int32 per slot), so compaction and truncation keep it in step; the
/// engine must hand pre-RoPE keys and Config::rope. read() returns post-RoPE keys (BB-16 rule 4).
/// KeySpace::kPostRope is the option for engines that only have post-RoPE keys.
///
/// Fused attention (kernels/cpu/scalar/cq.hpp):
///  * values: per step and query row, P[g][k] = Σ_j p_j·[idx_j[g] = k], then out += Σ_k P[g][k]·C_g[k]
///    — O(G) per slot plus O(2^b·d) per row, never a dequantized history.
///  * post-RoPE keys: per row the table q_g·C_g[k] (O(2^b·d)), then logit_j = Σ_g table[g][idx_j[g]].
///  * pre-RoPE keys — decision: **dequantize per slot and rotate the key**, not the query.
///    RoPE rotates channel pairs (i, i + d/2) (rotate-half) that lie in different coupled groups,
///    with an angle that depends on the slot's position; rotating the query instead gives a
///    different query per slot, which defeats the per-step centroid table (one table per slot
///    costs more than the dot product it replaces). So each quantized slot's centroids are
///    gathered into a d-vector, rotated with its position and dotted with the query rows: O(d)
///    per slot. The angles come from common::RopeCursor: exact cos/sin at every block start and
///    at position gaps, one complex multiplication per pair for consecutive positions (double;
///    ≈ 1e-16·steps angle drift), so no trigonometry per slot in the common case. Exact up to
///    fp32 rounding (the math of dense attention over RoPE(dequant(k))). read() uses the
///    bit-exact common::rope_apply arithmetic. The table path is the speed path of kPostRope.
///
/// Optional recent window (§3 "keep the most recent 128 tokens in fp16"): Config::recent_window
/// R > 0 keeps the last R physical slots as fp16 rows (pre-RoPE keys, rotated when used); the
/// token leaving the window is encoded (a sliding window like KIVI's values). R = 0 (paper's main
/// tables) encodes every token at once.
///
/// Index storage: uint8 for b ≤ 8, uint16 for 8 < b ≤ 16 (CQ-8c10b is stored in 16-bit words,
/// not packed 10-bit; memory_bytes() reports what is held). Block of 128 slots, each region
/// 64-byte aligned: [128] int32 pos, [Gk][128] key indices, [Gv][128] value indices.
///
/// Codebooks: Config::codebooks, shared by all streams of all caches that use the Config (model
/// state, like weights; CqCodebooks::memory_bytes() reports it; a stream's memory_bytes() counts
/// only per-stream state). KVCache constructs each store with its (layer, kv_head), which picks a
/// per-stream codebook set; the 3-argument constructor (a store used alone) serves only a shared
/// set (L = H = 1) and rejects others.
///
/// Eviction (BB-16): every slot is self-contained, so evicted slots are removed physically.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kvcompress/core/block_pool.hpp"
#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/core/token_info.hpp"
#include "kvcompress/kernels/convert.hpp"
#include "kvcompress/kernels/cq.hpp"
#include "kvcompress/kernels/dense_attention.hpp"
#include "kvcompress/policies/quant/common/fp16_row_pool.hpp"
#include "kvcompress/policies/quant/common/key_space.hpp"
#include "kvcompress/policies/quant/common/rope.hpp"
#include "kvcompress/policies/quant/common/rope_angles.hpp"
#include "kvcompress/policies/quant/cq_calibration.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {

/// CQ-<C>c<Bits>b: C coupled channels per group, 2^Bits centroids, Bits/C bits per channel.
template <int C, int Bits>
struct Cq {
  static_assert(C >= 1 && C <= 64, "quant::Cq: C (coupled channels) must be in [1, 64]");
  static_assert(Bits >= 1 && Bits <= 16, "quant::Cq: Bits must be in [1, 16]");
  static constexpr const char* kName = "cq";
  static constexpr int kChannels = C;
  static constexpr int kBits = Bits;
  /// The fp16 window bounds the input range; centroid indices have none.
  static constexpr float kMaxAbsInput = kHalfMax;
  /// Index type of one group code.
  using Index = std::conditional_t<(Bits <= 8), std::uint8_t, std::uint16_t>;

  /// Runtime knobs.
  struct Config {
    /// Codebooks (required): cq_fit_codebooks / cq_load / cq_gaussian_codebooks.
    std::shared_ptr<const CqCodebooks> codebooks;
    /// fp16 recent window R (0 = none, the paper's main setting; 128 = the "+ fp16 window" one).
    std::size_t recent_window = 0;
    /// Key space of the cached keys (default pre-RoPE, §3 / BB-14).
    common::KeySpace key_space = common::KeySpace::kPreRope;
    /// RoPE of the model (used when key_space == kPreRope; head_dim must equal the cache's).
    common::RopeParams rope;

    void validate(const CacheShape& shape) const {
      constexpr const char* where = "quant::Cq";
      kvcompress::detail::require(codebooks != nullptr, where, "codebooks", "nullptr",
                                  "a codebook set (cq_fit_codebooks, cq_load or cq_gaussian_codebooks)");
      kvcompress::detail::require(codebooks->c() == C && codebooks->bits() == Bits, where, "codebooks",
                                  std::to_string(codebooks->c()) + "c" + std::to_string(codebooks->bits()) + "b",
                                  std::to_string(C) + "c" + std::to_string(Bits) + "b (the policy's)");
      kvcompress::detail::require(codebooks->head_dim() == shape.head_dim, where, "codebooks.head_dim",
                                  codebooks->head_dim(), "the cache's head_dim " + std::to_string(shape.head_dim));
      kvcompress::detail::require(
          codebooks->shared() ||
              (codebooks->num_layers() == shape.num_layers && codebooks->num_kv_heads() == shape.num_kv_heads),
          where, "codebooks.layers x heads",
          std::to_string(codebooks->num_layers()) + "x" + std::to_string(codebooks->num_kv_heads()),
          "1x1 (shared) or num_layers x num_kv_heads = " + std::to_string(shape.num_layers) + "x" +
              std::to_string(shape.num_kv_heads));
      kvcompress::detail::require(recent_window <= 4096, where, "recent_window", recent_window, "<= 4096");
      if (key_space == common::KeySpace::kPreRope) {
        kvcompress::detail::require(rope.head_dim == static_cast<std::size_t>(shape.head_dim), where, "rope.head_dim",
                                    rope.head_dim, "the cache's head_dim " + std::to_string(shape.head_dim));
        common::detail::check_rope(where, rope);
      }
    }
  };

  /// Rotates key rows to post-RoPE (inverse: back) when keys are cached pre-RoPE, identity
  /// otherwise: KVCache uses it for its fp16 prompt staging (core/policy_traits.hpp, BB-16 rule 4).
  static void rope_keys(const Config& cfg, float* k, std::size_t n, std::size_t ld, const std::int32_t* pos,
                        bool inverse) {
    if (cfg.key_space != common::KeySpace::kPreRope) return;
    if (inverse)
      common::rope_unapply_rows(k, n, ld, pos, cfg.rope);
    else
      common::rope_apply_rows(k, n, ld, pos, cfg.rope);
  }

  class Store {
   public:
    static constexpr std::size_t kBlockTokens = 128;

    static std::size_t block_tokens(const Config&) { return kBlockTokens; }
    static std::size_t block_bytes(int d, const Config&) { return layout(d).block; }
    static std::size_t max_blocks(std::size_t capacity, const Config&) {
      return (capacity + kBlockTokens - 1) / kBlockTokens;
    }
    /// Per-stream bytes outside the pool: fp16 window rows + its row list, the decode table,
    /// RoPE angles (pre-RoPE).
    static std::size_t fixed_bytes(int d, const Config& cfg) {
      const std::size_t ud = static_cast<std::size_t>(d);
      return common::Fp16RowPool::bytes_for(cfg.recent_window, ud) + cfg.recent_window * sizeof(std::uint16_t) +
             table_floats(d) * sizeof(float) +
             (cfg.key_space == common::KeySpace::kPreRope ? 3 * ud / 2 * sizeof(double) : 0);
    }
    /// One fp32 row for the window token being encoded.
    static std::size_t scratch_floats(int d, const Config&) { return 2 * static_cast<std::size_t>(d); }

    /// Serves stream (0, 0): only for a shared codebook set (see the file comment).
    Store(int d, const Config& cfg, BlockTable table) : Store(d, cfg, std::move(table), 0, 0) {
      kvcompress::detail::require(cfg.codebooks->shared(), "quant::Cq::Store", "codebooks",
                                  "a per-(layer, head) set",
                                  "a shared set (L = H = 1) (KVCache passes each store its layer and KV head)");
    }
    /// Serves stream `id` with its codebooks.
    Store(int d, const Config& cfg, BlockTable table, int layer, int kv_head)
        : d_(static_cast<std::size_t>(d)), geo_(layout(d)), window_(cfg.recent_window),
          pre_rope_(cfg.key_space == common::KeySpace::kPreRope), table_(std::move(table)),
          codebooks_(cfg.codebooks), ring_(cfg.recent_window, static_cast<std::size_t>(d)),
          lut_(table_floats(d)) {
      kcb_ = codebooks_->keys(layer, kv_head);
      kcbt_ = codebooks_->keys_t(layer, kv_head);
      vcb_ = codebooks_->values(layer, kv_head);
      vcbt_ = codebooks_->values_t(layer, kv_head);
      win_.reserve(window_);
      if (pre_rope_) rope_ = common::RopeAngles(cfg.rope);
    }

    std::size_t size() const { return n_; }
    /// Slots encoded as centroid indices ([0, quantized())); the rest are the fp16 window.
    std::size_t quantized() const { return nq_; }
    common::KeySpace key_space() const { return pre_rope_ ? common::KeySpace::kPreRope : common::KeySpace::kPostRope; }

    /// Appends n tokens with their original positions (info.pos; modality unused).
    void append(const float* k, const float* v, std::size_t ld, std::size_t n, const TokenInfo& info, float* scratch) {
      for (std::size_t t = 0; t < n; ++t) {
        const float* kt = k + t * ld;
        const float* vt = v + t * ld;
        const std::int32_t pos = info.pos ? info.pos[t] : 0;
        table_.grow_to(blocks_for(n_ + 1));
        pos_of(n_) = pos;
        if (window_ == 0) {
          encode(n_, kt, vt);
          ++nq_;
        } else {
          if (win_.size() == window_) retire_oldest(scratch);
          const std::uint16_t r = ring_.acquire();
          kernels::convert(kt, ring_.key(r), d_, best_isa{});
          kernels::convert(vt, ring_.value(r), d_, best_isa{});
          win_.push_back(r);
        }
        ++n_;
      }
    }

    /// logits[r·ldl + j] = q_r · RoPE(pos_j)(k̂_j) (pre-RoPE) or q_r · k̂_j (post-RoPE).
    void logits(const float* q, int rows, float* out, std::size_t ldl) const {
      const std::size_t G = groups();
      if (!pre_rope_) {
        for (int r = 0; r < rows; ++r) {
          kernels::cq_centroid_table(q + static_cast<std::size_t>(r) * d_, d_, C, kcbt_, kCent, lut_.data(), best_isa{});
          for_each_block(nq_, [&](std::size_t j0, std::size_t nb) {
            kernels::cq_table_logits(key_idx(j0), kBlockTokens, nb, G, lut_.data(), kCent,
                                     out + static_cast<std::size_t>(r) * ldl + j0, best_isa{});
          });
        }
      } else {
        // Tiles of dequantized, rotated keys in the (otherwise idle) table buffer, then the
        // dense fp32 logits kernel.
        common::RopeCursor<kMaxD> cur(rope_);
        rotated_tiles(0, nq_, cur, q, rows, out, ldl, [&](std::size_t j, float* kd) {
          kernels::cq_dequantize(key_idx(j), kBlockTokens, d_, C, kcb_, kCent, kd, best_isa{});
        });
      }
      common::RopeCursor<kMaxD> cur(rope_);
      rotated_tiles(nq_, n_, cur, q, rows, out, ldl, [&](std::size_t j, float* kd) {
        kernels::convert(ring_.key(win_[j - nq_]), kd, d_, best_isa{});
      });
    }

    /// out[r][c] += Σ_j p[r·ldp + j]·v̂_j[c].
    void accumulate(const float* p, std::size_t ldp, int rows, float* out) const {
      const std::size_t G = groups();
      for (int r = 0; r < rows; ++r) {
        const float* pr = p + static_cast<std::size_t>(r) * ldp;
        float* o = out + static_cast<std::size_t>(r) * d_;
        if (nq_ > 0) {
          std::fill(lut_.begin(), lut_.end(), 0.0f);
          for_each_block(nq_, [&](std::size_t j0, std::size_t nb) {
            kernels::cq_prob_scatter(value_idx(j0), kBlockTokens, nb, G, pr + j0, lut_.data(), kCent, best_isa{});
          });
          kernels::cq_prob_gather(lut_.data(), d_, C, vcbt_, kCent, o, best_isa{});
        }
        for (std::size_t w = 0; w < win_.size(); ++w) {
          const float pj = pr[nq_ + w];
          const half* vr = ring_.value(win_[w]);
          for (std::size_t c = 0; c < d_; ++c) o[c] += pj * to_float(vr[c]);
        }
      }
    }

    /// Slots [j0, j1) as fp32: keys post-RoPE (rotated with the slot's position in a pre-RoPE
    /// store), values dequantized.
    void read(std::size_t j0, std::size_t j1, float* k, float* v, std::size_t ld, float*) const {
      for (std::size_t j = j0; j < j1; ++j) {
        float* kd = k + (j - j0) * ld;
        float* vd = v + (j - j0) * ld;
        if (j < nq_) {
          kernels::cq_dequantize(key_idx(j), kBlockTokens, d_, C, kcb_, kCent, kd, best_isa{});
          kernels::cq_dequantize(value_idx(j), kBlockTokens, d_, C, vcb_, kCent, vd, best_isa{});
        } else {
          kernels::convert(ring_.key(win_[j - nq_]), kd, d_, best_isa{});
          kernels::convert(ring_.value(win_[j - nq_]), vd, d_, best_isa{});
        }
        if (pre_rope_) rope_.rotate(kd, static_cast<double>(pos_of(j)));
      }
    }

    /// The original position of slot j (kept per slot, BB-14).
    std::int32_t position(std::size_t j) const { return pos_of(j); }

    /// Every slot is removable: retained = keep.
    std::size_t plan_compact(const std::uint8_t* keep, std::uint8_t* retained) const {
      std::size_t cnt = 0;
      for (std::size_t j = 0; j < n_; ++j) cnt += (retained[j] = keep[j] ? 1 : 0);
      return cnt;
    }

    void compact(const std::uint8_t* retained, float*) {
      const std::size_t G = groups();
      std::size_t o = 0;
      for (std::size_t j = 0; j < nq_; ++j) {
        if (!retained[j]) continue;
        if (o != j) move_slot(j, o, G);
        ++o;
      }
      const std::size_t nq = o;
      std::size_t w_out = 0;
      for (std::size_t w = 0; w < win_.size(); ++w) {
        const std::size_t j = nq_ + w;
        if (!retained[j]) {
          ring_.release(win_[w]);
          continue;
        }
        pos_of(o) = pos_of(j);
        win_[w_out++] = win_[w];
        ++o;
      }
      win_.resize(w_out);
      nq_ = nq;
      n_ = o;
      table_.shrink_to(blocks_for(n_));
    }

    void truncate(std::size_t m, float*) {
      if (m >= n_) return;
      if (m <= nq_) {
        for (std::uint16_t r : win_) ring_.release(r);
        win_.clear();
        nq_ = m;
      } else {
        const std::size_t keep = m - nq_;
        for (std::size_t w = keep; w < win_.size(); ++w) ring_.release(win_[w]);
        win_.resize(keep);
      }
      n_ = m;
      table_.shrink_to(blocks_for(n_));
    }

    void clear() {
      n_ = nq_ = 0;
      win_.clear();
      ring_.reset();
      table_.shrink_to(0);
    }

    /// Blocks held + the fp16 window (rows, free list, row list) + the decode table + RoPE angles.
    std::size_t memory_bytes() const {
      return table_.size() * geo_.block + ring_.memory_bytes() + win_.capacity() * sizeof(std::uint16_t) +
             lut_.capacity() * sizeof(float) + (pre_rope_ ? rope_.memory_bytes() : 0);
    }

   private:
    static constexpr std::size_t kCent = std::size_t{1} << Bits;
    static constexpr std::size_t kMaxD = 256;
    struct Layout {
      std::size_t key_off, value_off, block;
    };
    static Layout layout(int d) {
      const std::size_t G = static_cast<std::size_t>(d) / C;
      Layout l;
      l.key_off = align_up(kBlockTokens * sizeof(std::int32_t));
      l.value_off = l.key_off + align_up(G * kBlockTokens * sizeof(Index));
      l.block = l.value_off + align_up(G * kBlockTokens * sizeof(Index));
      return l;
    }
    /// The decode buffer: the centroid table / probability sums [G][2^b], and at least 32 key
    /// rows for the tiles of the rotated-key path.
    static std::size_t table_floats(int d) {
      return std::max(static_cast<std::size_t>(d) / C * kCent, 32 * static_cast<std::size_t>(d));
    }
    static std::size_t blocks_for(std::size_t n) { return (n + kBlockTokens - 1) / kBlockTokens; }
    std::size_t groups() const { return d_ / C; }

    std::byte* block_of(std::size_t j) { return table_.block(j / kBlockTokens); }
    const std::byte* block_of(std::size_t j) const { return table_.block(j / kBlockTokens); }
    std::int32_t& pos_of(std::size_t j) {
      return reinterpret_cast<std::int32_t*>(block_of(j))[j % kBlockTokens];
    }
    std::int32_t pos_of(std::size_t j) const {
      return reinterpret_cast<const std::int32_t*>(block_of(j))[j % kBlockTokens];
    }
    /// &idx[0][j] in j's block; group g at + g·kBlockTokens.
    Index* key_idx(std::size_t j) { return reinterpret_cast<Index*>(block_of(j) + geo_.key_off) + j % kBlockTokens; }
    Index* value_idx(std::size_t j) {
      return reinterpret_cast<Index*>(block_of(j) + geo_.value_off) + j % kBlockTokens;
    }
    const Index* key_idx(std::size_t j) const {
      return reinterpret_cast<const Index*>(block_of(j) + geo_.key_off) + j % kBlockTokens;
    }
    const Index* value_idx(std::size_t j) const {
      return reinterpret_cast<const Index*>(block_of(j) + geo_.value_off) + j % kBlockTokens;
    }

    template <class F>
    void for_each_block(std::size_t n, F&& f) const {
      for (std::size_t j0 = 0; j0 < n; j0 += kBlockTokens) f(j0, std::min(kBlockTokens, n - j0));
    }

    void encode(std::size_t j, const float* k, const float* v) {
      kernels::cq_encode(k, d_, C, kcb_, kCent, key_idx(j), kBlockTokens, best_isa{});
      kernels::cq_encode(v, d_, C, vcb_, kCent, value_idx(j), kBlockTokens, best_isa{});
    }

    /// Encodes the oldest window slot (nq_) from its fp16 row and frees the row.
    void retire_oldest(float* scratch) {
      const std::uint16_t r = win_.front();
      kernels::convert(ring_.key(r), scratch, d_, best_isa{});
      kernels::convert(ring_.value(r), scratch + d_, d_, best_isa{});
      encode(nq_, scratch, scratch + d_);
      ring_.release(r);
      win_.erase(win_.begin());
      ++nq_;
    }

    void move_slot(std::size_t from, std::size_t to, std::size_t G) {
      pos_of(to) = pos_of(from);
      for (std::size_t g = 0; g < G; ++g) {
        key_idx(to)[g * kBlockTokens] = key_idx(from)[g * kBlockTokens];
        value_idx(to)[g * kBlockTokens] = value_idx(from)[g * kBlockTokens];
      }
    }

    /// Logits of slots [j0, j1): fill(j, row) writes slot j's key (store space) into row; the row
    /// is rotated with the slot's position when pre-RoPE (exact angles at every block start), and
    /// tiles of rows go through the dense fp32 logits kernel.
    template <class Fill>
    void rotated_tiles(std::size_t j0, std::size_t j1, common::RopeCursor<kMaxD>& cur, const float* q, int rows,
                       float* out, std::size_t ldl, Fill&& fill) const {
      const std::size_t tile = lut_.size() / d_;
      for (std::size_t t0 = j0; t0 < j1; t0 += tile) {
        const std::size_t nb = std::min(tile, j1 - t0);
        for (std::size_t s = 0; s < nb; ++s) {
          const std::size_t j = t0 + s;
          float* kd = lut_.data() + s * d_;
          fill(j, kd);
          if (pre_rope_) {
            if (j % kBlockTokens == 0) cur.reset();
            cur.rotate(kd, pos_of(j));
          }
        }
        kernels::dense_logits(lut_.data(), d_, nb, static_cast<int>(d_), q, rows, out + t0, ldl, best_isa{});
      }
    }

    std::size_t d_;
    Layout geo_;
    std::size_t window_;
    bool pre_rope_;
    BlockTable table_;
    std::shared_ptr<const CqCodebooks> codebooks_;
    const float *kcb_ = nullptr, *kcbt_ = nullptr, *vcb_ = nullptr, *vcbt_ = nullptr;
    common::Fp16RowPool ring_;
    std::vector<std::uint16_t> win_;     // window rows in slot order: slot nq_ + w uses ring row win_[w]
    mutable std::vector<float> lut_;     // [G][2^b] per-row centroid table / probability sums, or a key tile
    common::RopeAngles rope_;
    std::size_t n_ = 0, nq_ = 0;
  };
};

/// CQ-8c8b: 1 bit per channel (the paper's 1-bit setting).
using Cq8c8b = Cq<8, 8>;
/// CQ-4c8b: 2 bits per channel (the paper's 2-bit setting).
using Cq4c8b = Cq<4, 8>;
/// CQ-2c8b: 4 bits per channel.
using Cq2c8b = Cq<2, 8>;
/// CQ-8c10b: 1.25 bits per channel (indices stored as uint16).
using Cq8c10b = Cq<8, 10>;

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
