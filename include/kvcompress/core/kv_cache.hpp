// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// `KVCache<Policy>`: the key/value cache of one sequence of a model with L layers, Hq query heads
/// and Hkv KV heads (MHA, GQA, MQA), compressed by a `Policy<Evict, Merge, Quant>`.
///
/// Storage: each (layer, KV head) is a stream owned by a `Quant::Store`, whose blocks come from
/// one BlockPool reserved at construction (or carved from an engine-provided arena). Every slot
/// keeps its original absolute position and a modality label; evicted slots are masked at once
/// and physically removed lazily (whole blocks go back to the pool). After construction, append,
/// attend, observe and eviction never allocate on the heap.
///
/// Attention (`attend`) runs directly over the compressed storage: one logits pass per KV head
/// for all query heads of its GQA group (and up to 16 query rows at once), one fp32 softmax over
/// every segment of the stream (compressed blocks and full-precision windows share one max and
/// one sum, so the result is exact — no per-segment renormalisation), then one value pass.
///
/// Prefill and end_prefill: when the eviction policy selects at prefill end (or a Merge policy is
/// set), end_prefill hands the policy every layer's slots, scores, a window of recent queries and
/// the full-precision K/V (PrefillContext), merges, and re-encodes the kept slots. With a lossy
/// store the prompt is meanwhile held in fp16 staging blocks (its own pool, sized like a dense
/// cache), so selection and merging never see dequantized prompt KV and the quantizer encodes
/// the kept slots as if they were the prompt (quantization spec BB-16 rule 1). Engines call
/// end_prefill() once the prompt is in; until then such a cache behaves as a dense fp16 cache.
///
/// Thread-safety: a KVCache is not thread-safe; calls on distinct caches are independent. Work
/// inside one call is split over KV heads through the injected Executor.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "kvcompress/core/block_pool.hpp"
#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/executor.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/core/modality.hpp"
#include "kvcompress/core/policy_traits.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/core/query_rows.hpp"
#include "kvcompress/core/slot_view.hpp"
#include "kvcompress/core/token_info.hpp"
#include "kvcompress/kernels/convert.hpp"
#include "kvcompress/kernels/softmax.hpp"
#include "kvcompress/policies/evict/none.hpp"
#include "kvcompress/policies/merge/none.hpp"
#include "kvcompress/policies/quant/dense.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// Optional knobs of `KVCache::attend`.
struct AttendOptions {
  /// Logit scale; 0 means 1/√head_dim.
  float scale = 0.0f;
  /// If non-null, receives the log-sum-exp of each query row, [n_q][Hq] fp32, so an engine can
  /// merge this result exactly with attention it computed elsewhere (online softmax).
  float* lse = nullptr;
};

namespace detail {

/// True iff every x[i] is finite with |x[i]| ≤ max_abs (NaN fails the comparison).
template <class T>
bool all_within(const T* x, std::size_t n, float max_abs) {
  bool ok = true;
  for (std::size_t i = 0; i < n; ++i) ok &= std::fabs(to_float(x[i])) <= max_abs;
  return ok;
}

}  // namespace detail

/// The cache. \tparam P a `Policy<Evict, Merge, Quant>` (policies/policy.hpp).
template <class P>
class KVCache {
  using Evict = typename P::Evict;
  using Merge = typename P::Merge;
  using Quant = typename P::Quant;

  static_assert(traits::has_name<Quant>::value,
                "KVCache: Quant policy needs `static constexpr const char* kName` (core/policy_traits.hpp)");
  static_assert(traits::has_config<Quant>::value,
                "KVCache: Quant policy needs `struct Config { void validate(const CacheShape&) const; }` (core/policy_traits.hpp)");
  static_assert(traits::has_max_abs_input<Quant>::value,
                "KVCache: Quant policy needs `static constexpr float kMaxAbsInput` (core/policy_traits.hpp)");
  static_assert(traits::has_store<Quant>::value,
                "KVCache: Quant policy needs a nested `class Store` (core/policy_traits.hpp)");
  static_assert(traits::store_has_geometry<Quant>::value,
                "KVCache: Quant::Store needs static block_tokens, block_bytes, max_blocks, fixed_bytes and scratch_floats (core/policy_traits.hpp)");
  static_assert(traits::store_has_append<Quant>::value || traits::store_takes_token_info<Quant>::value,
                "KVCache: Quant::Store needs `void append(const float* k, const float* v, size_t ld, size_t n, [const TokenInfo&,] float* scratch)` (core/policy_traits.hpp)");
  static_assert(traits::store_has_attention<Quant>::value,
                "KVCache: Quant::Store needs const `logits(q, rows, out, ldl)` and `accumulate(p, ldp, rows, out)` (core/policy_traits.hpp)");
  static_assert(traits::store_has_maintenance<Quant>::value,
                "KVCache: Quant::Store needs size, read, plan_compact, compact, truncate, clear and memory_bytes (core/policy_traits.hpp)");
  static_assert(traits::has_name<Evict>::value && traits::has_config<Evict>::value,
                "KVCache: Evict policy needs `kName` and `struct Config { validate(shape) }` (core/policy_traits.hpp)");
  static_assert(traits::has_eviction_flags<Evict>::value,
                "KVCache: Evict policy needs `static constexpr bool kPerHead, kNeedsScores, kSelectsAtPrefillEnd`, `kScoreMode` and `query_window(const Config&)` (derive from evict::Base)");
  static_assert(traits::has_make_room<Evict>::value,
                "KVCache: Evict policy needs `static void make_room(const Config&, const SlotView&, size_t, uint8_t*)` (derive from evict::Base)");
  static_assert(traits::has_on_prefill_end<Evict>::value,
                "KVCache: Evict policy needs `static void on_prefill_end(const Config&, PrefillContext&)` (derive from evict::Base)");
  static_assert(is_merge_policy_v<Merge>,
                "KVCache: Merge policy needs `kName`, `struct Config { validate(shape) }` and `static void merge(const Config&, const SlotView&, const uint8_t* keep, float* k, float* v, size_t d)` (core/policy_traits.hpp)");

  using Store = typename Quant::Store;
  /// fp16 rows that hold the prompt until end_prefill when the store is lossy (BB-16 rule 1).
  using StagingStore = typename quant::None::Store;
  static constexpr bool kMerges = !std::is_same_v<Merge, merge::None>;
  /// end_prefill rewrites every stream from full-precision rows (selection and/or merging).
  static constexpr bool kRebuildsAtPrefillEnd = Evict::kSelectsAtPrefillEnd || kMerges;
  static constexpr bool kExactStore =
      std::is_same_v<Quant, quant::Dense<half>> || std::is_same_v<Quant, quant::Dense<float>>;
  static constexpr bool kStaging = kRebuildsAtPrefillEnd && !kExactStore;
  /// Keys arrive pre-RoPE and staging holds them rotated (policy_traits.hpp, rope_keys).
  static constexpr bool kRotatesStagedKeys = kStaging && traits::quant_rotates_keys<Quant>::value;
  /// The store encodes each token at the precision tier the Evict axis picks (precision_tier.hpp).
  static constexpr bool kTiered = traits::quant_has_tiers<Quant>::value;

