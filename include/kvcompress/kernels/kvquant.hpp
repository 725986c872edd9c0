// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// KVQuant kernels (methods/quantization.md §2): row format, per-slot decode with RoPE at the
/// slot's position, fused logits/accumulate. Scalar reference and row format in
/// kernels/cpu/scalar/kvquant.hpp; AVX2/AVX-512 overloads vectorize the per-slot dot/axpy over
/// all query rows (decode is bit-identical on every ISA; only fp32 summation order differs).

#include "kvcompress/kernels/cpu/scalar/kvquant.hpp"
#include "kvcompress/kernels/cpu/avx2/kvquant.hpp"
#include "kvcompress/kernels/cpu/avx512/kvquant.hpp"
