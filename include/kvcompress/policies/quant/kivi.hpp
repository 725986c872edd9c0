// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// KIVI — "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache", Liu et al., ICML 2024,
/// arXiv 2402.02750 (methods/quantization.md §1; reference code jy-yuan/KIVI at 876b4d2).
///
/// Keys are quantized per channel in groups of G tokens, values per token in groups of Gv
/// channels, both asymmetric min–max with fp16 scale and minimum (BB-1). A full-precision (fp16)
/// window keeps recent tokens: keys are flushed in whole blocks of R tokens (K-block flush,
/// BB-13), values slide one token at a time so the last R stay exact (V-sliding).
///
/// Order of operations (bit parity with the reference, §1 "Decode step"): the reference computes
/// a decode step's attention with the new key and value still in full precision and flushes
/// afterwards. Here the engine appends before it attends, so a single-token append defers its
/// flush/slide to the start of the next append; a multi-token append (prefill chunk) settles at
/// once. Consequently, between a decode append and the next append the window may hold R keys
/// and R+1 values; after a prefill append |Kr| = T mod R (< R) and |Vr| = min(T, R) exactly as
/// the reference's prefill; and |Kq| + |Kr| = |Vq| + |Vr| = T always.
///
/// Storage per (layer, KV head): blocks of R slots from the pool, each holding the R/G key group
/// blobs then R value row blobs (layouts in kernels/cpu/scalar/kivi.hpp, identical on every ISA);
/// plus a ring of R+1 fp16 key/value rows for the window. Keys are stored as the engine hands them
/// (post-RoPE in the paper and here). Value groups: Gv = the largest divisor of d that is ≤ G and
/// a multiple of 32/VBits (the spec's [rec] for d % G ≠ 0; d = 128, G = 32 gives Gv = 32).
///
/// Eviction (BB-16): slots in the window and value rows are removed physically; a slot inside a
/// quantized key group cannot be without re-quantizing its group, so it stays masked (dead) until
/// every slot of its group is dead, then the whole group (and its value rows) is dropped.
/// truncate() into a quantized key group dequantizes the group's surviving keys back into the
/// window (they keep the error they already had; no other slot changes).

#include <algorithm>
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
#include "kvcompress/kernels/kivi.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {

/// KIVI with KBits-bit keys and VBits-bit values (each 2, 4 or 8), quantization group
/// GroupSize tokens (keys) / channels (values), residual window Residual tokens.
/// Paper defaults: `Kivi<2, 2, 32, 128>` (KIVI-2) and `Kivi<4, 4, 32, 128>` (KIVI-4).
template <int KBits, int VBits, int GroupSize = 32, int Residual = 128>
struct Kivi {
  static_assert(KBits == 2 || KBits == 4 || KBits == 8, "quant::Kivi: KBits must be 2, 4 or 8");
  static_assert(VBits == 2 || VBits == 4 || VBits == 8, "quant::Kivi: VBits must be 2, 4 or 8");
  static_assert(GroupSize > 0 && GroupSize % kernels::kKiviKeyTileTokens == 0,
                "quant::Kivi: GroupSize must be a positive multiple of 16 (packed key tiles)");
  static_assert(Residual >= GroupSize && Residual % GroupSize == 0,
                "quant::Kivi: Residual must be a positive multiple of GroupSize (R % G == 0)");

  static constexpr const char* kName = KBits == VBits ? (KBits == 2 ? "kivi2" : KBits == 4 ? "kivi4" : "kivi8")
                                                      : "kivi_mixed";
  static constexpr int kKeyBits = KBits;
  static constexpr int kValueBits = VBits;
  static constexpr int kGroupSize = GroupSize;
  static constexpr int kResidual = Residual;
  /// Window and metadata are fp16.
  static constexpr float kMaxAbsInput = kHalfMax;

  /// Value quantization group for head dimension d (see the file comment).
  static constexpr int value_group(int d) {
    for (int g = std::min(GroupSize, d); g >= 1; --g)
      if (d % g == 0 && g % (32 / VBits) == 0) return g;
    return 0;
  }

