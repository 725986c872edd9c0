// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Contracts of the three policy axes and the detection traits that check them. KVCache opens
/// with one static_assert per requirement, each naming the missing member and this file, so a
/// malformed policy fails with a readable message instead of an overload-resolution error.
///
/// **Quant** (storage of one (layer, KV head) stream; see policies/quant/dense.hpp):
///   `static constexpr const char* kName; static constexpr float kMaxAbsInput;`
///   `struct Config { void validate(const CacheShape&) const; };`
///   `class Store` with
///   `static size_t block_tokens(const Config&), block_bytes(int d, const Config&),`
///   `max_blocks(size_t capacity, const Config&), fixed_bytes(int d, const Config&),`
///   `scratch_floats(int d, const Config&);` `Store(int d, const Config&, BlockTable);`
///   `size_t size() const; void append(const float* k, const float* v, size_t ld, size_t n,`
///   `float* scratch); void logits(const float* q, int rows, float* out, size_t ldl) const;`
///   `void accumulate(const float* p, size_t ldp, int rows, float* out) const;`
///   `void read(size_t j0, size_t j1, float* k, float* v, size_t ld, float* scratch) const;`
///   `size_t plan_compact(const uint8_t* keep, uint8_t* retained) const;`
///   `void compact(const uint8_t* retained, float* scratch); void truncate(size_t n, float*);`
///   `void clear(); size_t memory_bytes() const;`
///   A store that needs positions or modality labels (pre-RoPE keys, mixed precision by
///   modality) declares instead the append taking `const TokenInfo&` before the scratch pointer
///   (core/token_info.hpp); the cache calls whichever exists. A store whose state depends on
///   where it sits (per-layer calibration) may take `(int d, const Config&, BlockTable, int
///   layer, int kv_head)`; the cache then passes them.
///   A Quant whose keys are stored pre-RoPE (quantization spec BB-14) provides
///   `static void rope_keys(const Config&, float* k, size_t n, size_t ld, const int32_t* pos,
///   bool inverse)`: the cache rotates the fp16 prompt staging rows with it (prefill attention,
///   scores and merges work on post-RoPE keys, BB-16 rule 4) and un-rotates kept rows before the
///   store encodes them. Such a store's `read` returns post-RoPE keys.
///   A Quant that encodes each token at one of two precisions (`kPrecisionTiers = true`, ZipVL)
///   provides `void apply_tiers(const PrecisionTier* tier, float* scratch)` on its Store and reads
///   `TokenInfo::tier`; the Evict axis then decides the tiers (core/precision_tier.hpp).
///
/// **Evict** (which slots to keep; defaults and their meaning in policies/evict/none.hpp, Base):
///   `kName; static constexpr bool kPerHead, kNeedsScores, kSelectsAtPrefillEnd;`
///   `static constexpr ScoreMode kScoreMode; struct Config { validate(shape) };`
///   `static size_t query_window(const Config&);`
///   `static void make_room(const Config&, const SlotView&, size_t n_incoming, uint8_t* keep);`
///   `static void on_prefill_end(const Config&, PrefillContext&);`
///
/// **Merge** (how evicted slots fold into kept ones; see policies/merge/none.hpp):
///   `kName; struct Config { validate(shape) };`
///   `static void merge(const Config&, const SlotView&, const uint8_t* keep, float* k, float* v, size_t d);`

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kvcompress/core/block_pool.hpp"
#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/slot_view.hpp"
#include "kvcompress/core/token_info.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

class PrefillContext;

