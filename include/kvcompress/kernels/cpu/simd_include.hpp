// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Includes <immintrin.h> for the x86 kernel headers. GCC 12's AVX-512 intrinsics
/// (`_mm512_srli_epi32`, `_mm512_cvtps_ph`, …) self-initialise `_mm512_undefined_*()` values
/// and trip a false -W(maybe-)uninitialized at every use (GCC bug 105593, fixed in GCC 13);
/// diagnostics are located in the intrinsics header, so silencing them around its first
/// inclusion keeps user builds with -Wall clean. Included only from avx2/ and avx512/ headers.

#include "kvcompress/config.hpp"

#if KVCOMPRESS_HAS_AVX2 || KVCOMPRESS_HAS_AVX512
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif
#endif
