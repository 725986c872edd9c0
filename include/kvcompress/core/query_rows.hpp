// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Views of query and key rows of one layer, shared by the cache (which keeps a window of recent
/// prefill queries for window-based scorers) and the attention providers of the eviction policies
/// (policies/evict/common/attention_provider.hpp).

#include <cstddef>
#include <cstdint>

#include "kvcompress/config.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// Post-RoPE query rows of one layer, unscaled (as the engine passed them to attend/observe).
struct QueryRows {
  const float* q = nullptr;           ///< [num_heads][rows][head_dim]
  const std::int32_t* pos = nullptr;  ///< [rows] original positions of the rows
  int num_heads = 0;                  ///< Hq
  std::size_t rows = 0;               ///< |Qset|
  int head_dim = 0;                   ///< d
};

/// Post-RoPE cached keys of one layer (or of one KV head: num_heads = 1).
struct KeyRows {
  const float* k = nullptr;           ///< [num_heads][n][head_dim]
  const std::int32_t* pos = nullptr;  ///< [n] original positions of the slots
  int num_heads = 0;                  ///< Hkv
  std::size_t n = 0;                  ///< cache length
  int head_dim = 0;                   ///< d
};

KVCOMPRESS_NAMESPACE_END
