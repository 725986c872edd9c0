// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Vector exponential for fp32 softmax, one overload set per ISA:
///   float max_value(const float* x, n, tag)
///   float exp_shift_sum(float* x, n, float m, tag)   // x[i] = exp(x[i] − m), returns the sum
/// The scalar overload uses std::exp; the SIMD overloads use a degree-6 polynomial whose
/// relative error is below 2^-22 (about 2 ulp) over the whole fp32 range, −inf → 0 exactly.

#include "kvcompress/kernels/cpu/scalar/softmax.hpp"
#include "kvcompress/kernels/cpu/avx2/softmax.hpp"
#include "kvcompress/kernels/cpu/avx512/softmax.hpp"