 public:
  using Policy = P;
  using Config = typename P::Config;

  /// Query rows (query heads × query tokens) processed per pass over a stream.
  static constexpr int kMaxRows = 16;
  /// Tokens converted per step when inputs are fp16/bf16.
  static constexpr std::size_t kAppendChunk = 256;

  /// Builds a cache and reserves everything: the block pool for `shape.capacity` slots per
  /// stream, slot metadata, and per-worker scratch for `executor->num_workers()` workers.
  /// \param executor parallelism for attend/append over KV heads; nullptr = serial. Must outlive
  ///        the cache.
  explicit KVCache(const CacheShape& shape, const Config& config = {}, Executor* executor = nullptr)
      : KVCache(shape, config, executor, nullptr, 0) {}

  /// As above, with the blocks carved from an engine-owned arena of at least
  /// `arena_bytes(shape, config)` bytes, 64-byte aligned, outliving the cache. (The fp16 prompt
  /// staging of a lossy store under a prefill-end eviction policy is reserved by the cache
  /// itself; reserved_bytes() counts it.)
  KVCache(const CacheShape& shape, const Config& config, Executor* executor, void* arena,
          std::size_t arena_size)
      : shape_(validated(shape, config)), config_(config),
        executor_(executor ? executor : &serial_), owns_arena_(arena == nullptr) {
    const std::size_t streams = num_streams();
    const std::size_t max_blocks = Store::max_blocks(shape_.capacity, config_.quant);
    const std::size_t bb = Store::block_bytes(shape_.head_dim, config_.quant);
    pool_ = arena ? BlockPool(bb, streams * max_blocks, arena, arena_size)
                  : BlockPool(bb, streams * max_blocks);
    stores_.reserve(streams);
    for (std::size_t s = 0; s < streams; ++s) {
      if constexpr (std::is_constructible_v<Store, int, const typename Quant::Config&, BlockTable, int, int>) {
        const int hkv = shape_.num_kv_heads;
        stores_.emplace_back(shape_.head_dim, config_.quant, BlockTable(&pool_, max_blocks),
                             static_cast<int>(s) / hkv, static_cast<int>(s) % hkv);
      } else {
        stores_.emplace_back(shape_.head_dim, config_.quant, BlockTable(&pool_, max_blocks));
      }
    }
    const std::size_t d = static_cast<std::size_t>(shape_.head_dim);
    if constexpr (kStaging) {
      const typename quant::None::Config sc{};
      const std::size_t sb = StagingStore::max_blocks(shape_.capacity, sc);
      staging_pool_ = BlockPool(StagingStore::block_bytes(shape_.head_dim, sc), streams * sb);
      staging_.reserve(streams);
      for (std::size_t s = 0; s < streams; ++s)
        staging_.emplace_back(shape_.head_dim, sc, BlockTable(&staging_pool_, sb));
    }
    if constexpr (kRebuildsAtPrefillEnd) {
      rebuild_k_.resize(shape_.capacity * d);
      rebuild_v_.resize(shape_.capacity * d);
      rebuild_pos_.resize(shape_.capacity);
      rebuild_mod_.resize(shape_.capacity);
      if constexpr (kTiered) rebuild_tier_.resize(shape_.capacity);
    }
    qwin_rows_max_ = Evict::query_window(config_.evict);
    if (qwin_rows_max_ > 0) {
      const std::size_t L = static_cast<std::size_t>(shape_.num_layers);
      qwin_.assign(L * static_cast<std::size_t>(shape_.num_q_heads) * qwin_rows_max_ * d, 0.0f);
      qwin_pos_.assign(L * qwin_rows_max_, 0);
      qwin_views_.resize(L);
      for (std::size_t l = 0; l < L; ++l)
        qwin_views_[l] = QueryRows{qwin_.data() + l * static_cast<std::size_t>(shape_.num_q_heads) * qwin_rows_max_ * d,
                                   qwin_pos_.data() + l * qwin_rows_max_, shape_.num_q_heads, 0, shape_.head_dim};
    }
    const std::size_t cap = shape_.capacity;
    tables_.resize(static_cast<std::size_t>(shape_.num_layers) * views_per_layer());
    for (auto& t : tables_) {
      t.pos.resize(cap);
      t.mod.resize(cap);
      t.alive.resize(cap);
    }
    if constexpr (Evict::kNeedsScores) {
      scores_.assign(streams * cap, 0.0f);
      if constexpr (!Evict::kPerHead) layer_scores_.assign(static_cast<std::size_t>(shape_.num_layers) * cap, 0.0f);
    }
    seen_.assign(static_cast<std::size_t>(shape_.num_layers), 0);
    ldl_ = (cap + 15) / 16 * 16;
    workers_.resize(static_cast<std::size_t>(executor_->num_workers()));
    for (auto& w : workers_) {
      w.q.resize(kMaxRows * d);
      w.acc.resize(kMaxRows * d);
      w.logits.resize(kMaxRows * ldl_);
      w.input.resize(2 * kAppendChunk * d);
      w.store.resize(std::max<std::size_t>(1, Store::scratch_floats(shape_.head_dim, config_.quant)));
    }
    keep_.resize(tables_.size() * cap);
    if constexpr (kTiered) {
      tiers_.assign(tables_.size() * cap, PrecisionTier::kPending);
      tier_plan_.resize(static_cast<std::size_t>(views_per_layer()) * cap);
    }
    retained_.resize(static_cast<std::size_t>(shape_.num_kv_heads) * cap);
    views_.resize(tables_.size());
    compact_.resize(static_cast<std::size_t>(views_per_layer()));
  }

  KVCache(const KVCache&) = delete;
  KVCache& operator=(const KVCache&) = delete;

  /// Arena bytes an engine must provide for this shape and config.
  static std::size_t arena_bytes(const CacheShape& shape, const Config& config = {}) {
    validated(shape, config);
    const std::size_t streams =
        static_cast<std::size_t>(shape.num_layers) * static_cast<std::size_t>(shape.num_kv_heads);
    return BlockPool::required_bytes(Store::block_bytes(shape.head_dim, config.quant),
                                     streams * Store::max_blocks(shape.capacity, config.quant));
  }

  /// Compressed bytes per token of the block storage, summed over all layers and KV heads, K and
  /// V (block bytes / block tokens). Per-stream windows (`fixed_bytes_per_stream`) and slot
  /// metadata (`kMetadataBytesPerSlot`) come on top; memory_bytes() reports the exact total.
  static double bytes_per_token(const CacheShape& shape, const Config& config = {}) {
    validated(shape, config);
    const double per_stream =
        static_cast<double>(align_up(Store::block_bytes(shape.head_dim, config.quant))) /
        static_cast<double>(Store::block_tokens(config.quant));
    return per_stream * shape.num_layers * shape.num_kv_heads;
  }

