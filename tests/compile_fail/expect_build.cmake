# SPDX-License-Identifier: Apache-2.0
# cmake -P harness for one compile-fail test (see CMakeLists.txt next to this file).
# Inputs (-D): BINARY_DIR, TARGET, EXPECT (fail | ok), optional EXPECT_REGEX, optional CONFIG.
cmake_minimum_required(VERSION 3.21)

set(_cmd ${CMAKE_COMMAND} --build ${BINARY_DIR} --target ${TARGET})
if(CONFIG)
  list(APPEND _cmd --config ${CONFIG})
endif()
execute_process(COMMAND ${_cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)

if(EXPECT STREQUAL "fail")
  if(rc EQUAL 0)
    message(FATAL_ERROR "${TARGET} compiled with KVCOMPRESS_SHOULD_FAIL, but it must not:\n${out}")
  endif()
  if(EXPECT_REGEX AND NOT out MATCHES "${EXPECT_REGEX}")
    message(FATAL_ERROR "${TARGET} failed to compile as expected, but the output does not match "
                        "'${EXPECT_REGEX}':\n${out}")
  endif()
  message(STATUS "${TARGET}: failed to compile, as required")
elseif(EXPECT STREQUAL "ok")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${TARGET} must compile without KVCOMPRESS_SHOULD_FAIL (exit ${rc}):\n${out}")
  endif()
  message(STATUS "${TARGET}: compiled")
else()
  message(FATAL_ERROR "expect_build.cmake: EXPECT must be 'fail' or 'ok', not '${EXPECT}'")
endif()
