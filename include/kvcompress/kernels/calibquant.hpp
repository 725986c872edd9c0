// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// CalibQuant kernels (1-bit P-CALIB codes, post-scaling; methods/quantization.md §4, BB-15), one
/// overload set per ISA. Layout and the scalar reference: kernels/cpu/scalar/calibquant.hpp. The
/// SIMD versions are exact fp32 evaluations that differ from scalar only in summation order.

#include "kvcompress/kernels/cpu/scalar/calibquant.hpp"
#include "kvcompress/kernels/cpu/avx2/calibquant.hpp"
#include "kvcompress/kernels/cpu/avx512/calibquant.hpp"