  /// Bytes each (layer, KV head) stream holds outside the pool (e.g. KIVI's fp16 window).
  static std::size_t fixed_bytes_per_stream(const CacheShape& shape, const Config& config = {}) {
    return Store::fixed_bytes(shape.head_dim, config.quant);
  }

  /// Metadata bytes per slot and slot table: position (int32), modality, alive flag, and the
  /// precision tier when the store has tiers.
  static constexpr std::size_t kMetadataBytesPerSlot = sizeof(std::int32_t) + 2 + (kTiered ? 1 : 0);

  const CacheShape& shape() const { return shape_; }
  const Config& config() const { return config_; }
  Executor& executor() { return *executor_; }

  /// Appends n tokens to one layer. k and v are [n][num_kv_heads][head_dim] of T ∈ {float, half,
  /// bfloat16}; keys as the engine stores them (post-RoPE for the policies here). Positions are
  /// tokens_seen(layer) … +n−1. Before storing, the eviction policy may make room (decode-time
  /// eviction); dead slots are compacted lazily. Throws InvalidArgument (cache unchanged) for a
  /// bad layer, n == 0, null pointers, non-finite values or values the store cannot represent,
  /// a bad modality, or when the slots would exceed the capacity.
  template <class T>
  void append(int layer, const T* k, const T* v, std::size_t n, Modality modality = Modality::kText) {
    check_modality("KVCache::append", "modality", modality);
    append_impl(layer, k, v, n, nullptr, modality);
  }

  /// As above with one modality label per token (`modalities` is [n]).
  template <class T>
  void append(int layer, const T* k, const T* v, std::size_t n, const Modality* modalities) {
    detail::require(modalities != nullptr, "KVCache::append", "modalities", "nullptr",
                    "a pointer to n labels");
    for (std::size_t i = 0; i < n; ++i) check_modality("KVCache::append", "modalities", modalities[i]);
    append_impl(layer, k, v, n, modalities, Modality::kText);
  }

  /// Attention of the last n_q appended tokens of `layer` (queries q: [n_q][num_q_heads][head_dim])
  /// over everything the layer holds, causal by original position, written to out (same shape).
  /// Decode is n_q = 1; chunked prefill passes the chunk's queries after appending its K/V.
  /// If the eviction policy asks for scores, the attention each slot receives is accumulated.
  template <class T>
  void attend(int layer, const T* q, std::size_t n_q, T* out, const AttendOptions& options = {}) {
    detail::require(out != nullptr, "KVCache::attend", "out", "nullptr", "a [n_q][Hq][d] buffer");
    attend_impl(layer, q, n_q, out, options, true);
  }

  /// Feeds queries to the eviction statistics (scores, query window) without producing output:
  /// for engines that run their own attention (FlashAttention) and hand the library a window of
  /// prefill queries (eviction spec §1.1, "recompute from window"). Same shape rules as attend.
  template <class T>
  void observe(int layer, const T* q, std::size_t n_q) {
    static_assert(Evict::kNeedsScores || Evict::kSelectsAtPrefillEnd,
                  "KVCache::observe: this policy's Evict axis uses no attention scores and no query window");
    attend_impl(layer, q, n_q, static_cast<T*>(nullptr), AttendOptions{}, true);
  }

  /// Call once the whole prompt has been appended to every layer: the eviction policy sees all
  /// layers at once (cross-layer budgets), the merge policy folds evicted slots into kept ones,
  /// and the cache re-encodes (or compacts) what was kept. Later calls (e.g. after each turn of
  /// a chat) select again on what the store holds then — dequantized for a lossy store.
  void end_prefill() {
    const std::size_t cap = shape_.capacity;
    for (int l = 0; l < shape_.num_layers; ++l)
      for (int v = 0; v < views_per_layer(); ++v) {
        const std::size_t t = table_index(l, v);
        views_[t] = view(l, v);
        std::copy(tables_[t].alive.begin(), tables_[t].alive.begin() + tables_[t].n, keep_.begin() + t * cap);
        if constexpr (kTiered)  // the policy decides every slot's tier afresh, via PrefillContext::tier
          std::fill(tiers_.begin() + t * cap, tiers_.begin() + t * cap + tables_[t].n, PrecisionTier::kPending);
      }
    PrefillSources sources;
    sources.queries = qwin_rows_max_ > 0 ? qwin_views_.data() : nullptr;
    sources.read = &read_full_precision;
    sources.self = this;
    sources.scale = last_scale_;
    PrefillContext ctx(shape_, views_per_layer(), views_.data(), keep_.data(), cap, sources,
                       kTiered ? tiers_.data() : nullptr);
    Evict::on_prefill_end(config_.evict, ctx);
    for (int l = 0; l < shape_.num_layers; ++l)
      for (int v = 0; v < views_per_layer(); ++v) {
        const std::size_t t = table_index(l, v);
        if constexpr (kRebuildsAtPrefillEnd) {
          rebuild(l, v, keep_.data() + t * cap);
        } else {
          apply_keep(l, v, keep_.data() + t * cap, /*compact=*/true);
        }
      }
    for (int l = 0; l < shape_.num_layers; ++l)
      for (int v = 0; v < views_per_layer(); ++v) {
        Table& t = tables_[table_index(l, v)];
        t.prefill_tokens = seen_[static_cast<std::size_t>(l)];
        t.prefill_slots = t.n_alive;
      }
    prefill_open_ = false;
    for (auto& q : qwin_views_) q.rows = 0;
  }

  /// Slots `layer`/`kv_head` attends to (live slots).
  std::size_t size(int layer, int kv_head) const {
    check_head("KVCache::size", layer, kv_head);
    return table(layer, kv_head).n_alive;
  }

  /// Tokens ever appended to `layer` (the position the next token gets).
  std::int64_t tokens_seen(int layer) const {
    check_layer("KVCache::tokens_seen", layer);
    return seen_[static_cast<std::size_t>(layer)];
  }

  /// What the eviction policy sees of (layer, kv_head) (for per-layer policies, the layer's view).
  SlotView slots(int layer, int kv_head) const {
    check_head("KVCache::slots", layer, kv_head);
    return view(layer, Evict::kPerHead ? kv_head : 0);
  }

  /// The storage of (layer, kv_head), for inspection (e.g. KIVI's quantized/window split). While
  /// a staged prompt waits for end_prefill (see the class comment) this store is still empty.
  const Store& stream(int layer, int kv_head) const {
    check_head("KVCache::stream", layer, kv_head);
    return store(layer, kv_head);
  }

  /// Writes the original positions of the live slots of (layer, kv_head), [size()] int32.
  void positions(int layer, int kv_head, std::int32_t* out) const {
    check_head("KVCache::positions", layer, kv_head);
    const Table& t = table(layer, kv_head);
    for (std::size_t j = 0, o = 0; j < t.n; ++j)
      if (t.alive[j]) out[o++] = t.pos[j];
  }