  /// KIVI is tuning-free: no runtime knobs.
  struct Config {
    void validate(const CacheShape& shape) const {
      kvcompress::detail::require(shape.head_dim % (32 / KBits) == 0 && value_group(shape.head_dim) > 0,
                      "quant::Kivi", "head_dim", shape.head_dim,
                      "a multiple of " + std::to_string(32 / std::min(KBits, VBits)));
    }
  };

  class Store {
   public:
    static std::size_t block_tokens(const Config&) { return Residual; }
    static std::size_t block_bytes(int d, const Config&) { return geometry(d).block; }
    static std::size_t max_blocks(std::size_t capacity, const Config&) {
      return (capacity + Residual - 1) / Residual;
    }
    static std::size_t fixed_bytes(int d, const Config&) {
      return 2 * kWindow * static_cast<std::size_t>(d) * sizeof(half);
    }
    static std::size_t scratch_floats(int d, const Config&) {
      return static_cast<std::size_t>(GroupSize) * static_cast<std::size_t>(d);
    }

    Store(int d, const Config&, BlockTable table)
        : d_(d), gv_(value_group(d)), geo_(geometry(d)), table_(std::move(table)),
          ring_k_(kWindow * static_cast<std::size_t>(d)), ring_v_(kWindow * static_cast<std::size_t>(d)) {}

    /// Physical slots.
    std::size_t size() const { return n_; }
    /// Slots whose keys are quantized (|Kq|) and whose values are (|Vq|).
    std::size_t quantized_keys() const { return nk_; }
    std::size_t quantized_values() const { return nv_; }

    void append(const float* k, const float* v, std::size_t ld, std::size_t n, float* scratch) {
      for (std::size_t t = 0; t < n; ++t) {
        settle(scratch);
        half* rk = ring_k_.data() + ring_index(n_) * ud();
        half* rv = ring_v_.data() + ring_index(n_) * ud();
        kernels::convert(k + t * ld, rk, ud(), best_isa{});
        kernels::convert(v + t * ld, rv, ud(), best_isa{});
        ++n_;
      }
      if (n > 1) settle(scratch);
    }

    void logits(const float* q, int rows, float* out, std::size_t ldl) const {
      for (std::size_t j0 = 0; j0 < nk_; j0 += Residual) {
        const std::size_t groups = std::min<std::size_t>(Residual, nk_ - j0) / GroupSize;
        kernels::kivi_key_logits(key_group(j0), groups, GroupSize, d_, KBits, q, rows, out + j0, ldl,
                                 best_isa{});
      }
      for_window(nk_, [&](const half* k, const half*, std::size_t j, std::size_t cnt) {
        kernels::dense_logits(k, ud(), cnt, d_, q, rows, out + j, ldl, best_isa{});
      });
    }

    void accumulate(const float* p, std::size_t ldp, int rows, float* out) const {
      for (std::size_t j0 = 0; j0 < nv_; j0 += Residual) {
        const std::size_t cnt = std::min<std::size_t>(Residual, nv_ - j0);
        kernels::kivi_value_accumulate(value_row(j0), cnt, d_, gv_, VBits, p + j0, ldp, rows, out,
                                       best_isa{});
      }
      for_window(nv_, [&](const half*, const half* v, std::size_t j, std::size_t cnt) {
        kernels::dense_accumulate(v, ud(), cnt, d_, p + j, ldp, rows, out, best_isa{});
      });
    }

    void read(std::size_t j0, std::size_t j1, float* k, float* v, std::size_t ld, float* scratch) const {
      std::size_t decoded_group = SIZE_MAX;
      for (std::size_t j = j0; j < j1; ++j) {
        float* kd = k + (j - j0) * ld;
        float* vd = v + (j - j0) * ld;
        if (j < nk_) {
          const std::size_t g = j / GroupSize;
          if (g != decoded_group) {
            kernels::kivi_dequantize_key_group(key_group(g * GroupSize), GroupSize, d_, KBits, scratch, ud(),
                                               best_isa{});
            decoded_group = g;
          }
          std::copy(scratch + (j % GroupSize) * ud(), scratch + (j % GroupSize + 1) * ud(), kd);
        } else {
          kernels::convert(ring_k_.data() + ring_index(j) * ud(), kd, ud(), best_isa{});
        }
        if (j < nv_) {
          kernels::kivi_dequantize_value_rows(value_row(j), 1, d_, gv_, VBits, vd, ud(), best_isa{});
        } else {
          kernels::convert(ring_v_.data() + ring_index(j) * ud(), vd, ud(), best_isa{});
        }
      }
    }

