// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The empty merge axis: evicted slots are dropped, nothing is folded into kept slots.

#include "kvcompress/core/cache_shape.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace merge {

/// Drop evicted slots without merging.
struct None {
  static constexpr const char* kName = "none";
  struct Config {
    void validate(const CacheShape&) const {}
  };
};

}  // namespace merge
KVCOMPRESS_NAMESPACE_END