  /// Decodes the live slots of heads [head_begin, head_end) of `layer` to fp32:
  /// k_out and v_out are [head_end − head_begin][size(layer, h)][head_dim], heads back to back
  /// (head h starts after the rows of the heads before it). head_end = −1 means num_kv_heads.
  void materialize(int layer, float* k_out, float* v_out, int head_begin = 0, int head_end = -1) {
    check_layer("KVCache::materialize", layer);
    if (head_end < 0) head_end = shape_.num_kv_heads;
    detail::require(head_begin >= 0 && head_begin < head_end && head_end <= shape_.num_kv_heads,
                    "KVCache::materialize", "head range",
                    std::to_string(head_begin) + ".." + std::to_string(head_end),
                    "0 <= head_begin < head_end <= num_kv_heads");
    detail::require(k_out != nullptr && v_out != nullptr, "KVCache::materialize", "k_out/v_out",
                    "nullptr", "non-null buffers");
    const std::size_t d = static_cast<std::size_t>(shape_.head_dim);
    std::size_t row = 0;
    for (int h = head_begin; h < head_end; ++h) {
      const Table& t = table(layer, h);
      with_store(layer, h, [&](const auto& s) {
        for (std::size_t j = 0; j < t.n;) {
          if (!t.alive[j]) { ++j; continue; }
          std::size_t e = j;
          while (e < t.n && t.alive[e]) ++e;
          s.read(j, e, k_out + row * d, v_out + row * d, d, workers_[0].store.data());
          row += e - j;
          j = e;
        }
      });
    }
  }

  /// Speculative-decoding rollback: forgets every token at position ≥ n_tokens in every layer;
  /// the next append gets position n_tokens. Throws if n_tokens exceeds tokens seen.
  void truncate(std::size_t n_tokens) {
    const std::int64_t most = *std::max_element(seen_.begin(), seen_.end());
    detail::require(static_cast<std::int64_t>(n_tokens) <= most, "KVCache::truncate", "n_tokens",
                    n_tokens, "<= tokens_seen (" + std::to_string(most) + ")");
    for (int l = 0; l < shape_.num_layers; ++l) {
      for (int v = 0; v < views_per_layer(); ++v) {
        Table& t = tables_[table_index(l, v)];
        const std::size_t cut = static_cast<std::size_t>(
            std::lower_bound(t.pos.begin(), t.pos.begin() + t.n, static_cast<std::int32_t>(n_tokens)) -
            t.pos.begin());
        t.n = cut;
        t.n_alive = static_cast<std::size_t>(std::count(t.alive.begin(), t.alive.begin() + cut, 1));
        if (static_cast<std::int64_t>(n_tokens) < t.prefill_tokens) t.prefill_tokens = -1;  // prompt cut
        for_each_head_of_view(v, [&](int h) {
          with_store(l, h, [&](auto& s) { s.truncate(cut, workers_[0].store.data()); });
        });
      }
      auto& s = seen_[static_cast<std::size_t>(l)];
      s = std::min<std::int64_t>(s, static_cast<std::int64_t>(n_tokens));
    }
  }

  /// Empties the cache (capacity stays reserved); the next tokens are a new prompt.
  void clear() {
    for (auto& s : stores_) s.clear();
    for (auto& s : staging_) s.clear();
    for (auto& t : tables_) {
      t.n = t.n_alive = t.prefill_slots = 0;
      t.prefill_tokens = -1;
    }
    std::fill(seen_.begin(), seen_.end(), 0);
    for (auto& q : qwin_views_) q.rows = 0;
    prefill_open_ = true;
  }

  /// Bytes the cache's contents occupy now: the blocks every stream holds (whole blocks), the
  /// per-stream windows, and the slot metadata of the held slots (position, modality, alive
  /// flag, plus the fp32 score when the eviction policy uses scores).
  std::size_t memory_bytes() const {
    std::size_t bytes = 0;
    for (const auto& s : stores_) bytes += s.memory_bytes();
    for (const auto& s : staging_) bytes += s.memory_bytes();
    for (const auto& t : tables_) bytes += t.n * kMetadataBytesPerSlot;
    if constexpr (Evict::kNeedsScores)
      for (int l = 0; l < shape_.num_layers; ++l)
        for (int h = 0; h < shape_.num_kv_heads; ++h) bytes += table(l, h).n * sizeof(float);
    return bytes;
  }

  /// Everything this object allocated: the pool (unless engine-provided), the fp16 prompt
  /// staging pool and end_prefill buffers (policies that select at prefill end), windows,
  /// metadata at capacity, query windows and per-worker scratch.
  std::size_t reserved_bytes() const {
    std::size_t bytes = owns_arena() ? pool_.block_bytes() * pool_.num_blocks() : 0;
    if constexpr (kStaging) bytes += staging_pool_.block_bytes() * staging_pool_.num_blocks();
    bytes += (rebuild_k_.size() + rebuild_v_.size() + qwin_.size() + layer_scores_.size()) * sizeof(float);
    bytes += rebuild_pos_.size() * sizeof(std::int32_t) + rebuild_mod_.size() + rebuild_tier_.size() +
             tier_plan_.size() + qwin_pos_.size() * sizeof(std::int32_t);
    bytes += stores_.size() * Store::fixed_bytes(shape_.head_dim, config_.quant);
    bytes += tables_.size() * shape_.capacity * kMetadataBytesPerSlot + scores_.size() * sizeof(float);
    for (const auto& w : workers_)
      bytes += (w.q.size() + w.acc.size() + w.logits.size() + w.input.size() + w.store.size()) * sizeof(float);
    return bytes + keep_.size() + retained_.size() + compact_.size() + views_.size() * sizeof(SlotView);
  }

 private:
  struct Table {
    std::vector<std::int32_t> pos;
    std::vector<Modality> mod;
    std::vector<std::uint8_t> alive;
    std::size_t n = 0;        // physical slots
    std::size_t n_alive = 0;  // live slots
    std::int64_t prefill_tokens = -1;  // SlotView::prefill_tokens
    std::size_t prefill_slots = 0;     // SlotView::prefill_slots
  };
  struct Worker {
    std::vector<float> q, acc, logits, input, store;
  };

