// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Umbrella header for CPU users: the cache, the policy composition and every policy.
/// (CUDA specializations, when built, come through kvcompress/cuda.hpp.)

#include "kvcompress/config.hpp"
#include "kvcompress/version.hpp"
#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/executor.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/core/kv_cache.hpp"
#include "kvcompress/core/modality.hpp"
#include "kvcompress/policies/evict/fastcache.hpp"
#include "kvcompress/policies/evict/elastic_cache.hpp"
#include "kvcompress/policies/evict/h2o.hpp"
#include "kvcompress/policies/evict/inf_mllm.hpp"
#include "kvcompress/policies/evict/look_m.hpp"
#include "kvcompress/policies/evict/meda.hpp"
#include "kvcompress/policies/evict/none.hpp"
#include "kvcompress/policies/evict/streaming_llm.hpp"
#include "kvcompress/policies/merge/bucket_mean.hpp"
#include "kvcompress/policies/merge/fastcache_compressor.hpp"
#include "kvcompress/policies/merge/look_m.hpp"
#include "kvcompress/policies/merge/none.hpp"
#include "kvcompress/policies/merging_methods.hpp"
#include "kvcompress/policies/policy.hpp"
#include "kvcompress/policies/quant/dense.hpp"
#include "kvcompress/policies/quant/ggml.hpp"
#include "kvcompress/policies/quant/kivi.hpp"
#include "kvcompress/policies/quant/kvquant.hpp"
#include "kvcompress/policies/reuse/vla_cache.hpp"
