// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AKVQ-VL kernels (WHT-rotated per-token 2/4-bit rows with integer zero points), one overload
/// set per ISA. Row format and the scalar reference: kernels/cpu/scalar/akvq_vl.hpp.

#include "kvcompress/kernels/cpu/scalar/akvq_vl.hpp"
#include "kvcompress/kernels/cpu/avx2/akvq_vl.hpp"
#include "kvcompress/kernels/cpu/avx512/akvq_vl.hpp"
