// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The single place that reads compiler macros. Everything else in kvcompress reads the
/// KVCOMPRESS_* macros defined here (Eigen's ConfigureVectorization.h model):
///   - KVCOMPRESS_HAS_AVX512 / KVCOMPRESS_HAS_AVX2 / KVCOMPRESS_HAS_NEON: 0 or 1, from the target
///     flags the consumer compiles with (-march=x86-64-v3 gives AVX2, -march=x86-64-v4 or native on
///     AVX-512 machines gives AVX-512). KVCOMPRESS_FORCE_SCALAR=1 zeroes all of them.
///   - KVCOMPRESS_HAS_AVX512_VNNI / _BF16 / _FP16 / _VBMI: optional AVX-512 extensions.
///   - KVCOMPRESS_HOST_DEVICE: `__host__ __device__ inline` under nvcc, `inline` otherwise.
///   - KVCOMPRESS_ABI_NAMESPACE: inline namespace naming the selected ISA, so translation units
///     compiled for different ISAs cannot silently link each other's bodies.

#ifndef KVCOMPRESS_FORCE_SCALAR
#define KVCOMPRESS_FORCE_SCALAR 0
#endif

#if !KVCOMPRESS_FORCE_SCALAR && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__) && defined(__AVX512DQ__) && defined(__FMA__) && defined(__F16C__)
#define KVCOMPRESS_HAS_AVX512 1
#else
#define KVCOMPRESS_HAS_AVX512 0
#endif

#if !KVCOMPRESS_FORCE_SCALAR && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define KVCOMPRESS_HAS_AVX2 1
#else
#define KVCOMPRESS_HAS_AVX2 0
#endif

#if !KVCOMPRESS_FORCE_SCALAR && defined(__ARM_NEON)
#define KVCOMPRESS_HAS_NEON 1
#else
#define KVCOMPRESS_HAS_NEON 0
#endif

#if KVCOMPRESS_HAS_AVX512 && defined(__AVX512VNNI__)
#define KVCOMPRESS_HAS_AVX512_VNNI 1
#else
#define KVCOMPRESS_HAS_AVX512_VNNI 0
#endif

#if KVCOMPRESS_HAS_AVX512 && defined(__AVX512BF16__)
#define KVCOMPRESS_HAS_AVX512_BF16 1
#else
#define KVCOMPRESS_HAS_AVX512_BF16 0
#endif

#if KVCOMPRESS_HAS_AVX512 && defined(__AVX512FP16__)
#define KVCOMPRESS_HAS_AVX512_FP16 1
#else
#define KVCOMPRESS_HAS_AVX512_FP16 0
#endif

#if KVCOMPRESS_HAS_AVX512 && defined(__AVX512VBMI__)
#define KVCOMPRESS_HAS_AVX512_VBMI 1
#else
#define KVCOMPRESS_HAS_AVX512_VBMI 0
#endif

#if defined(__CUDACC__)
#define KVCOMPRESS_HOST_DEVICE __host__ __device__ inline
#else
#define KVCOMPRESS_HOST_DEVICE inline
#endif

#if KVCOMPRESS_HAS_AVX512
#define KVCOMPRESS_ABI_NAMESPACE v1_avx512
#elif KVCOMPRESS_HAS_AVX2
#define KVCOMPRESS_ABI_NAMESPACE v1_avx2
#elif KVCOMPRESS_HAS_NEON
#define KVCOMPRESS_ABI_NAMESPACE v1_neon
#else
#define KVCOMPRESS_ABI_NAMESPACE v1_scalar
#endif

/// Opens `namespace kvcompress { inline namespace <abi> {`.
#define KVCOMPRESS_NAMESPACE_BEGIN   \
  namespace kvcompress {             \
  inline namespace KVCOMPRESS_ABI_NAMESPACE {
/// Closes what KVCOMPRESS_NAMESPACE_BEGIN opened.
#define KVCOMPRESS_NAMESPACE_END \
  }                              \
  }