    /// A quantized key group is retained whole if any of its slots is kept (its dead slots stay
    /// masked); every other slot is retained iff kept.
    std::size_t plan_compact(const std::uint8_t* keep, std::uint8_t* retained) const {
      std::size_t count = 0;
      for (std::size_t g0 = 0; g0 < nk_; g0 += GroupSize) {
        const bool any = std::any_of(keep + g0, keep + g0 + GroupSize, [](std::uint8_t x) { return x != 0; });
        std::fill(retained + g0, retained + g0 + GroupSize, static_cast<std::uint8_t>(any));
        count += any ? GroupSize : 0;
      }
      for (std::size_t j = nk_; j < n_; ++j) {
        retained[j] = keep[j] ? 1 : 0;
        count += retained[j];
      }
      return count;
    }

    void compact(const std::uint8_t* retained, float*) {
      const std::size_t gb = geo_.key_group;
      std::size_t nk = 0;
      for (std::size_t g0 = 0; g0 < nk_; g0 += GroupSize) {
        if (!retained[g0]) continue;
        if (nk != g0) std::memcpy(key_group(nk), key_group(g0), gb);
        nk += GroupSize;
      }
      std::size_t nv = 0;
      for (std::size_t j = 0; j < nv_; ++j) {
        if (!retained[j]) continue;
        if (nv != j) std::memcpy(value_row(nv), value_row(j), geo_.value_row);
        ++nv;
      }
      // Window slots [w0, n): compact inside the ring (destination index ≤ source index).
      const std::size_t w0 = window_begin();
      std::size_t kept_before = 0;
      for (std::size_t j = 0; j < w0; ++j) kept_before += retained[j];
      std::size_t o = 0;
      for (std::size_t j = w0; j < n_; ++j) {
        if (!retained[j]) continue;
        const std::size_t src = ring_index(j), dst = (ring_base_ + o) % kWindow;
        if (src != dst) {
          std::memcpy(ring_k_.data() + dst * ud(), ring_k_.data() + src * ud(), ud() * sizeof(half));
          std::memcpy(ring_v_.data() + dst * ud(), ring_v_.data() + src * ud(), ud() * sizeof(half));
        }
        ++o;
      }
      nk_ = nk;
      nv_ = nv;
      n_ = kept_before + o;  // window_begin() is now kept_before == min(nk_, nv_)
      table_.shrink_to(blocks_for(std::max(nk_, nv_)));
    }

    void truncate(std::size_t m, float* scratch) {
      if (m >= n_) return;
      const std::size_t w0 = window_begin();
      const std::size_t nv = std::min(nv_, m);
      std::size_t nk = std::min(nk_, m);
      if (m < nk_ && m % GroupSize != 0) {
        nk = m / GroupSize * GroupSize;  // the group holding m goes back to the window
        kernels::kivi_dequantize_key_group(key_group(nk), GroupSize, d_, KBits, scratch, ud(), best_isa{});
      }
      const std::size_t w1 = std::min(nk, nv);
      // Keep each surviving window slot at its ring position: re-anchor the ring at w1.
      if (w1 < w0) ring_base_ = (ring_base_ + kWindow - (w0 - w1) % kWindow) % kWindow;
      else ring_base_ = (ring_base_ + (w1 - w0)) % kWindow;
      const std::size_t w_old = w0;
      nk_ = nk;
      nv_ = nv;
      n_ = m;
      // Keys of slots [nk, min(m, w_old)) were only quantized: restore them from the group.
      for (std::size_t j = nk; j < std::min(m, w_old); ++j)
        kernels::convert(scratch + (j - nk) * ud(), ring_k_.data() + ring_index(j) * ud(), ud(), best_isa{});
      table_.shrink_to(blocks_for(std::max(nk_, nv_)));
    }

    void clear() {
      n_ = nk_ = nv_ = ring_base_ = 0;
      table_.shrink_to(0);
    }

    std::size_t memory_bytes() const { return table_.size() * geo_.block + fixed_bytes(d_, Config{}); }

   private:
    static constexpr std::size_t kWindow = Residual + 1;  // R fp slots + the deferred one

