// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Checks for the library's error contract: a rejected call throws kvcompress::InvalidArgument
/// whose message names the argument (quoted) and says what was expected.

#include <gtest/gtest.h>

#include <string>

#include "kvcompress/core/errors.hpp"

namespace kvtest {

/// Runs f and expects InvalidArgument naming 'argument' and containing "expected".
template <class F>
void expect_invalid_argument(F&& f, const std::string& argument) {
  try {
    f();
    ADD_FAILURE() << "expected InvalidArgument naming '" << argument << "'";
  } catch (const kvcompress::InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'" + argument + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("expected"), std::string::npos) << msg;
  }
}

}  // namespace kvtest
