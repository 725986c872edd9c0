# SPDX-License-Identifier: Apache-2.0
# Settings for kvcompress's OWN tests, benchmarks, examples and tools. Never applied to the
# INTERFACE target: consumers choose their own -march.
set(KVCOMPRESS_ARCH_FLAGS "-march=native" CACHE STRING
    "Target flags for kvcompress's own tests and benchmarks (e.g. -march=x86-64-v3)")
separate_arguments(_kvc_arch UNIX_COMMAND "${KVCOMPRESS_ARCH_FLAGS}")

add_library(kvcompress_dev INTERFACE)
target_link_libraries(kvcompress_dev INTERFACE kvcompress::kvcompress)
target_compile_options(kvcompress_dev INTERFACE ${_kvc_arch} -Wall -Wextra -Wundef -Wshadow)
if(KVCOMPRESS_SANITIZE)
  target_compile_options(kvcompress_dev INTERFACE -fsanitize=address,undefined
                         -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  target_link_options(kvcompress_dev INTERFACE -fsanitize=address,undefined)
endif()
if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE Release CACHE STRING "Build type" FORCE)
endif()
