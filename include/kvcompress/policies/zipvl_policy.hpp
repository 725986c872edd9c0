// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// ZipVL as the paper composes it (He et al., arXiv 2410.08584; eviction spec §7 steps 2–6): the
/// τ-threshold important-token split of evict::ZipVL decides each token's precision tier and
/// quant::ZipVLMixed stores the important set T at 4 bits and the rest U at 2 bits; decode tokens
/// wait in full precision until the next re-rank (every `interval` = 100 tokens). Another
/// tier-aware store may be passed; with a single-precision store evict::ZipVL evicts U instead.

#include "kvcompress/policies/evict/zipvl.hpp"
#include "kvcompress/policies/policy.hpp"
#include "kvcompress/policies/quant/mixed_precision.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

template <class Quant = quant::ZipVLMixed>
using ZipVLPolicy = Policy<evict::ZipVL, merge::None, Quant>;

KVCOMPRESS_NAMESPACE_END
