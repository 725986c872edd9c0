// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// SubKV — "SubKV: Quantizing Long Context KV Cache for Sub-Billion Parameter Language Models on
/// Edge Devices", Ziqian Zeng, Tao Zhang, Zhengdong Lu, Wenjun Li, H. Zhuang, H. Shao, S. G. Teo,
/// X. Zou; Software: Practice and Experience 55(8):1287–1304, 2025, doi 10.1002/spe.3422.
/// Spec: methods/quantization.md §9. No public code; only the abstract's component list is
/// public, so EVERYTHING below beyond "keys per channel, values per token, a dynamic window,
/// attention-sink-aware quantization" is OUR INTERPRETATION (spec [rec]), not the paper's
/// method, and no paper number is reproduced:
///  - Codec: KIVI's (§1): keys per channel in groups of G tokens, values per token in groups of
///    Gv channels, asymmetric min–max, fp16 metadata (kernels/kivi.hpp).
///  - "Dynamic Window Quantization" = a full-precision (fp16) recent window whose target length
///    grows with the number of held slots T: W(T) = clamp(round(ρ·T), W_min, W_max) (round half
///    to even). Whenever the window holds ≥ G + W(T) slots its oldest G are quantized (K and V
///    together; BB-13 G-of-(G+R) with R = W(T)). Invariant after every append: nothing is
///    quantized while T < W(T) + G; after that W(T) ≤ |window| < W(T) + G.
///  - "Attention-sink-aware quantization" = the first `sink_tokens` slots of the cache stay
///    fp16 (as KVQuant §2; rule: a flushed slot with index < sink_tokens is protected, so after
///    eviction frees the first group the next group's leading slots are protected when they are
///    flushed, but an already quantized slot is never promoted): they become protected tokens
///    (common/protected_tokens.hpp), their group is quantized with them replaced by the group
///    mean, and attention uses their exact copies.
/// Defaults (ours): 2-bit, G = 32, Gv = 32, one sink, ρ = 1/16, W_min = 32, W_max = 128.
/// Eviction: as the shared engine (common/group_flush_store.hpp); a sink evicted with its group
/// is not replaced.

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

/// SubKV (our interpretation, see the file comment) with a Bits-bit KIVI codec.
template <int Bits>
struct SubKV {
  static_assert(Bits == 2 || Bits == 4 || Bits == 8, "quant::SubKV: Bits must be 2, 4 or 8");
  static constexpr const char* kName = Bits == 2 ? "subkv2" : Bits == 4 ? "subkv4" : "subkv8";
  static constexpr float kMaxAbsInput = kHalfMax;
  static constexpr std::uint8_t kSink = 0;

  struct Config {
    int group = 32;           ///< G: key group and flush size (tokens), multiple of 16, ≤ 256
    int value_group = 32;     ///< Gv: largest divisor of d ≤ this and a multiple of 32/b
    int sink_tokens = 1;      ///< first slots kept in fp16
    float window_ratio = 0.0625f;  ///< ρ of W(T) = clamp(round(ρ·T), W_min, W_max)
    int window_min = 32;      ///< W_min
    int window_max = 128;     ///< W_max

    void validate(const CacheShape& shape) const {
      constexpr const char* w = "quant::SubKV";
      kvcompress::detail::require(shape.head_dim % (32 / Bits) == 0, w, "head_dim", shape.head_dim,
                                  "a multiple of " + std::to_string(32 / Bits));
      kvcompress::detail::require(group > 0 && group <= 256 && group % 16 == 0, w, "group", group,
                                  "a multiple of 16 in [16, 256]");
      kvcompress::detail::require(value_group_for(shape.head_dim, value_group) > 0, w, "value_group", value_group,
                                  "≥ " + std::to_string(32 / Bits));
      kvcompress::detail::require(sink_tokens >= 0 && sink_tokens <= group, w, "sink_tokens", sink_tokens,
                                  "in [0, group]");
      kvcompress::detail::require(std::isfinite(window_ratio) && window_ratio >= 0.0f, w, "window_ratio",
                                  window_ratio, "a finite ratio ≥ 0");
      kvcompress::detail::require(window_min >= 0, w, "window_min", window_min, "≥ 0");
      kvcompress::detail::require(window_max >= window_min, w, "window_max", window_max,
                                  "≥ window_min = " + std::to_string(window_min));
    }
  };

  static constexpr int value_group_for(int d, int g) {
    for (int x = std::min(g, d); x >= 1; --x)
      if (d % x == 0 && x % (32 / Bits) == 0) return x;
    return 0;
  }

  /// W(T) = clamp(round(ρ·T), W_min, W_max).
  static std::size_t window_for(const Config& c, std::size_t t) {
    const double w = std::nearbyint(static_cast<double>(c.window_ratio) * static_cast<double>(t));
    return static_cast<std::size_t>(std::clamp(w, static_cast<double>(c.window_min), static_cast<double>(c.window_max)));
  }

  /// Dynamic window + sink protection.
  class Hooks {
   public:
    explicit Hooks(const Config& c) : c_(c) {}
    std::size_t window_target(std::size_t n) const { return window_for(c_, n); }
    std::size_t protect_capacity() const { return static_cast<std::size_t>(c_.sink_tokens); }
    void reset() {}
    void on_flush(const float*, std::size_t s0, int G, int, common::ProtectedTokens&, std::uint8_t* protect) const {
      for (int t = 0; t < G; ++t)
        if (s0 + static_cast<std::size_t>(t) < static_cast<std::size_t>(c_.sink_tokens)) protect[t] = kSink + 1;
    }

   private:
    Config c_;
  };

  class Store : public common::GroupFlushStore<Hooks> {
    using Base = common::GroupFlushStore<Hooks>;

   public:
    static common::GroupFlushParams params(int d, const Config& c) {
      return {Bits, c.group, value_group_for(d, c.value_group),
              static_cast<std::size_t>(c.window_max) + static_cast<std::size_t>(c.group)};
    }
    static std::size_t block_tokens(const Config& c) { return static_cast<std::size_t>(c.group); }
    static std::size_t block_bytes(int d, const Config& c) { return params(d, c).block_bytes(d); }
    static std::size_t max_blocks(std::size_t capacity, const Config& c) {
      return capacity / static_cast<std::size_t>(c.group) + 1;
    }
    static std::size_t fixed_bytes(int d, const Config& c) {
      return params(d, c).window_bytes(d) + common::ProtectedTokens::bytes(static_cast<std::size_t>(c.sink_tokens), d);
    }
    static std::size_t scratch_floats(int d, const Config& c) { return params(d, c).scratch_floats(d); }

    Store(int d, const Config& c, BlockTable table) : Base(d, params(d, c), Hooks(c), std::move(table)) {}
  };
};

/// SubKV, 2-bit, with our default window law and one sink (not paper values: none are public).
using SubKV2 = SubKV<2>;

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
