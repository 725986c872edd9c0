// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// ISA tag types (xsimd-style chain). Every kernel is an overload set whose last parameter is a
/// tag; calling with `best_isa{}` picks the most specific overload compiled into this build, and a
/// family without a fast path falls back to the scalar overload through the tag's base class.
/// Tests call each tag up to `best_isa` explicitly and compare against `isa::scalar`.

#include "kvcompress/config.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace isa {

/// Portable reference: plain loops, always compiled.
struct scalar {
  static constexpr const char* kName = "scalar";
};
/// x86-64-v3: AVX2 + FMA + F16C.
struct avx2 : scalar {
  static constexpr const char* kName = "avx2";
};
/// x86-64-v4: AVX-512 F/BW/DQ/VL (+ VNNI/BF16/FP16/VBMI where KVCOMPRESS_HAS_AVX512_* say so).
struct avx512 : avx2 {
  static constexpr const char* kName = "avx512";
};
/// AArch64 Advanced SIMD.
struct neon : scalar {
  static constexpr const char* kName = "neon";
};

#if KVCOMPRESS_HAS_AVX512
using best = avx512;
#elif KVCOMPRESS_HAS_AVX2
using best = avx2;
#elif KVCOMPRESS_HAS_NEON
using best = neon;
#else
using best = scalar;
#endif

}  // namespace isa

/// The most specific ISA this translation unit was compiled for.
using best_isa = isa::best;

KVCOMPRESS_NAMESPACE_END
