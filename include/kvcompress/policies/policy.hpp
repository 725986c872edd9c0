// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// `Policy<Evict, Merge, Quant>`: one compression method as the composition of three orthogonal
/// axes, each with a `None`. `KVCache<Policy<>>` is the dense fp16 cache, so every benchmark and
/// evaluation compares a method against the baseline in the same run.

#include <string>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/policies/evict/none.hpp"
#include "kvcompress/policies/merge/none.hpp"
#include "kvcompress/policies/quant/dense.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// Composition of an eviction, a merge and a quantization policy.
/// \tparam EvictT which slots to keep (evict::None, evict::StreamingLLM, evict::H2O, …)
/// \tparam MergeT how evicted slots fold into kept ones (merge::None)
/// \tparam QuantT how each (layer, KV head) stream is stored (quant::None = dense fp16,
///         quant::DenseF32, quant::Kivi<…>, …)
template <class EvictT = evict::None, class MergeT = merge::None, class QuantT = quant::None>
struct Policy {
  using Evict = EvictT;
  using Merge = MergeT;
  using Quant = QuantT;

  /// Runtime knobs of the three axes, validated together when a cache is built.
  struct Config {
    typename Evict::Config evict{};
    typename Merge::Config merge{};
    typename Quant::Config quant{};

    void validate(const CacheShape& shape) const {
      evict.validate(shape);
      merge.validate(shape);
      quant.validate(shape);
    }
  };

  /// "evict+merge+quant", skipping None axes ("dense_f16" for Policy<>).
  static std::string name() {
    std::string n;
    auto add = [&n](const char* part, bool skip) {
      if (skip) return;
      if (!n.empty()) n += '+';
      n += part;
    };
    add(Evict::kName, std::string(Evict::kName) == "none");
    add(Merge::kName, std::string(Merge::kName) == "none");
    add(Quant::kName, false);
    return n;
  }
};

KVCOMPRESS_NAMESPACE_END
