# SPDX-License-Identifier: Apache-2.0
# cmake -P driver for one packaging test (see CMakeLists.txt next to this file).
# Inputs (-D): MODE (install | build_tree | subdirectory), KVC_SOURCE_DIR, KVC_BUILD_DIR,
#              CONSUMER_DIR, WORK_DIR, GENERATOR, CXX_COMPILER.
cmake_minimum_required(VERSION 3.21)

foreach(v MODE KVC_SOURCE_DIR KVC_BUILD_DIR CONSUMER_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run_consumer.cmake: -D${v}=... is required")
  endif()
endforeach()

# Flags from the caller's environment must not leak into the consumer: the point is to show that
# a consumer compiled with no target flags at all builds and runs.
unset(ENV{CXXFLAGS})
unset(ENV{CPPFLAGS})
unset(ENV{LDFLAGS})
unset(ENV{CMAKE_PREFIX_PATH})
unset(ENV{kvcompress_DIR})
unset(ENV{kvcompress_ROOT})

# Runs a command, echoes it, stops the test with its output on failure.
function(run_step what)
  string(REPLACE ";" " " _pretty "${ARGN}")
  message(STATUS "[${MODE}] ${what}: ${_pretty}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "[${MODE}] ${what} failed (exit ${rc}):\n${out}")
  endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

set(_gen -G "${GENERATOR}")
set(_common ${_gen} -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_BUILD_TYPE=Release
            -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON
            -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
            -DCMAKE_EXPORT_COMPILE_COMMANDS=ON)
set(_consumer_args)
set(_expect_dir "")

if(MODE STREQUAL "install")
  # A user's plain configure + install, nothing of ours built.
  run_step("configure library" ${CMAKE_COMMAND} -S ${KVC_SOURCE_DIR} -B ${WORK_DIR}/lib-build
           ${_gen} -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
           -DKVCOMPRESS_BUILD_TESTS=OFF -DKVCOMPRESS_BUILD_BENCHMARKS=OFF
           -DKVCOMPRESS_BUILD_EXAMPLES=OFF -DKVCOMPRESS_BUILD_TOOLS=OFF -DKVCOMPRESS_INSTALL=ON)
  run_step("install library" ${CMAKE_COMMAND} --install ${WORK_DIR}/lib-build
           --prefix ${WORK_DIR}/stage)
  foreach(f include/kvcompress/kvcompress.hpp include/kvcompress/config.hpp)
    if(NOT EXISTS ${WORK_DIR}/stage/${f})
      message(FATAL_ERROR "[install] ${f} was not installed")
    endif()
  endforeach()
  file(GLOB_RECURSE _cfg ${WORK_DIR}/stage/*/kvcompressConfig.cmake)
  if(NOT _cfg)
    message(FATAL_ERROR "[install] no kvcompressConfig.cmake under the prefix")
  endif()
  # Relocatable: move the prefix after installing, then consume it from the new place.
  file(RENAME ${WORK_DIR}/stage ${WORK_DIR}/prefix)
  set(_consumer_args -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
  set(_expect_dir ${WORK_DIR}/prefix/)
elseif(MODE STREQUAL "build_tree")
  if(NOT EXISTS ${KVC_BUILD_DIR}/kvcompressTargets.cmake OR
     NOT EXISTS ${KVC_BUILD_DIR}/kvcompressConfig.cmake)
    message(FATAL_ERROR "[build_tree] ${KVC_BUILD_DIR} has no kvcompressConfig.cmake / kvcompressTargets.cmake")
  endif()
  set(_consumer_args -Dkvcompress_DIR=${KVC_BUILD_DIR})
  set(_expect_dir ${KVC_BUILD_DIR})
elseif(MODE STREQUAL "subdirectory")
  set(_consumer_args -DKVCOMPRESS_CONSUMER_MODE=subdirectory -DKVCOMPRESS_SOURCE_DIR=${KVC_SOURCE_DIR})
else()
  message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()

run_step("configure consumer" ${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${WORK_DIR}/consumer-build
         ${_common} ${_consumer_args})

# The package that was found must be the one under test, not some other installed copy.
if(_expect_dir)
  file(STRINGS ${WORK_DIR}/consumer-build/CMakeCache.txt _found REGEX "^kvcompress_DIR:")
  string(REGEX REPLACE "^kvcompress_DIR:[A-Z]*=" "" _found "${_found}")
  string(FIND "${_found}/" "${_expect_dir}" _pos)
  if(NOT _pos EQUAL 0)
    message(FATAL_ERROR "[${MODE}] found kvcompress in '${_found}', expected under '${_expect_dir}'")
  endif()
endif()

run_step("build consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)

# No target flags may reach the consumer through kvcompress::kvcompress.
file(READ ${WORK_DIR}/consumer-build/compile_commands.json _cc)
if(_cc MATCHES "-march=|-mtune=|-mavx|-mfma|-mf16c|-msse")
  message(FATAL_ERROR "[${MODE}] a target flag reached the consumer's compile line:\n${_cc}")
endif()

run_step("run consumer" ${WORK_DIR}/consumer-build/kvcompress_consumer)
message(STATUS "[${MODE}] OK")
