// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The evict-and-merge methods of eviction spec §2, §3 and §6 as complete Policy compositions with
/// their paper defaults, over any quantizer (`quant::None` = fp16 by default; e.g. quant::Kivi2
/// for LOOK-M + KIVI-2: selection and merging run on the full-precision prompt, then the kept rows
/// are quantized, quantization spec BB-16).
///   LookMPolicy           text prior + P-Merge (LOOK-M paper default, arXiv 2406.18139)
///   LookMAveragePolicy    text prior + A-Merge
///   LookMWeightedPolicy   text prior + W-Merge
///   MedaPolicy            entropy layer budgets + LOOK-M selection + average merge (arXiv 2502.17599)
///   ElasticCachePolicy    importance anchors + bucket mean + fixed-offset decode eviction
///                         (arXiv 2407.18121); keep Config::merge.sinks / last_token equal to
///                         Config::evict.sinks / last_token (the defaults are).

#include "kvcompress/policies/evict/elastic_cache.hpp"
#include "kvcompress/policies/evict/look_m.hpp"
#include "kvcompress/policies/evict/meda.hpp"
#include "kvcompress/policies/merge/bucket_mean.hpp"
#include "kvcompress/policies/merge/look_m.hpp"
#include "kvcompress/policies/policy.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

template <class Quant = quant::None>
using LookMPolicy = Policy<evict::LookM, merge::LookMPivotal, Quant>;
template <class Quant = quant::None>
using LookMAveragePolicy = Policy<evict::LookM, merge::LookMAverage, Quant>;
template <class Quant = quant::None>
using LookMWeightedPolicy = Policy<evict::LookM, merge::LookMWeighted, Quant>;
template <class Quant = quant::None>
using MedaPolicy = Policy<evict::Meda, merge::Meda, Quant>;
template <class Quant = quant::None>
using ElasticCachePolicy = Policy<evict::ElasticCache, merge::BucketMean, Quant>;

KVCOMPRESS_NAMESPACE_END