namespace traits {

template <class, class = void>
struct has_name : std::false_type {};
template <class P>
struct has_name<P, std::void_t<decltype(P::kName)>> : std::true_type {};

template <class, class = void>
struct has_config : std::false_type {};
template <class P>
struct has_config<P, std::void_t<decltype(std::declval<const typename P::Config&>().validate(
                         std::declval<const CacheShape&>()))>> : std::true_type {};

template <class, class = void>
struct has_store : std::false_type {};
template <class P>
struct has_store<P, std::void_t<typename P::Store>> : std::true_type {};

template <class, class = void>
struct has_max_abs_input : std::false_type {};
template <class P>
struct has_max_abs_input<P, std::void_t<decltype(static_cast<float>(P::kMaxAbsInput))>>
    : std::true_type {};

template <class, class = void>
struct store_has_geometry : std::false_type {};
template <class P>
struct store_has_geometry<
    P, std::void_t<decltype(P::Store::block_tokens(std::declval<const typename P::Config&>())),
                   decltype(P::Store::block_bytes(0, std::declval<const typename P::Config&>())),
                   decltype(P::Store::max_blocks(std::size_t{}, std::declval<const typename P::Config&>())),
                   decltype(P::Store::fixed_bytes(0, std::declval<const typename P::Config&>())),
                   decltype(P::Store::scratch_floats(0, std::declval<const typename P::Config&>()))>>
    : std::true_type {};

template <class, class = void>
struct store_has_append : std::false_type {};
template <class P>
struct store_has_append<P, std::void_t<decltype(std::declval<typename P::Store&>().append(
                               std::declval<const float*>(), std::declval<const float*>(),
                               std::size_t{}, std::size_t{}, std::declval<float*>()))>>
    : std::true_type {};

template <class, class = void>
struct store_takes_token_info : std::false_type {};
template <class P>
struct store_takes_token_info<P, std::void_t<decltype(std::declval<typename P::Store&>().append(
                                     std::declval<const float*>(), std::declval<const float*>(),
                                     std::size_t{}, std::size_t{}, std::declval<const TokenInfo&>(),
                                     std::declval<float*>()))>> : std::true_type {};

template <class, class = void>
struct quant_rotates_keys : std::false_type {};
template <class P>
struct quant_rotates_keys<P, std::void_t<decltype(P::rope_keys(std::declval<const typename P::Config&>(),
                                                               std::declval<float*>(), std::size_t{}, std::size_t{},
                                                               std::declval<const std::int32_t*>(), true))>>
    : std::true_type {};

/// Quant stores each token at one of two precisions chosen by the Evict axis
/// (core/precision_tier.hpp): `static constexpr bool kPrecisionTiers = true` and
/// `Store::apply_tiers(const PrecisionTier*, float*)`.
template <class, class = void>
struct quant_has_tiers : std::false_type {};
template <class P>
struct quant_has_tiers<P, std::void_t<decltype(std::declval<typename P::Store&>().apply_tiers(
                              std::declval<const PrecisionTier*>(), std::declval<float*>()))>>
    : std::bool_constant<P::kPrecisionTiers> {};

template <class, class = void>
struct store_has_attention : std::false_type {};
template <class P>
struct store_has_attention<
    P, std::void_t<decltype(std::declval<const typename P::Store&>().logits(
                       std::declval<const float*>(), 0, std::declval<float*>(), std::size_t{})),
                   decltype(std::declval<const typename P::Store&>().accumulate(
                       std::declval<const float*>(), std::size_t{}, 0, std::declval<float*>()))>>
    : std::true_type {};

template <class, class = void>
struct store_has_maintenance : std::false_type {};
template <class P>
struct store_has_maintenance<
    P, std::void_t<decltype(std::declval<const typename P::Store&>().size()),
                   decltype(std::declval<const typename P::Store&>().read(
                       std::size_t{}, std::size_t{}, std::declval<float*>(),
                       std::declval<float*>(), std::size_t{}, std::declval<float*>())),
                   decltype(std::declval<const typename P::Store&>().plan_compact(
                       std::declval<const std::uint8_t*>(), std::declval<std::uint8_t*>())),
                   decltype(std::declval<typename P::Store&>().compact(
                       std::declval<const std::uint8_t*>(), std::declval<float*>())),
                   decltype(std::declval<typename P::Store&>().truncate(std::size_t{},
                                                                        std::declval<float*>())),
                   decltype(std::declval<typename P::Store&>().clear()),
                   decltype(std::declval<const typename P::Store&>().memory_bytes())>>
    : std::true_type {};

template <class, class = void>
struct has_eviction_flags : std::false_type {};
template <class P>
struct has_eviction_flags<P, std::void_t<decltype(bool{P::kPerHead}), decltype(bool{P::kNeedsScores}),
                                         decltype(bool{P::kSelectsAtPrefillEnd}), decltype(P::kScoreMode),
                                         decltype(std::size_t{P::query_window(
                                             std::declval<const typename P::Config&>())})>>
    : std::true_type {};

template <class, class = void>
struct has_merge_fn : std::false_type {};
template <class P>
struct has_merge_fn<P, std::void_t<decltype(P::merge(std::declval<const typename P::Config&>(),
                                                     std::declval<const SlotView&>(),
                                                     std::declval<const std::uint8_t*>(),
                                                     std::declval<float*>(), std::declval<float*>(),
                                                     std::size_t{}))>> : std::true_type {};

template <class, class = void>
struct has_make_room : std::false_type {};
template <class P>
struct has_make_room<P, std::void_t<decltype(P::make_room(
                            std::declval<const typename P::Config&>(), std::declval<const SlotView&>(),
                            std::size_t{}, std::declval<std::uint8_t*>()))>> : std::true_type {};

template <class, class = void>
struct has_on_prefill_end : std::false_type {};
template <class P>
struct has_on_prefill_end<P, std::void_t<decltype(P::on_prefill_end(
                                 std::declval<const typename P::Config&>(),
                                 std::declval<PrefillContext&>()))>> : std::true_type {};

}  // namespace traits

/// True when Q satisfies the Quant contract above.
template <class Q>
inline constexpr bool is_quant_policy_v =
    traits::has_name<Q>::value && traits::has_config<Q>::value && traits::has_store<Q>::value &&
    traits::has_max_abs_input<Q>::value && traits::store_has_geometry<Q>::value &&
    (traits::store_has_append<Q>::value || traits::store_takes_token_info<Q>::value) &&
    traits::store_has_attention<Q>::value &&
    traits::store_has_maintenance<Q>::value;

/// True when E satisfies the Evict contract above.
template <class E>
inline constexpr bool is_evict_policy_v =
    traits::has_name<E>::value && traits::has_config<E>::value &&
    traits::has_eviction_flags<E>::value && traits::has_make_room<E>::value &&
    traits::has_on_prefill_end<E>::value;

/// True when M satisfies the Merge contract above.
template <class M>
inline constexpr bool is_merge_policy_v =
    traits::has_name<M>::value && traits::has_config<M>::value && traits::has_merge_fn<M>::value;

KVCOMPRESS_NAMESPACE_END