    struct Geometry {
      std::size_t key_group, value_row, value_offset, block;
    };
    static Geometry geometry(int d) {
      Geometry g;
      g.key_group = kernels::kivi_key_group_bytes(GroupSize, d, KBits);
      g.value_row = kernels::kivi_value_row_bytes(d, value_group(d), VBits);
      g.value_offset = align_up(g.key_group * (Residual / GroupSize));
      g.block = align_up(g.value_offset + g.value_row * Residual);
      return g;
    }

    std::size_t ud() const { return static_cast<std::size_t>(d_); }
    static std::size_t blocks_for(std::size_t slots) { return (slots + Residual - 1) / Residual; }
    std::size_t window_begin() const { return std::min(nk_, nv_); }
    std::size_t ring_index(std::size_t j) const { return (ring_base_ + (j - window_begin())) % kWindow; }

    std::uint8_t* key_group(std::size_t j) {
      return reinterpret_cast<std::uint8_t*>(table_.block(j / Residual)) + (j % Residual) / GroupSize * geo_.key_group;
    }
    const std::uint8_t* key_group(std::size_t j) const {
      return reinterpret_cast<const std::uint8_t*>(table_.block(j / Residual)) +
             (j % Residual) / GroupSize * geo_.key_group;
    }
    std::uint8_t* value_row(std::size_t j) {
      return reinterpret_cast<std::uint8_t*>(table_.block(j / Residual)) + geo_.value_offset +
             (j % Residual) * geo_.value_row;
    }
    const std::uint8_t* value_row(std::size_t j) const {
      return reinterpret_cast<const std::uint8_t*>(table_.block(j / Residual)) + geo_.value_offset +
             (j % Residual) * geo_.value_row;
    }

    /// Calls f(k, v, first_slot, count) for the ring rows of slots [from, n) in contiguous runs.
    template <class F>
    void for_window(std::size_t from, F&& f) const {
      std::size_t j = from;
      while (j < n_) {
        const std::size_t r = ring_index(j);
        const std::size_t cnt = std::min(n_ - j, kWindow - r);
        f(ring_k_.data() + r * ud(), ring_v_.data() + r * ud(), j, cnt);
        j += cnt;
      }
    }

    /// Applies pending flushes: K-block flush when R keys wait, V-sliding while > R values wait.
    void settle(float* scratch) {
      const std::size_t w0 = window_begin();
      while (n_ - nk_ >= static_cast<std::size_t>(Residual)) {
        table_.grow_to(blocks_for(nk_ + Residual));
        for (int g = 0; g < Residual / GroupSize; ++g, nk_ += GroupSize) {
          for (std::size_t t = 0; t < static_cast<std::size_t>(GroupSize); ++t)
            kernels::convert(ring_k_.data() + ring_index_from(w0, nk_ + t) * ud(), scratch + t * ud(), ud(),
                             best_isa{});
          kernels::kivi_quantize_key_group(scratch, ud(), GroupSize, d_, KBits, key_group(nk_), best_isa{});
        }
      }
      while (n_ - nv_ > static_cast<std::size_t>(Residual)) {
        table_.grow_to(blocks_for(nv_ + 1));
        kernels::convert(ring_v_.data() + ring_index_from(w0, nv_) * ud(), scratch, ud(), best_isa{});
        kernels::kivi_quantize_value_rows(scratch, ud(), 1, d_, gv_, VBits, value_row(nv_), best_isa{});
        ++nv_;
      }
      ring_base_ = (ring_base_ + (window_begin() - w0)) % kWindow;
    }
    std::size_t ring_index_from(std::size_t w0, std::size_t j) const { return (ring_base_ + (j - w0)) % kWindow; }

    int d_;
    int gv_;
    Geometry geo_;
    BlockTable table_;
    std::vector<half> ring_k_, ring_v_;  // [kWindow][d] each: slots [window_begin(), n) from ring_base_
    std::size_t n_ = 0, nk_ = 0, nv_ = 0, ring_base_ = 0;
  };
};

/// KIVI-2 with the paper's defaults (G = 32, R = 128).
using Kivi2 = Kivi<2, 2, 32, 128>;
/// KIVI-4 with the paper's defaults (G = 32, R = 128).
using Kivi4 = Kivi<4, 4, 32, 128>;

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
