// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// GEAR error-correction kernels (low-rank and sparse-outlier terms of a compressed block; the
/// quantized backbone uses kernels/kivi.hpp). Layouts and the scalar reference are in
/// kernels/cpu/scalar/gear.hpp. The low-rank terms (O(rank·(n + d)) per block) have AVX2
/// overloads and the outlier corrections (O(nnz·rank)) an F16C one, which AVX-512 builds reach
/// through the tag chain; block decoding (read/truncate, off the decode path) is scalar.

#include "kvcompress/kernels/cpu/scalar/gear.hpp"
#include "kvcompress/kernels/cpu/avx2/gear.hpp"
