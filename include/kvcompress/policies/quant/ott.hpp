// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// OTT — "Accurate KV Cache Quantization with Outlier Tokens Tracing", Yi Su, Yuechi Zhou,
/// Quantong Qiu, Juntao Li, Qingrong Xia, Ping Li, Xinyu Duan, Zhefeng Wang, Min Zhang; ACL 2025
/// (long), arXiv 2505.10938. Spec: methods/quantization.md §8 (+ BB-1, BB-4 P-KIVI, BB-12,
/// BB-13 "G-of-(G+R)", BB-15, BB-16). Reference code yisunlp/OTT was not read; the details are
/// the spec's [paper]/[2nd]/[rec] statements.
///
/// Backbone: KIVI's codec and kernels (keys per channel in groups of G tokens, values per token),
/// both K and V flushed G at a time once the fp16 window holds G + R tokens (the shared engine
/// common/group_flush_store.hpp). Per (layer, KV head): an outlier pool of N_o tokens and an
/// extra pool, both fp16 (common/protected_tokens.hpp). At each flush of a candidate group C:
///  1. m_t = Σ_c |k_{t,c}| (L1 over the head's channels [rec]) for t ∈ C ∪ pool;
///  2. the N_o smallest m_t form the new pool (ties: lower slot first); former members pushed
///     out move to the extra pool (kept fp16, never re-quantized);
///  3. members of C that entered the pool are replaced in C by C's per-channel mean (K and V)
///     before quantizing; their placeholder slots take their logit from the fp16 copy and
///     contribute no value of their own ([rec] "mask placeholder"); §12's `placeholder = attend`
///     (double counting) is not offered: slots map one-to-one to tokens here.
///  4. quantize C.
/// Tracing stops for good (pool frozen, later groups quantized without exclusion) once the extra
/// pool could not take every current pool member, i.e. when extra + pool > extra capacity — our
/// reading of "once the extra pool is full", which never drops an fp16 token.
/// Layers [0, plain_layers) trace no outlier tokens (N_o = 0, the paper's setting for layers 0–1);
/// KVCache passes each store its layer.
/// Eviction: an evicted pool token leaves its pool (when its group is dropped; a dead slot in a
/// retained group keeps its fp16 copy, masked by the cache); no token is promoted in its place.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "kvcompress/core/block_pool.hpp"
#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/policies/quant/common/group_flush_store.hpp"
#include "kvcompress/policies/quant/common/protected_tokens.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {

/// OTT with a Bits-bit KIVI backbone (2, 4 or 8). Paper defaults: `Ott2`.
template <int Bits>
struct Ott {
  static_assert(Bits == 2 || Bits == 4 || Bits == 8, "quant::Ott: Bits must be 2, 4 or 8");
  static constexpr const char* kName = Bits == 2 ? "ott2" : Bits == 4 ? "ott4" : "ott8";
  static constexpr float kMaxAbsInput = kHalfMax;
  /// Table categories.
  static constexpr std::uint8_t kPool = 0, kExtra = 1;

  struct Config {
    int group = 128;            ///< G: key group and flush size (tokens), multiple of 16, ≤ 256
    int residual = 32;          ///< R: fp16 window kept after a flush
    int value_group = 128;      ///< Gv: largest divisor of d ≤ this and a multiple of 32/b
    int outlier_tokens = 3;     ///< N_o: outlier pool capacity (0 = KIVI with G-of-(G+R))
    int plain_layers = 2;       ///< layers [0, plain_layers) use N_o = 0 (paper: layers 0–1)
    int extra_tokens = 32;      ///< extra pool capacity

    void validate(const CacheShape& shape) const {
      constexpr const char* w = "quant::Ott";
      kvcompress::detail::require(shape.head_dim % (32 / Bits) == 0, w, "head_dim", shape.head_dim,
                                  "a multiple of " + std::to_string(32 / Bits));
      kvcompress::detail::require(group > 0 && group <= 256 && group % 16 == 0, w, "group", group,
                                  "a multiple of 16 in [16, 256]");
      kvcompress::detail::require(residual >= 1, w, "residual", residual, "≥ 1");
      kvcompress::detail::require(value_group_for(shape.head_dim, value_group) > 0, w, "value_group", value_group,
                                  "≥ " + std::to_string(32 / Bits));
      kvcompress::detail::require(plain_layers >= 0, w, "plain_layers", plain_layers, ">= 0");
      kvcompress::detail::require(outlier_tokens >= 0 && outlier_tokens <= std::min(group, 64), w, "outlier_tokens",
                                  outlier_tokens, "in [0, min(group, 64)]");
      kvcompress::detail::require(extra_tokens >= 0, w, "extra_tokens", extra_tokens, "≥ 0");
    }
  };

