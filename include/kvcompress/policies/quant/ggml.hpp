// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// llama.cpp KV-cache quantization baselines (methods/quantization.md §10): `--cache-type-k` /
/// `--cache-type-v` ∈ {q8_0, q4_0, q4_1}, independently for keys and values, plus an optional
/// Walsh–Hadamard rotation (BB-9) in the style of llama.cpp's rotated-cache variants.
///
///   quant::Ggml<KFormat, VFormat, Rotation>   KFormat, VFormat ∈ formats::{Q8_0, Q4_0, Q4_1}
///   quant::GgmlQ8_0 / GgmlQ4_0 / GgmlQ4_1     same format for K and V ("q8_0", "q4_0", "q4_1")
///   quant::GgmlQ8_0Had / GgmlQ4_0Had / GgmlQ4_1Had   keys rotated ("q8_0_had", …)
///   mixed formats are named "k<K>_v<V>" (e.g. Ggml<Q8_0, Q4_0> = "kq8_0_vq4_0"); the rotation
///   appends "_had" (keys) or "_hadkv" (keys and values).
///
/// Storage per (layer, KV head): every token is one packed key row and one packed value row,
/// each d/32 consecutive ggml blocks (formats/ggml_blocks.hpp: byte-identical to ggml's
/// block_q8_0 / block_q4_0 / block_q4_1, quantized by ggml's reference rules from the fp32
/// input — exact rounding rules there). In llama.cpp a cache row spans all KV heads of a layer;
/// since 32 | head_dim every block lies inside one head, so the bytes of a head's row here are
/// exactly the bytes of that head's slice of llama.cpp's row. head_dim % 32 != 0 is rejected
/// by Config::validate (InvalidArgument naming head_dim), as llama.cpp requires.
/// Blocks of 64 slots: [64][row_k] then [64][row_v], 64-byte aligned (SlotRows); bits per
/// element of the block storage = 8·(bytes per 32) / 32: q8_0 8.5, q4_0 4.5, q4_1 5.0.
/// No full-precision window: every token is quantized at append (as llama.cpp does).
///
/// Eviction (BB-16 rule 2): rows are per token, so evicted slots are removed physically (rows move
/// down, emptied blocks return to the pool), exactly as the dense store.
///
/// Rotation (GgmlRotation): H = the normalized block-diagonal Walsh–Hadamard transform of
/// common/hadamard.hpp (d = 96 → diag(H64, H32)), orthogonal and symmetric (its own inverse).
///  * kKeys: keys are stored as Q(H·k); at attention time the query rows are rotated (H·q) so
///    (H·q)·Q(H·k) ≈ (H·q)·(H·k) = q·k. Values unrotated.
///  * kKeysValues: values are also stored as Q(H·v); accumulation sums p·Q(H·v) into a temporary
///    and adds H·(that) to the output (H linear, H² = I).
///  read()/materialize return H applied to the dequantized rows (the original space).
///  kMaxAbsInput is fp16 max / 64 for rotated variants: H can raise a block's largest entry by
///  √(block size) ≤ 64 (d ≤ 4096), and q4_1 stores that block's minimum in fp16.
///
/// Attention kernels: kernels/ggml.hpp (exact fp32 over the packed bytes, each byte read once
/// per call for all query rows of the GQA group/tile).

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "kvcompress/core/block_pool.hpp"
#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/core/token_row_store.hpp"
#include "kvcompress/kernels/ggml.hpp"
#include "kvcompress/policies/quant/common/hadamard.hpp"
#include "kvcompress/policies/quant/formats/ggml_blocks.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {

using formats::GgmlType;

/// Which tensors a Ggml store rotates with the Walsh–Hadamard transform.
enum class GgmlRotation {
  kNone,        ///< plain llama.cpp formats
  kKeys,        ///< keys rotated at append, queries rotated at attention time
  kKeysValues,  ///< keys as kKeys; values rotated at append, the attention output un-rotated
};

namespace detail {

template <std::size_t N>
struct GgmlNameBuf {
  std::array<char, N> s{};
  std::size_t n = 0;
  constexpr void add(const char* x) {
    while (*x) s[n++] = *x++;
  }
};

template <class KF, class VF, GgmlRotation Rot>
constexpr std::array<char, 32> ggml_policy_name() {
  GgmlNameBuf<32> b;
  if (std::is_same_v<KF, VF>) {
    b.add(KF::kName);
  } else {
    b.add("k");
    b.add(KF::kName);
    b.add("_v");
    b.add(VF::kName);
  }
  if (Rot == GgmlRotation::kKeys) b.add("_had");
  if (Rot == GgmlRotation::kKeysValues) b.add("_hadkv");
  return b.s;
}

template <class KF, class VF, GgmlRotation Rot>
struct GgmlName {
  static constexpr std::array<char, 32> value = ggml_policy_name<KF, VF, Rot>();
};

/// The block-diagonal normalized WHT of x[0..d) in place (d even; blocks from the binary
/// decomposition of d, largest first — common/hadamard.hpp's layout) without allocating.
inline void ggml_rotate(float* x, int d) {
  std::size_t off = 0;
  for (std::size_t bit = std::size_t{1} << 30; bit != 0; bit >>= 1)
    if (static_cast<std::size_t>(d) & bit) {
      common::wht_power_of_two(x + off, bit);
      off += bit;
    }
}

}  // namespace detail