  static const CacheShape& validated(const CacheShape& shape, const Config& config) {
    shape.validate("KVCache");
    config.validate(shape);
    return shape;
  }
  static int views_per_layer_of(const CacheShape& s) { return Evict::kPerHead ? s.num_kv_heads : 1; }
  int views_per_layer() const { return views_per_layer_of(shape_); }
  std::size_t num_streams() const {
    return static_cast<std::size_t>(shape_.num_layers) * static_cast<std::size_t>(shape_.num_kv_heads);
  }
  bool owns_arena() const { return owns_arena_; }
  std::size_t stream_index(int l, int h) const {
    return static_cast<std::size_t>(l) * static_cast<std::size_t>(shape_.num_kv_heads) + static_cast<std::size_t>(h);
  }
  std::size_t table_index(int l, int v) const {
    return static_cast<std::size_t>(l) * static_cast<std::size_t>(views_per_layer()) + static_cast<std::size_t>(v);
  }
  Store& store(int l, int h) { return stores_[stream_index(l, h)]; }
  const Store& store(int l, int h) const { return stores_[stream_index(l, h)]; }
  Table& table(int l, int h) { return tables_[table_index(l, Evict::kPerHead ? h : 0)]; }
  const Table& table(int l, int h) const { return tables_[table_index(l, Evict::kPerHead ? h : 0)]; }
  float* scores(int l, int h) { return scores_.data() + stream_index(l, h) * shape_.capacity; }
  const float* scores(int l, int h) const { return scores_.data() + stream_index(l, h) * shape_.capacity; }

  // Calls f with the store that holds (l, h) now: the fp16 staging store while a staged prompt
  // waits for end_prefill, the policy's store otherwise.
  template <class F>
  void with_store(int l, int h, F&& f) {
    if constexpr (kStaging)
      if (prefill_open_) return f(staging_[stream_index(l, h)]);
    f(store(l, h));
  }
  template <class F>
  void with_store(int l, int h, F&& f) const {
    if constexpr (kStaging)
      if (prefill_open_) return f(staging_[stream_index(l, h)]);
    f(store(l, h));
  }

  // Store::append with the token facts when the store takes them (core/token_info.hpp).
  template <class S>
  static void store_append(S& s, const float* k, const float* v, std::size_t ld, std::size_t n,
                           const TokenInfo& info, float* scratch) {
    if constexpr (std::is_same_v<S, Store> && traits::store_takes_token_info<Quant>::value) {
      s.append(k, v, ld, n, info, scratch);
    } else {
      s.append(k, v, ld, n, scratch);
    }
  }

  // PrefillSources::read: every physical slot of (layer, kv_head) as fp32 rows.
  static void read_full_precision(const void* self, int layer, int kv_head, float* k, float* v) {
    auto* c = const_cast<KVCache*>(static_cast<const KVCache*>(self));
    c->check_head("PrefillContext::read", layer, kv_head);
    const std::size_t n = c->table(layer, kv_head).n;
    const std::size_t d = static_cast<std::size_t>(c->shape_.head_dim);
    c->with_store(layer, kv_head, [&](const auto& s) {
      if (n > 0) s.read(0, n, k, v, d, c->workers_[0].store.data());
    });
  }

  // end_prefill for policies that select or merge: reads each head's full-precision rows, lets
  // the merge policy rewrite the kept anchors, and re-encodes the kept rows into the policy's
  // store (empty staging). Positions and labels travel with the kept slots.
  void rebuild(int l, int v, const std::uint8_t* keep) {
    Table& t = tables_[table_index(l, v)];
    const std::size_t n = t.n;
    const std::size_t d = static_cast<std::size_t>(shape_.head_dim);
    std::uint8_t* kept = retained_.data();
    std::size_t m = 0;
    for (std::size_t j = 0; j < n; ++j) {
      kept[j] = static_cast<std::uint8_t>(t.alive[j] && keep[j]);
      if (!kept[j]) continue;
      rebuild_pos_[m] = t.pos[j];
      rebuild_mod_[m] = t.mod[j];
      if constexpr (kTiered) rebuild_tier_[m] = tiers(l, v)[j];
      ++m;
    }
    const SlotView sv = view(l, v);
    float* K = rebuild_k_.data();
    float* V = rebuild_v_.data();
    for_each_head_of_view(v, [&](int h) {
      with_store(l, h, [&](const auto& s) {
        if (n > 0) s.read(0, n, K, V, d, workers_[0].store.data());
      });
      if constexpr (kMerges) Merge::merge(config_.merge, sv, kept, K, V, d);
      std::size_t o = 0;
      for (std::size_t j = 0; j < n; ++j) {
        if (!kept[j]) continue;
        if (o != j) {
          std::copy(K + j * d, K + (j + 1) * d, K + o * d);
          std::copy(V + j * d, V + (j + 1) * d, V + o * d);
        }
        ++o;
      }
      // A pre-RoPE store takes its keys back unrotated (exact inverse, BB-16 rule 4).
      if constexpr (traits::quant_rotates_keys<Quant>::value)
        if (m > 0) Quant::rope_keys(config_.quant, K, m, d, rebuild_pos_.data(), true);
      if constexpr (kStaging) staging_[stream_index(l, h)].clear();
      store(l, h).clear();
      if (m > 0)
        store_append(store(l, h), K, V, d, m,
                     TokenInfo{rebuild_pos_.data(), rebuild_mod_.data(), kTiered ? rebuild_tier_.data() : nullptr},
                     workers_[0].store.data());
      if constexpr (Evict::kNeedsScores) compact_array(scores(l, h), kept, n);
    });
    std::copy(rebuild_pos_.begin(), rebuild_pos_.begin() + static_cast<std::ptrdiff_t>(m), t.pos.begin());
    std::copy(rebuild_mod_.begin(), rebuild_mod_.begin() + static_cast<std::ptrdiff_t>(m), t.mod.begin());
    if constexpr (kTiered) std::copy(rebuild_tier_.begin(), rebuild_tier_.begin() + static_cast<std::ptrdiff_t>(m), tiers(l, v));
    std::fill(t.alive.begin(), t.alive.begin() + static_cast<std::ptrdiff_t>(m), std::uint8_t{1});
    t.n = t.n_alive = m;
  }

  // Keeps the last query_window() query rows given to `layer` before end_prefill ([Hq][W][d]).
  template <class T>
  void remember_queries(int layer, const T* q, std::size_t n_q) {
    QueryRows& w = qwin_views_[static_cast<std::size_t>(layer)];
    const std::size_t W = qwin_rows_max_;
    const std::size_t d = static_cast<std::size_t>(shape_.head_dim);
    const std::size_t hq = static_cast<std::size_t>(shape_.num_q_heads);
    const std::size_t take = std::min(W, n_q);
    const std::size_t keep_old = std::min(w.rows, W - take);
    const std::size_t drop = w.rows - keep_old;
    float* base = qwin_.data() + static_cast<std::size_t>(layer) * hq * W * d;
    std::int32_t* pos = qwin_pos_.data() + static_cast<std::size_t>(layer) * W;
    const std::int64_t pos0 = seen_[static_cast<std::size_t>(layer)] - static_cast<std::int64_t>(n_q);
    for (std::size_t g = 0; g < hq; ++g) {
      float* rows = base + g * W * d;
      if (drop > 0 && keep_old > 0) std::copy(rows + drop * d, rows + (drop + keep_old) * d, rows);
      for (std::size_t i = 0; i < take; ++i)
        kernels::convert(q + (n_q - take + i) * hq * d + g * d, rows + (keep_old + i) * d, d, best_isa{});
    }
    if (drop > 0 && keep_old > 0) std::copy(pos + drop, pos + drop + keep_old, pos);
    for (std::size_t i = 0; i < take; ++i)
      pos[keep_old + i] = static_cast<std::int32_t>(pos0 + static_cast<std::int64_t>(n_q - take + i));
    w.rows = keep_old + take;
  }

