// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The library's error type and the argument checks used at every API boundary. A failed check
/// throws before any state is modified, so a rejected call leaves the cache exactly as it was.
/// Messages name the function, the argument, the value received and the value expected.

#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kvcompress/config.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// Thrown for invalid arguments and configurations (bad shapes, unsupported head_dim or bit
/// widths, capacity exceeded, NaN/Inf values, layer out of range, infeasible budgets, …).
class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

/// Builds "where: argument 'name' = got; expected expected".
template <class Got>
std::string argument_message(const char* where, const char* name, const Got& got,
                             const std::string& expected) {
  std::ostringstream os;
  os << where << ": argument '" << name << "' = " << got << "; expected " << expected;
  return os.str();
}

/// Throws InvalidArgument unless `ok`. `expected` is a string, or a callable returning one that
/// runs only on failure (hot paths use that form so a passing check never allocates).
template <class Got, class Expected>
void require(bool ok, const char* where, const char* name, const Got& got, const Expected& expected) {
  if (ok) return;
  if constexpr (std::is_invocable_v<const Expected&>) {
    throw InvalidArgument(argument_message(where, name, got, std::string(expected())));
  } else {
    throw InvalidArgument(argument_message(where, name, got, std::string(expected)));
  }
}

}  // namespace detail

KVCOMPRESS_NAMESPACE_END
