// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// KIVI kernels (2/4/8-bit asymmetric min–max; keys per channel, values per token), one overload
/// set per ISA. Layouts, the quantization rule and the scalar reference are in
/// kernels/cpu/scalar/kivi.hpp; every quantizer emits byte-identical blobs on every ISA. The fused
/// decode kernels (key logits, value accumulation) are exact fp32 on every ISA; AVX-512 builds use
/// the AVX2 ones (measured faster here; see kernels/cpu/avx512/kivi.hpp).

#include "kvcompress/kernels/cpu/scalar/kivi.hpp"
#include "kvcompress/kernels/cpu/avx2/kivi.hpp"
#include "kvcompress/kernels/cpu/avx512/kivi.hpp"
