// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Decode-attention kernels over a dense float or half cache, one overload set per ISA:
///   dense_logits<T>(k, ldk, n, d, q, rows, logits, ldl, tag)     logits = q·kᵀ
///   dense_accumulate<T>(v, ldv, n, d, p, ldp, rows, out, tag)    out += p·v
/// T ∈ {float, half}; rows ∈ 1..16 query rows share one pass over the cache.

#include "kvcompress/kernels/cpu/scalar/dense_attention.hpp"
#include "kvcompress/kernels/cpu/avx2/dense_attention.hpp"
#include "kvcompress/kernels/cpu/avx512/dense_attention.hpp"
