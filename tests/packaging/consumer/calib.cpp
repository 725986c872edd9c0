// SPDX-License-Identifier: Apache-2.0
// Downstream check of kvcompress::calib: the Eigen-backed headers compile from the consumer's
// side with nothing but the target's usage requirements.
#include <kvcompress/calib/low_rank.hpp>

int main() { return 0; }
