// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// StreamingLLM — "Efficient Streaming Language Models with Attention Sinks", Xiao et al.,
/// ICLR 2024, arXiv 2309.17453 (eviction spec §13.1). Keeps the first `sink_tokens` slots
/// (attention sinks) and the most recent `window_tokens`; everything in between is evicted once
/// the cache is full, before each append.
///
/// Positions: the paper re-assigns positions inside the cache, which needs pre-RoPE keys or
/// re-rotation of stored keys. The stores here keep post-RoPE keys (KIVI and the dense stores, as
/// engines hand them), so kept slots keep their original positions (spec §0 rule 3; BB-16
/// rule 5 rejects re-rotating quantized post-RoPE keys). Re-positioning arrives with the pre-RoPE
/// stores (KVQuant/CQ).
///
/// A prefill chunk longer than the window is appended whole (its queries need every key of the
/// chunk); the cache then holds sinks + the chunk until the next append trims it, so size the
/// capacity for sink + window + the largest chunk.

#include <cstddef>
#include <cstdint>
#include <string>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/policies/evict/none.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// Attention sinks + recent window, one decision per layer (all heads keep the same slots).
struct StreamingLLM : Base {
  static constexpr const char* kName = "streaming_llm";
  static constexpr bool kPerHead = false;

  struct Config {
    std::size_t sink_tokens = 4;       ///< S: first slots always kept (paper: 4)
    std::size_t window_tokens = 1020;  ///< W: most recent slots kept (paper: cache 1024 = 4 + 1020)

    void validate(const CacheShape& shape) const {
      detail::require(window_tokens >= 1, "evict::StreamingLLM", "window_tokens", window_tokens, ">= 1");
      detail::require(sink_tokens + window_tokens <= shape.capacity, "evict::StreamingLLM",
                      "sink_tokens + window_tokens", sink_tokens + window_tokens,
                      "<= capacity (" + std::to_string(shape.capacity) + ")");
    }
  };

  /// Evicts the oldest non-sink live slots so that live + n_incoming ≤ S + W where possible.
  static void make_room(const Config& c, const SlotView& s, std::size_t n_incoming, std::uint8_t* keep) {
    const std::size_t budget = c.sink_tokens + c.window_tokens;
    if (s.n_alive + n_incoming <= budget) return;
    std::size_t excess = s.n_alive + n_incoming - budget;
    std::size_t sinks = 0;
    for (std::size_t j = 0; j < s.n && excess > 0; ++j) {
      if (!s.alive[j]) continue;
      if (sinks < c.sink_tokens) {
        ++sinks;
        continue;
      }
      keep[j] = 0;
      --excess;
    }
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
