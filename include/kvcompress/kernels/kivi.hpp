// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// KIVI kernels (2/4/8-bit asymmetric min–max; keys per channel, values per token), one overload
/// set per ISA. Layouts, the quantization rule and the scalar reference are in
/// kernels/cpu/scalar/kivi.hpp; every quantizer emits byte-identical blobs on every ISA. The
/// AVX-512 key-logits path uses VNNI with an int8 query, and the AVX-512 value path (2/4-bit) uses
/// VNNI with int8 weights per 32-token block; both error bounds are documented in
/// kernels/cpu/avx512/kivi.hpp.

#include "kvcompress/kernels/cpu/scalar/kivi.hpp"
#include "kvcompress/kernels/cpu/avx2/kivi.hpp"
#include "kvcompress/kernels/cpu/avx512/kivi.hpp"
