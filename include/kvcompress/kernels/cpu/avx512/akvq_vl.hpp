// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX-512 AKVQ-VL kernels: none of their own. A row's groups are 64–128 channels and the loop
/// per slot is short, so 8-wide AVX2 (kernels/cpu/avx2/akvq_vl.hpp) is used for isa::avx512
/// through the tag chain; this header exists so the include pattern matches the other methods.

#include "kvcompress/kernels/cpu/avx2/akvq_vl.hpp"
