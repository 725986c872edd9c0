// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The empty eviction axis: every slot is kept. Also the base class whose defaults (no-op hooks,
/// no scores, no query window) other eviction policies inherit and override where they act.

#include <cstddef>
#include <cstdint>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/core/slot_view.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// How the cache fills SlotView::score for a policy with kNeedsScores.
enum class ScoreMode {
  /// Σ over every query row attended or observed since the slot arrived (H2O, column sums over
  /// all prompt rows: LOOK-M, MEDA, PrefixKV, Elastic Cache).
  kAccumulate,
  /// Attention of the query rows of the latest attend/observe call only (TOVA: the current
  /// decode row).
  kLatest,
};

/// Defaults of the Evict contract (core/policy_traits.hpp).
struct Base {
  /// Decides per KV head (true) or once per layer for all heads (false). For a per-layer policy
  /// with scores, SlotView::score is the mean over the layer's KV heads (spec §1.2 "layer-shared").
  static constexpr bool kPerHead = false;
  /// Asks the cache to keep attention per slot (SlotView::score): per KV head, the mean over the
  /// query heads of its GQA group (eviction spec §0 rule 5).
  static constexpr bool kNeedsScores = false;
  /// How scores accumulate (only read when kNeedsScores).
  static constexpr ScoreMode kScoreMode = ScoreMode::kAccumulate;
  /// True when the prompt is selected once, by on_prefill_end: make_room is then not called
  /// before end_prefill (no eviction from partial scores during a chunked prefill; size the
  /// capacity for the whole prompt), and with a lossy Quant (any store but dense) the cache holds
  /// the prompt in fp16 until end_prefill, so selection and merging see full-precision K/V and
  /// the quantizer encodes only what was kept (quantization spec BB-16 rule 1). Streaming
  /// policies that evict while the prompt arrives (StreamingLLM, Inf-MLLM) leave it false.
  static constexpr bool kSelectsAtPrefillEnd = false;

  /// Query rows per layer the cache keeps for PrefillContext::queries (the latest ones it was
  /// given through attend/observe); 0 = none. Reserved at construction.
  template <class Config>
  static std::size_t query_window(const Config&) { return 0; }

  template <class Config>
  static void make_room(const Config&, const SlotView&, std::size_t, std::uint8_t*) {}
  template <class Config>
  static void on_prefill_end(const Config&, PrefillContext&) {}
};

/// Keep every slot.
struct None : Base {
  static constexpr const char* kName = "none";
  struct Config {
    void validate(const CacheShape&) const {}
  };
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
