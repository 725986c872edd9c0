// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Bulk conversion between fp32 and the 16-bit storage types, one overload set per ISA:
///   convert(const half*, float*, n, tag)      convert(const bfloat16*, float*, n, tag)
///   convert(const float*, half*, n, tag)      convert(const float*, bfloat16*, n, tag)
///   convert(const float*, float*, n, tag)     (copy)
/// Every overload is bit-identical to the scalar conversions of core/float16.hpp. Call with
/// `best_isa{}` to get the fastest compiled path.

#include "kvcompress/kernels/cpu/scalar/convert.hpp"
#include "kvcompress/kernels/cpu/avx2/convert.hpp"
#include "kvcompress/kernels/cpu/avx512/convert.hpp"
