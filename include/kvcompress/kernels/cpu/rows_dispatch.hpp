// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Runtime → compile-time switch for the number of query rows of the attention kernels: the SIMD
/// bodies keep one accumulator register per row, so the row count must be a template parameter.
/// ISA-neutral (no intrinsics); used by the AVX2 and AVX-512 kernel headers.

#include <type_traits>
#include <utility>

#include "kvcompress/config.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

template <class F, int... I>
inline void dispatch_rows_impl(int rows, F& f, std::integer_sequence<int, I...>) {
  (void)((rows == I + 1 ? (f(std::integral_constant<int, I + 1>{}), true) : false) || ...);
}

/// Calls f(std::integral_constant<int, rows>{}) for rows in [1, Max]; does nothing otherwise.
template <int Max, class F>
inline void dispatch_rows(int rows, F&& f) {
  dispatch_rows_impl(rows, f, std::make_integer_sequence<int, Max>{});
}

}  // namespace detail
}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
