// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Protected sets (eviction spec §1.4): the slots a selector must keep whatever their score —
/// the first S sinks, an explicitly mandatory range (last prompt token, SnapKV observation
/// window), the last R recent slots, and every slot of chosen modalities (LOOK-M code's hard text
/// prior). Protected slots count against their layer's budget. Each slot records the class that
/// protects it, because the `truncate` overflow mode of top-k selection (§1.5) keeps protected
/// slots in the priority order sinks → mandatory → recent → modality.

#include <cstddef>
#include <cstdint>
#include <string>

#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/modality.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

/// Why a slot is protected. Lower enumerators have higher priority under truncation; a slot that
/// qualifies for several classes carries the highest-priority one.
enum class Protection : std::uint8_t {
  kNone = 0,       ///< not protected: competes on score
  kSink = 1,       ///< one of the first S live slots (attention sinks)
  kMandatory = 2,  ///< explicitly mandatory: last prompt token, observation window
  kRecent = 3,     ///< one of the last R live slots
  kModality = 4,   ///< belongs to a protected modality
};

/// Stable name for logs and test output.
constexpr const char* to_string(Protection p) {
  switch (p) {
    case Protection::kNone: return "none";
    case Protection::kSink: return "sink";
    case Protection::kMandatory: return "mandatory";
    case Protection::kRecent: return "recent";
    case Protection::kModality: return "modality";
  }
  return "invalid";
}

/// Bit of `m` in ProtectionConfig::modalities.
constexpr std::uint8_t modality_bit(Modality m) { return static_cast<std::uint8_t>(1u << static_cast<unsigned>(m)); }

/// Which slots to protect. Counts are in live slots; the mandatory range is in slot indices.
struct ProtectionConfig {
  std::size_t sinks = 0;            ///< first `sinks` live slots (S; 4 typical)
  std::size_t recent = 0;           ///< last `recent` live slots (R)
  bool last_token = false;          ///< the last live slot (Elastic Cache, PrefixKV)
  std::size_t mandatory_begin = 0;  ///< slot range [mandatory_begin, mandatory_end) kept as
  std::size_t mandatory_end = 0;    ///< mandatory (e.g. the SnapKV window); empty by default
  std::uint8_t modalities = 0;      ///< OR of modality_bit(); every live slot of these is kept
};

/// Fills out[j] with the protection class of each slot. Dead slots (alive[j] == 0) are never
/// protected. O(n), allocation-free.
/// \param alive [n] liveness, or nullptr when every slot is live
/// \param mod   [n] modality labels; required only when c.modalities != 0
/// \param out   [n]
inline void mark_protected(const ProtectionConfig& c, std::size_t n, const std::uint8_t* alive,
                           const Modality* mod, Protection* out) {
  const char* where = "evict::common::mark_protected";
  detail::require(c.mandatory_begin <= c.mandatory_end && c.mandatory_end <= n, where, "mandatory_end",
                  c.mandatory_end, [&] { return "in [mandatory_begin, n] = [" + std::to_string(c.mandatory_begin) +
                                                ", " + std::to_string(n) + "]"; });
  detail::require(c.modalities == 0 || n == 0 || mod != nullptr, where, "mod", "nullptr",
                  "[n] modality labels when modalities != 0");
  auto live = [&](std::size_t j) { return alive == nullptr || alive[j] != 0; };
  auto raise = [&](std::size_t j, Protection p) {
    if (out[j] == Protection::kNone || static_cast<int>(p) < static_cast<int>(out[j])) out[j] = p;
  };
  for (std::size_t j = 0; j < n; ++j) {
    out[j] = Protection::kNone;
    if (!live(j)) continue;
    if (c.modalities != 0) {
      detail::require(static_cast<int>(mod[j]) < kModalityCount, where, "mod[j]", static_cast<int>(mod[j]),
                      "a Modality enumerator");
      if (c.modalities & modality_bit(mod[j])) raise(j, Protection::kModality);
    }
    if (j >= c.mandatory_begin && j < c.mandatory_end) raise(j, Protection::kMandatory);
  }
  std::size_t seen = 0;
  for (std::size_t j = 0; j < n && seen < c.sinks; ++j)
    if (live(j)) raise(j, Protection::kSink), ++seen;
  seen = 0;
  bool last_done = !c.last_token;
  for (std::size_t j = n; j > 0 && (seen < c.recent || !last_done); --j) {
    if (!live(j - 1)) continue;
    if (!last_done) raise(j - 1, Protection::kMandatory), last_done = true;
    if (seen < c.recent) raise(j - 1, Protection::kRecent), ++seen;
  }
}

/// Number of protected slots in out[0..n).
inline std::size_t count_protected(const Protection* p, std::size_t n) {
  std::size_t c = 0;
  for (std::size_t j = 0; j < n; ++j) c += p[j] != Protection::kNone ? 1 : 0;
  return c;
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