  template <class F>
  void for_each_head_of_view(int v, F&& f) {
    if constexpr (Evict::kPerHead) {
      f(v);
    } else {
      for (int h = 0; h < shape_.num_kv_heads; ++h) f(h);
    }
  }

  PrecisionTier* tiers(int l, int v) { return tiers_.data() + table_index(l, v) * shape_.capacity; }

  SlotView view(int l, int v) const {
    const Table& t = tables_[table_index(l, v)];
    SlotView s;
    s.n = t.n;
    s.n_alive = t.n_alive;
    s.pos = t.pos.data();
    s.mod = t.mod.data();
    s.alive = t.alive.data();
    s.tokens_seen = seen_[static_cast<std::size_t>(l)];
    s.layer = l;
    s.prefill_tokens = t.prefill_tokens;
    s.prefill_slots = t.prefill_slots;
    if constexpr (Evict::kNeedsScores) {
      if constexpr (Evict::kPerHead) {
        s.score = scores(l, v);
      } else {  // layer-shared score: the mean over the layer's KV heads (eviction spec §1.2)
        float* mean = layer_scores_.data() + static_cast<std::size_t>(l) * shape_.capacity;
        std::fill(mean, mean + t.n, 0.0f);
        for (int h = 0; h < shape_.num_kv_heads; ++h) {
          const float* sc = scores(l, h);
          for (std::size_t j = 0; j < t.n; ++j) mean[j] += sc[j];
        }
        const float inv = 1.0f / static_cast<float>(shape_.num_kv_heads);
        for (std::size_t j = 0; j < t.n; ++j) mean[j] *= inv;
        s.score = mean;
      }
    }
    return s;
  }

