// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Modality label carried by every cached slot. Labels come from the engine (its processor knows
/// where image and video spans are); the library never infers them (eviction spec §0, §1.1).

#include <cstdint>

#include "kvcompress/config.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// What a cached token is. Shared by the quantization and eviction specs (§0 of each).
enum class Modality : std::uint8_t {
  kSystem = 0,     ///< system prompt text (SYS_TEXT)
  kText = 1,       ///< user / instruction text (TEXT)
  kImage = 2,      ///< image patch token (IMAGE)
  kVideo = 3,      ///< video frame token (VIDEO)
  kGenerated = 4,  ///< token produced by decoding (GENERATED)
  kSpecial = 5,    ///< special / separator token (SPECIAL)
};

/// Number of Modality enumerators; labels ≥ this are rejected.
inline constexpr int kModalityCount = 6;

/// Stable name of a modality for logs and test output.
constexpr const char* to_string(Modality m) {
  switch (m) {
    case Modality::kSystem: return "system";
    case Modality::kText: return "text";
    case Modality::kImage: return "image";
    case Modality::kVideo: return "video";
    case Modality::kGenerated: return "generated";
    case Modality::kSpecial: return "special";
  }
  return "invalid";
}

KVCOMPRESS_NAMESPACE_END
