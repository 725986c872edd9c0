// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-16 rule 4 of methods/quantization.md: the space a store keeps its keys in. Post-RoPE stores
/// keep what attention dots with the query; pre-RoPE stores (KVQuant, CQ: BB-14) keep the key
/// before rotary embedding plus its position and rotate at attention/read time.

#include "kvcompress/config.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Key space of a store.
enum class KeySpace {
  kPostRope,  ///< keys as attention uses them (RoPE already applied by the engine)
  kPreRope,   ///< keys before RoPE; the store rotates them with each slot's original position
};

inline const char* to_string(KeySpace s) { return s == KeySpace::kPreRope ? "pre_rope" : "post_rope"; }

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