  void check_layer(const char* where, int layer) const {
    detail::require(layer >= 0 && layer < shape_.num_layers, where, "layer", layer,
                    [&] { return "in [0, " + std::to_string(shape_.num_layers) + ")"; });
  }
  void check_head(const char* where, int layer, int head) const {
    check_layer(where, layer);
    detail::require(head >= 0 && head < shape_.num_kv_heads, where, "kv_head", head,
                    [&] { return "in [0, " + std::to_string(shape_.num_kv_heads) + ")"; });
  }
  static void check_modality(const char* where, const char* name, Modality m) {
    detail::require(static_cast<int>(m) < kModalityCount, where, name, static_cast<int>(m),
                    [] { return "a kvcompress::Modality enumerator (0.." + std::to_string(kModalityCount - 1) + ")"; });
  }
  template <class T>
  static void check_type() {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, half> || std::is_same_v<T, bfloat16>,
                  "KVCache: inputs must be float, kvcompress::half or kvcompress::bfloat16");
  }

  // Marks evicted slots dead and, if `compact`, removes them physically (as far as the store
  // can: slots inside quantized token groups stay, masked, until their group empties).
  void apply_keep(int l, int v, const std::uint8_t* keep, bool compact) {
    Table& t = tables_[table_index(l, v)];
    for (std::size_t j = 0; j < t.n; ++j) t.alive[j] = static_cast<std::uint8_t>(t.alive[j] && keep[j]);
    t.n_alive = static_cast<std::size_t>(std::count(t.alive.begin(), t.alive.begin() + t.n, 1));
    if (!compact || t.n_alive == t.n) return;
    std::uint8_t* retained = retained_.data();
    std::size_t new_n = 0;
    for_each_head_of_view(v, [&](int h) {
      with_store(l, h, [&](auto& s) {
        new_n = s.plan_compact(t.alive.data(), retained);
        s.compact(retained, workers_[0].store.data());
      });
      if constexpr (Evict::kNeedsScores) compact_array(scores(l, h), retained, t.n);
    });
    compact_array(t.pos.data(), retained, t.n);
    compact_array(t.mod.data(), retained, t.n);
    compact_array(t.alive.data(), retained, t.n);
    if constexpr (kTiered) compact_array(tiers(l, v), retained, t.n);
    t.n = new_n;
  }

  template <class X>
  static void compact_array(X* x, const std::uint8_t* retained, std::size_t n) {
    std::size_t o = 0;
    for (std::size_t j = 0; j < n; ++j)
      if (retained[j]) x[o++] = x[j];
  }

  template <class T>
  void append_impl(int layer, const T* k, const T* v, std::size_t n, const Modality* mods, Modality mod) {
    check_type<T>();
    const char* where = "KVCache::append";
    check_layer(where, layer);
    detail::require(n >= 1, where, "n_tokens", n, ">= 1");
    detail::require(k != nullptr, where, "k", "nullptr", "a [n][num_kv_heads][head_dim] buffer");
    detail::require(v != nullptr, where, "v", "nullptr", "a [n][num_kv_heads][head_dim] buffer");
    const std::size_t hd = static_cast<std::size_t>(shape_.num_kv_heads) * static_cast<std::size_t>(shape_.head_dim);
    const float max_abs = Quant::kMaxAbsInput;
    auto range = [&] { return "finite values with |x| <= " + std::to_string(max_abs) + " (" + Quant::kName + ")"; };
    detail::require(detail::all_within(k, n * hd, max_abs), where, "k", "a non-finite or out-of-range value", range);
    detail::require(detail::all_within(v, n * hd, max_abs), where, "v", "a non-finite or out-of-range value", range);

    // Plan eviction and capacity without touching state, so a rejected append changes nothing.
    const std::size_t cap = shape_.capacity;
    const std::size_t block_tokens = Store::block_tokens(config_.quant);
    std::uint8_t* compact = compact_.data();
    for (int vw = 0; vw < views_per_layer(); ++vw) {
      const std::size_t ti = table_index(layer, vw);
      Table& t = tables_[ti];
      std::uint8_t* keep = keep_.data() + ti * cap;
      std::copy(t.alive.begin(), t.alive.begin() + t.n, keep);
      // A policy that selects at prefill end sees the whole prompt once, at its end (BB-16 rule 1).
      if (!(Evict::kSelectsAtPrefillEnd && prefill_open_)) {
        SlotView sv = view(layer, vw);
        if constexpr (kTiered) {  // tier decisions are planned on a copy too
          PrecisionTier* plan = tier_plan_.data() + static_cast<std::size_t>(vw) * cap;
          std::copy(tiers(layer, vw), tiers(layer, vw) + t.n, plan);
          sv.tier = plan;
        }
        Evict::make_room(config_.evict, sv, n, keep);
      }
      std::size_t alive_after = 0;
      for (std::size_t j = 0; j < t.n; ++j) alive_after += (t.alive[j] && keep[j]) ? 1 : 0;
      const std::size_t dead = t.n - alive_after;
      compact[vw] = static_cast<std::uint8_t>(dead >= block_tokens || t.n + n > cap);
      std::size_t phys = t.n;
      if (compact[vw] && dead > 0) {
        for (std::size_t j = 0; j < t.n; ++j) keep[j] = static_cast<std::uint8_t>(t.alive[j] && keep[j]);
        phys = 0;
        for_each_head_of_view(vw, [&](int h) {
          with_store(layer, h, [&](const auto& s) { phys = std::max(phys, s.plan_compact(keep, retained_.data())); });
        });
      }
      detail::require(phys + n <= cap, where, "n_tokens", n, [&] {
        return "<= free capacity " + std::to_string(cap - std::min(cap, phys)) + " of layer " +
               std::to_string(layer) + " (capacity " + std::to_string(cap) + " slots)";
      });
    }
    for (int vw = 0; vw < views_per_layer(); ++vw) {
      if constexpr (kTiered)
        if (!(Evict::kSelectsAtPrefillEnd && prefill_open_))
          std::copy(tier_plan_.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(vw) * cap),
                    tier_plan_.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(vw) * cap +
                                                                     tables_[table_index(layer, vw)].n),
                    tiers(layer, vw));
      apply_keep(layer, vw, keep_.data() + table_index(layer, vw) * cap, compact[vw] != 0);
    }

    // Slot metadata of the new tokens first: stores that take TokenInfo read it.
    std::int64_t& seen = seen_[static_cast<std::size_t>(layer)];
    for (int vw = 0; vw < views_per_layer(); ++vw) {
      Table& t = tables_[table_index(layer, vw)];
      for (std::size_t i = 0; i < n; ++i) {
        t.pos[t.n + i] = static_cast<std::int32_t>(seen + static_cast<std::int64_t>(i));
        t.mod[t.n + i] = mods ? mods[i] : mod;
        t.alive[t.n + i] = 1;
        if constexpr (kTiered) tiers(layer, vw)[t.n + i] = PrecisionTier::kPending;
      }
    }

    // Store K/V, one task per KV head.
    const std::size_t d = static_cast<std::size_t>(shape_.head_dim);
    bool rotate = false;
    if constexpr (kRotatesStagedKeys) rotate = prefill_open_;
    auto task = [&](std::size_t h, int w) {
      const Table& t = table(layer, static_cast<int>(h));
      Worker& wk = workers_[static_cast<std::size_t>(w)];
      const PrecisionTier* tier = nullptr;  // the new tokens' tiers (kPending), tiered stores only
      with_store(layer, static_cast<int>(h), [&](auto& s) {
        if constexpr (kTiered && std::is_same_v<std::decay_t<decltype(s)>, Store>) {
          const PrecisionTier* all = tiers(layer, Evict::kPerHead ? static_cast<int>(h) : 0);
          s.apply_tiers(all, wk.store.data());  // decisions make_room took on earlier slots
          tier = all + t.n;
        }
        if constexpr (std::is_same_v<T, float>) {
          if (!rotate) {
            store_append(s, k + h * d, v + h * d, hd, n, TokenInfo{t.pos.data() + t.n, t.mod.data() + t.n, tier},
                         wk.store.data());
            return;
          }
        }
        // fp16/bf16 inputs, or pre-RoPE keys rotated into the fp16 staging: chunks of fp32 rows.
        for (std::size_t t0 = 0; t0 < n; t0 += kAppendChunk) {
          const std::size_t c = std::min(kAppendChunk, n - t0);
          float* kf = wk.input.data();
          float* vf = kf + kAppendChunk * d;
          for (std::size_t i = 0; i < c; ++i) {
            kernels::convert(k + (t0 + i) * hd + h * d, kf + i * d, d, best_isa{});
            kernels::convert(v + (t0 + i) * hd + h * d, vf + i * d, d, best_isa{});
          }
          if constexpr (kRotatesStagedKeys)
            if (rotate) Quant::rope_keys(config_.quant, kf, c, d, t.pos.data() + t.n + t0, false);
          store_append(s, kf, vf, d, c,
                       TokenInfo{t.pos.data() + t.n + t0, t.mod.data() + t.n + t0, tier ? tier + t0 : nullptr},
                       wk.store.data());
        }
      });
    };
    executor_->run(static_cast<std::size_t>(shape_.num_kv_heads), TaskRef(task));

    for (int vw = 0; vw < views_per_layer(); ++vw) {
      Table& t = tables_[table_index(layer, vw)];
      if constexpr (Evict::kNeedsScores)
        for_each_head_of_view(vw, [&](int h) { std::fill(scores(layer, h) + t.n, scores(layer, h) + t.n + n, 0.0f); });
      t.n += n;
      t.n_alive += n;
    }
    seen += static_cast<std::int64_t>(n);
  }

  template <class T>
  void attend_impl(int layer, const T* q, std::size_t n_q, T* out, const AttendOptions& opt, bool update_scores) {
    check_type<T>();
    const char* where = "KVCache::attend";
    check_layer(where, layer);
    detail::require(n_q >= 1, where, "n_q", n_q, ">= 1");
    const std::int64_t seen = seen_[static_cast<std::size_t>(layer)];
    detail::require(static_cast<std::int64_t>(n_q) <= seen, where, "n_q", n_q, [&] {
      return "<= tokens appended to layer " + std::to_string(layer) + " (" + std::to_string(seen) +
             "): queries are the last n_q appended tokens";
    });
    detail::require(q != nullptr, where, "q", "nullptr", "a [n_q][num_q_heads][head_dim] buffer");
    const std::size_t qd = static_cast<std::size_t>(shape_.num_q_heads) * static_cast<std::size_t>(shape_.head_dim);
    detail::require(detail::all_within(q, n_q * qd, std::numeric_limits<float>::max()), where, "q",
                    "a non-finite value", "finite values");
    detail::require(opt.scale >= 0.0f && std::isfinite(opt.scale), where, "options.scale", opt.scale,
                    "0 (meaning 1/sqrt(head_dim)) or a positive finite value");
    const float scale = opt.scale > 0.0f ? opt.scale : 1.0f / std::sqrt(static_cast<float>(shape_.head_dim));
    last_scale_ = scale;
    if (qwin_rows_max_ > 0 && prefill_open_) remember_queries(layer, q, n_q);
    if constexpr (Evict::kNeedsScores && Evict::kScoreMode == evict::ScoreMode::kLatest) {
      if (update_scores)
        for (int h = 0; h < shape_.num_kv_heads; ++h)
          std::fill(scores(layer, h), scores(layer, h) + table(layer, h).n, 0.0f);
    }
    auto task = [&](std::size_t h, int w) {
      with_store(layer, static_cast<int>(h), [&](const auto& s) {
        attend_head(s, layer, static_cast<int>(h), q, n_q, out, scale, opt.lse, update_scores,
                    workers_[static_cast<std::size_t>(w)]);
      });
    };
    executor_->run(static_cast<std::size_t>(shape_.num_kv_heads), TaskRef(task));
  }

  template <class S, class T>
  void attend_head(const S& s, int layer, int h, const T* q, std::size_t n_q, T* out, float scale, float* lse,
                   bool update_scores, Worker& wk) {
    const Table& t = table(layer, h);
    const std::size_t n = t.n;
    const std::size_t d = static_cast<std::size_t>(shape_.head_dim);
    const int rep = shape_.group_size();
    const std::size_t hq = static_cast<std::size_t>(shape_.num_q_heads);
    const int gchunk = std::min(rep, kMaxRows);
    const std::size_t tile = rep <= kMaxRows ? static_cast<std::size_t>(kMaxRows / rep) : 1;
    const std::int64_t qpos0 = seen_[static_cast<std::size_t>(layer)] - static_cast<std::int64_t>(n_q);
    const bool all_alive = t.n_alive == t.n;
    float* sc = nullptr;
    if constexpr (Evict::kNeedsScores) sc = scores(layer, h);
    float* L = wk.logits.data();
    for (std::size_t i0 = 0; i0 < n_q; i0 += tile) {
      const std::size_t nq = std::min(tile, n_q - i0);
      for (int g0 = 0; g0 < rep; g0 += gchunk) {
        const int ng = std::min(gchunk, rep - g0);
        const int rows = static_cast<int>(nq) * ng;
        for (std::size_t a = 0; a < nq; ++a)
          for (int b = 0; b < ng; ++b) {
            const T* src = q + (i0 + a) * hq * d + (static_cast<std::size_t>(h * rep + g0 + b)) * d;
            float* dst = wk.q.data() + (a * static_cast<std::size_t>(ng) + static_cast<std::size_t>(b)) * d;
            kernels::convert(src, dst, d, best_isa{});
            for (std::size_t c = 0; c < d; ++c) dst[c] *= scale;
          }
        s.logits(wk.q.data(), rows, L, ldl_);
        // Mask dead slots and, for prefill chunks, slots after each query's position.
        for (std::size_t a = 0; a < nq; ++a) {
          const std::int64_t qpos = qpos0 + static_cast<std::int64_t>(i0 + a);
          const std::size_t visible = static_cast<std::size_t>(
              std::upper_bound(t.pos.begin(), t.pos.begin() + n, qpos) - t.pos.begin());
          for (int b = 0; b < ng; ++b) {
            float* row = L + (a * static_cast<std::size_t>(ng) + static_cast<std::size_t>(b)) * ldl_;
            std::fill(row + visible, row + n, -std::numeric_limits<float>::infinity());
            if (!all_alive)
              for (std::size_t j = 0; j < visible; ++j)
                if (!t.alive[j]) row[j] = -std::numeric_limits<float>::infinity();
          }
        }
        float m[kMaxRows], sum[kMaxRows];
        for (int r = 0; r < rows; ++r) {
          float* row = L + static_cast<std::size_t>(r) * ldl_;
          m[r] = kernels::max_value(row, n, best_isa{});
          sum[r] = m[r] == -std::numeric_limits<float>::infinity() ? 0.0f
                                                                   : kernels::exp_shift_sum(row, n, m[r], best_isa{});
          if (sum[r] == 0.0f) std::fill(row, row + n, 0.0f);
        }
        if constexpr (Evict::kNeedsScores) {
          if (update_scores) {
            for (int r = 0; r < rows; ++r) {
              if (sum[r] == 0.0f) continue;
              const float inv = 1.0f / (sum[r] * static_cast<float>(rep));
              const float* row = L + static_cast<std::size_t>(r) * ldl_;
              for (std::size_t j = 0; j < n; ++j) sc[j] += row[j] * inv;
            }
          }
        }
        if (lse) {
          for (std::size_t a = 0; a < nq; ++a)
            for (int b = 0; b < ng; ++b) {
              const int r = static_cast<int>(a) * ng + b;
              lse[(i0 + a) * hq + static_cast<std::size_t>(h * rep + g0 + b)] =
                  sum[r] > 0.0f ? m[r] + std::log(sum[r]) : -std::numeric_limits<float>::infinity();
            }
        }
        if (out == nullptr) continue;
        std::fill(wk.acc.begin(), wk.acc.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(rows) * d), 0.0f);
        s.accumulate(L, ldl_, rows, wk.acc.data());
        for (std::size_t a = 0; a < nq; ++a)
          for (int b = 0; b < ng; ++b) {
            const int r = static_cast<int>(a) * ng + b;
            const float inv = sum[r] > 0.0f ? 1.0f / sum[r] : 0.0f;
            float* acc = wk.acc.data() + static_cast<std::size_t>(r) * d;
            for (std::size_t c = 0; c < d; ++c) acc[c] *= inv;
            T* dst = out + (i0 + a) * hq * d + static_cast<std::size_t>(h * rep + g0 + b) * d;
            kernels::convert(acc, dst, d, best_isa{});
          }
      }
    }
  }

  CacheShape shape_;
  Config config_;
  SerialExecutor serial_;
  Executor* executor_;
  bool owns_arena_ = true;
  BlockPool pool_;
  std::vector<Store> stores_;
  std::vector<Table> tables_;
  std::vector<float> scores_;
  std::vector<std::int64_t> seen_;
  std::vector<Worker> workers_;
  std::vector<std::uint8_t> keep_, retained_;
  std::vector<std::uint8_t> compact_;  // per view of the layer being appended: compact now?
  std::vector<SlotView> views_;
  std::size_t ldl_ = 0;
  // Layer-shared scores of per-layer policies (mean over KV heads), refreshed by view().
  mutable std::vector<float> layer_scores_;
  // fp16 staging of the prompt until end_prefill (kStaging) and end_prefill's row buffers.
  bool prefill_open_ = true;
  BlockPool staging_pool_;
  std::vector<StagingStore> staging_;
  std::vector<float> rebuild_k_, rebuild_v_;
  std::vector<std::int32_t> rebuild_pos_;
  std::vector<Modality> rebuild_mod_;
  std::vector<PrecisionTier> tiers_, rebuild_tier_;  // kTiered: per slot and view, like keep_
  std::vector<PrecisionTier> tier_plan_;             // kTiered: make_room's decisions of one layer
  // The last query_window() query rows per layer before end_prefill ([L][Hq][W][d]).
  std::size_t qwin_rows_max_ = 0;
  std::vector<float> qwin_;
  std::vector<std::int32_t> qwin_pos_;
  std::vector<QueryRows> qwin_views_;
  float last_scale_ = 0.0f;
};

KVCOMPRESS_NAMESPACE_END
