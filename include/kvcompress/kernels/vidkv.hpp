// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// VidKV kernels (per-channel code planes of 32-token groups; methods/quantization.md §6), one
/// overload set per ISA. Layout and the scalar reference: kernels/cpu/scalar/vidkv.hpp.

#include "kvcompress/kernels/cpu/scalar/vidkv.hpp"
#include "kvcompress/kernels/cpu/avx2/vidkv.hpp"
#include "kvcompress/kernels/cpu/avx512/vidkv.hpp"