/// llama.cpp block quantization of keys (KFormat) and values (VFormat), optional WHT rotation.
template <class KFormat, class VFormat = KFormat, GgmlRotation Rotation = GgmlRotation::kNone>
struct Ggml {
  static constexpr GgmlType kKeyType = KFormat::kType;
  static constexpr GgmlType kValueType = VFormat::kType;
  static constexpr GgmlRotation kRotation = Rotation;
  static constexpr bool kRotateKeys = Rotation != GgmlRotation::kNone;
  static constexpr bool kRotateValues = Rotation == GgmlRotation::kKeysValues;
  static constexpr const char* kName = detail::GgmlName<KFormat, VFormat, Rotation>::value.data();
  /// fp16 scales (and q4_1 minimum); see the file comment for the rotated bound.
  static constexpr float kMaxAbsInput = Rotation == GgmlRotation::kNone ? kHalfMax : kHalfMax / 64.0f;
  /// Largest head_dim of the rotated variants (stack buffers of the query/output rotation).
  static constexpr int kMaxRotatedHeadDim = 4096;

  /// No knobs; head_dim must be a multiple of the ggml block size 32.
  struct Config {
    void validate(const CacheShape& shape) const {
      kvcompress::detail::require(shape.head_dim % formats::kGgmlQK == 0, "quant::Ggml", "head_dim", shape.head_dim,
                      "a multiple of 32 (ggml block size QK = 32; llama.cpp requires it)");
      if (Rotation != GgmlRotation::kNone)
        kvcompress::detail::require(shape.head_dim <= kMaxRotatedHeadDim, "quant::Ggml", "head_dim", shape.head_dim,
                        "at most 4096 for the Hadamard-rotated variants");
    }
  };

  /// One (layer, KV head) stream.
  class Store : public TokenRowStore<64> {
   public:
    static std::size_t block_bytes(int d, const Config&) {
      return block_bytes_for(formats::ggml_row_bytes(kKeyType, d), formats::ggml_row_bytes(kValueType, d));
    }
    static std::size_t block_tokens(const Config&) { return kBlockTokens; }
    static std::size_t max_blocks(std::size_t capacity, const Config&) { return max_blocks_for(capacity); }
    /// Rotated variants need one d-float row to rotate an input before quantizing it.
    static std::size_t scratch_floats(int d, const Config&) {
      return Rotation == GgmlRotation::kNone ? 0 : static_cast<std::size_t>(d);
    }
    static std::size_t fixed_bytes(int, const Config&) { return 0; }

    Store(int d, const Config&, BlockTable table)
        : TokenRowStore(formats::ggml_row_bytes(kKeyType, d), formats::ggml_row_bytes(kValueType, d),
                        std::move(table)),
          d_(d) {}

    /// Packed bytes of one key / value row (d/32 ggml blocks).
    using TokenRowStore::key_row_bytes;
    using TokenRowStore::value_row_bytes;
    /// Slot j's packed key / value row (ggml blocks, byte-identical to ggml).
    const std::uint8_t* key_row(std::size_t j) const { return row(kKeys, j); }
    const std::uint8_t* value_row(std::size_t j) const { return row(kValues, j); }

    /// Appends n slots; k and v are [n][ld] fp32 rows (d used). Quantized from fp32 (as
    /// llama.cpp's ggml_cpy of F32 K/V into a quantized cache).
    void append(const float* k, const float* v, std::size_t ld, std::size_t n, float* scratch) {
      const std::size_t first = begin_append(n);
      for (std::size_t t = 0; t < n; ++t) {
        put(kKeyType, k + t * ld, kRotateKeys, row(kKeys, first + t), scratch);
        put(kValueType, v + t * ld, kRotateValues, row(kValues, first + t), scratch);
      }
    }

    /// logits[r·ldl + j] = q_r · k̂_j for every slot j < size(); q is [rows][d], pre-scaled.
    void logits(const float* q, int rows, float* out, std::size_t ldl) const {
      if constexpr (!kRotateKeys) {
        logits_plain(q, rows, out, ldl);
      } else {
        float qr[kMaxRotatedHeadDim];
        const int chunk = std::max(1, kMaxRotatedHeadDim / d_);
        for (int r0 = 0; r0 < rows; r0 += chunk) {
          const int nr = std::min(chunk, rows - r0);
          std::copy(q + static_cast<std::size_t>(r0) * ud(), q + static_cast<std::size_t>(r0 + nr) * ud(), qr);
          for (int r = 0; r < nr; ++r) detail::ggml_rotate(qr + static_cast<std::size_t>(r) * ud(), d_);
          logits_plain(qr, nr, out + static_cast<std::size_t>(r0) * ldl, ldl);
        }
      }
    }

