// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// CQ kernels (c-channel vector quantization with per-step centroid tables), one overload set per
/// ISA. Layouts and the scalar reference: kernels/cpu/scalar/cq.hpp.

#include "kvcompress/kernels/cpu/scalar/cq.hpp"
#include "kvcompress/kernels/cpu/avx2/cq.hpp"
#include "kvcompress/kernels/cpu/avx512/cq.hpp"
