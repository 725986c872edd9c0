// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX2 KIVI kernels: not written yet. No overload is declared here, so every `isa::avx2` (and
/// the AVX-512 fallbacks that forward to `isa::avx2`) call resolves to the scalar reference
/// through the tag chain. Planned: fp32 key logits over the 16-token × channel-quad layout
/// (bytes widened with shifts, qs = q⊙s broadcast) and the FMA value path of the AVX-512 header.

#include "kvcompress/kernels/cpu/scalar/kivi.hpp"