    /// out[r][c] += Σ_j p[r·ldp + j] · v̂_j[c] over every slot j < size().
    void accumulate(const float* p, std::size_t ldp, int rows, float* out) const {
      if constexpr (!kRotateValues) {
        accumulate_plain(p, ldp, rows, out);
      } else {
        float tmp[kMaxRotatedHeadDim];
        const int chunk = std::max(1, kMaxRotatedHeadDim / d_);
        for (int r0 = 0; r0 < rows; r0 += chunk) {
          const int nr = std::min(chunk, rows - r0);
          std::fill(tmp, tmp + static_cast<std::size_t>(nr) * ud(), 0.0f);
          accumulate_plain(p + static_cast<std::size_t>(r0) * ldp, ldp, nr, tmp);
          for (int r = 0; r < nr; ++r) {
            float* t = tmp + static_cast<std::size_t>(r) * ud();
            detail::ggml_rotate(t, d_);
            float* o = out + static_cast<std::size_t>(r0 + r) * ud();
            for (std::size_t c = 0; c < ud(); ++c) o[c] += t[c];
          }
        }
      }
    }

    /// Writes slots [j0, j1) as fp32 in the original (un-rotated) space.
    void read(std::size_t j0, std::size_t j1, float* k, float* v, std::size_t ld, float*) const {
      for (std::size_t j = j0; j < j1; ++j) {
        float* kd = k + (j - j0) * ld;
        float* vd = v + (j - j0) * ld;
        kernels::ggml_dequantize_rows(kKeyType, row(kKeys, j), 1, d_, kd, ld, best_isa{});
        kernels::ggml_dequantize_rows(kValueType, row(kValues, j), 1, d_, vd, ld, best_isa{});
        if (kRotateKeys) detail::ggml_rotate(kd, d_);
        if (kRotateValues) detail::ggml_rotate(vd, d_);
      }
    }

   private:
    enum Region { kKeys = 0, kValues = 1 };
    std::uint8_t* row(Region r, std::size_t j) {
      return reinterpret_cast<std::uint8_t*>(r == kKeys ? TokenRowStore::key_row(j) : TokenRowStore::value_row(j));
    }
    const std::uint8_t* row(Region r, std::size_t j) const {
      return reinterpret_cast<const std::uint8_t*>(r == kKeys ? TokenRowStore::key_row(j) : TokenRowStore::value_row(j));
    }
    std::size_t ud() const { return static_cast<std::size_t>(d_); }

    void put(GgmlType type, const float* x, bool rotate, std::uint8_t* dst, float* scratch) {
      if (rotate) {
        std::copy(x, x + ud(), scratch);
        detail::ggml_rotate(scratch, d_);
        x = scratch;
      }
      kernels::ggml_quantize_rows(type, x, ud(), 1, d_, dst, best_isa{});
    }

    void logits_plain(const float* q, int rows, float* out, std::size_t ldl) const {
      for_each_block([&](std::size_t j0, std::size_t nb) {
        kernels::ggml_logits(kKeyType, row(kKeys, j0), nb, d_, q, rows, out + j0, ldl, best_isa{});
      });
    }

    void accumulate_plain(const float* p, std::size_t ldp, int rows, float* out) const {
      for_each_block([&](std::size_t j0, std::size_t nb) {
        kernels::ggml_accumulate(kValueType, row(kValues, j0), nb, d_, p + j0, ldp, rows, out, best_isa{});
      });
    }

    int d_;
  };
};

/// llama.cpp `--cache-type-k q8_0 --cache-type-v q8_0`.
using GgmlQ8_0 = Ggml<formats::Q8_0>;
/// llama.cpp `--cache-type-k q4_0 --cache-type-v q4_0`.
using GgmlQ4_0 = Ggml<formats::Q4_0>;
/// llama.cpp `--cache-type-k q4_1 --cache-type-v q4_1`.
using GgmlQ4_1 = Ggml<formats::Q4_1>;
/// The same formats with Hadamard-rotated keys.
using GgmlQ8_0Had = Ggml<formats::Q8_0, formats::Q8_0, GgmlRotation::kKeys>;
using GgmlQ4_0Had = Ggml<formats::Q4_0, formats::Q4_0, GgmlRotation::kKeys>;
using GgmlQ4_1Had = Ggml<formats::Q4_1, formats::Q4_1, GgmlRotation::kKeys>;

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
