// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Library version (kept in step with project(VERSION) in CMakeLists.txt).

#define KVCOMPRESS_VERSION_MAJOR 0
#define KVCOMPRESS_VERSION_MINOR 1
#define KVCOMPRESS_VERSION_PATCH 0