  static constexpr int value_group_for(int d, int g) {
    for (int x = std::min(g, d); x >= 1; --x)
      if (d % x == 0 && x % (32 / Bits) == 0) return x;
    return 0;
  }

  /// Outlier-token tracing (steps 1–3 of the file comment).
  class Tracer {
   public:
    Tracer(const Config& c, int layer) : c_(c), outliers_(layer < c.plain_layers ? 0 : c.outlier_tokens) {}
    std::size_t window_target(std::size_t) const { return static_cast<std::size_t>(c_.residual); }
    std::size_t protect_capacity() const { return static_cast<std::size_t>(c_.outlier_tokens + c_.extra_tokens); }
    bool tracing() const { return !frozen_; }
    void reset() { frozen_ = false; }

    void on_flush(const float* k, std::size_t, int G, int d, common::ProtectedTokens& tab, std::uint8_t* protect) {
      const std::size_t no = static_cast<std::size_t>(outliers_);
      if (frozen_ || no == 0) return;
      const std::size_t pool = tab.count(kPool), extra = tab.count(kExtra);
      if (extra + pool > static_cast<std::size_t>(c_.extra_tokens)) {
        frozen_ = true;
        return;
      }
      // Candidates: pool members (earlier slots) then C's tokens; pick the N_o smallest L1
      // magnitudes, ties to the earlier candidate. Member i < npool refers to table entry idx[i].
      float mag[256 + 64];
      std::size_t ent[64];
      std::size_t np = 0;
      for (std::size_t i = 0; i < tab.size() && np < 64; ++i)
        if (tab.category(i) == kPool) {
          float m = 0.0f;
          for (int c = 0; c < d; ++c) m += std::fabs(to_float(tab.key(i)[c]));
          ent[np] = i;
          mag[np++] = m;
        }
      const std::size_t nc = np + static_cast<std::size_t>(G);
      for (int t = 0; t < G; ++t) {
        float m = 0.0f;
        for (int c = 0; c < d; ++c) m += std::fabs(k[static_cast<std::size_t>(t) * d + c]);
        mag[np + static_cast<std::size_t>(t)] = m;
      }
      bool chosen[256 + 64] = {};
      for (std::size_t s = 0; s < std::min(no, nc); ++s) {
        std::size_t best = nc;
        for (std::size_t i = 0; i < nc; ++i)
          if (!chosen[i] && (best == nc || mag[i] < mag[best])) best = i;
        chosen[best] = true;
      }
      for (std::size_t i = 0; i < np; ++i)
        if (!chosen[i]) tab.set_category(ent[i], kExtra);
      for (int t = 0; t < G; ++t)
        if (chosen[np + static_cast<std::size_t>(t)]) protect[t] = kPool + 1;
    }

   private:
    Config c_;
    int outliers_;  // N_o of this layer
    bool frozen_ = false;
  };

  class Store : public common::GroupFlushStore<Tracer> {
    using Base = common::GroupFlushStore<Tracer>;

   public:
    static common::GroupFlushParams params(int d, const Config& c) {
      return {Bits, c.group, value_group_for(d, c.value_group),
              static_cast<std::size_t>(c.residual) + static_cast<std::size_t>(c.group)};
    }
    static std::size_t block_tokens(const Config& c) { return static_cast<std::size_t>(c.group); }
    static std::size_t block_bytes(int d, const Config& c) { return params(d, c).block_bytes(d); }
    static std::size_t max_blocks(std::size_t capacity, const Config& c) {
      return capacity / static_cast<std::size_t>(c.group) + 1;
    }
    static std::size_t fixed_bytes(int d, const Config& c) {
      return params(d, c).window_bytes(d) +
             common::ProtectedTokens::bytes(static_cast<std::size_t>(c.outlier_tokens + c.extra_tokens), d);
    }
    static std::size_t scratch_floats(int d, const Config& c) { return params(d, c).scratch_floats(d); }

    /// A store used alone traces like a layer ≥ plain_layers.
    Store(int d, const Config& c, BlockTable table) : Base(d, params(d, c), Tracer(c, c.plain_layers), std::move(table)) {}
    /// Stream (layer, kv_head) of a cache: no outlier pool in layers [0, plain_layers).
    Store(int d, const Config& c, BlockTable table, int layer, int /*kv_head*/)
        : Base(d, params(d, c), Tracer(c, layer), std::move(table)) {}
  };
};

/// OTT at the paper's defaults: 2-bit, G = 128, R = 32, N_o = 3, extra pool 32.
using Ott2 = Ott<2>;

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
