// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-4 of methods/quantization.md: the byte-exact bit-packing layouts of the quantization
/// methods, each with a pack/unpack pair, plus converters from the canonical layout (P-KIVI, the
/// spec's [rec]) to the others. Codes are unsigned, one per uint8 on the unpacked side. All
/// multi-byte words are little-endian in memory (the host order on x86-64 and AArch64).
///
/// | layout  | unit   | rule                                                                   |
/// |---------|--------|------------------------------------------------------------------------|
/// | P-KIVI  | uint32 | 32/b consecutive codes per word, code j at bits [b·j, b·j + b) (LSB    |
/// |         |        | first); b ∈ {1, 2, 4, 8}; a partial last word is zero-padded           |
/// | P-CALIB | uint8  | 8/b codes per byte, code j at bits [b·(8/b − 1 − j), …) (MSB first);   |
/// |         |        | b ∈ {1, 2, 4, 8}; a partial last byte is zero-padded                   |
/// | P-GGML  | uint8  | per 32-code block, byte j (0..15) = code j | code (j + 16) << 4 (q4_0,  |
/// |         |        | q4_1 nibbles); n a multiple of 32                                      |
/// | P-KVQ   | uint32 | one token's d 4-bit codes, 8 consecutive channels per word, channel c  |
/// |         |        | at bits 4·(c mod 8); word i of the token at words[i·word_stride]       |
/// |         |        | (KVQuant's [heads, d/8, max_T] matrix has word_stride = max_T)         |
/// | trits   | uint8  | 5 trits per byte, byte = t0 + 3·t1 + 9·t2 + 27·t3 + 81·t4 (≤ 242):    |
/// |         |        | 1.6 bits per ternary code; a partial last byte pads with trit 0        |
///
/// Worked checks (tests): codes [0,1,2,3]×4, 2-bit P-KIVI → 0xE4E4E4E4; KIVI's [1,0,3,2] →
/// 0x000000B1. A P-KVQ word is bit-identical to the 4-bit P-KIVI word of the same 8 channels: the
/// two layouts differ only in where the words of one token sit.
///
/// The element accessors are KVCOMPRESS_HOST_DEVICE and unchecked; the bulk functions check the
/// bit width, the divisibility the layout needs and that every code fits b bits, and throw
/// InvalidArgument otherwise.

#include <cstddef>
#include <cstdint>
#include <string>

#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Codes per 32-bit P-KIVI word (32/b).
constexpr std::size_t pkivi_codes_per_word(int bits) { return static_cast<std::size_t>(32 / bits); }
/// Words holding n P-KIVI codes (last one zero-padded).
constexpr std::size_t pkivi_word_count(std::size_t n, int bits) {
  return (n + pkivi_codes_per_word(bits) - 1) / pkivi_codes_per_word(bits);
}
/// Codes per P-CALIB byte (8/b).
constexpr std::size_t pcalib_codes_per_byte(int bits) { return static_cast<std::size_t>(8 / bits); }
/// Bytes holding n P-CALIB codes (last one zero-padded).
constexpr std::size_t pcalib_byte_count(std::size_t n, int bits) {
  return (n + pcalib_codes_per_byte(bits) - 1) / pcalib_codes_per_byte(bits);
}
/// Codes per P-GGML block and bytes per block (q4_0/q4_1 `qs`).
inline constexpr std::size_t kGgmlBlockCodes = 32;
inline constexpr std::size_t kGgmlBlockBytes = 16;
/// Channels per P-KVQ word.
inline constexpr std::size_t kKvqCodesPerWord = 8;
/// Trits per base-3 byte and bytes holding n trits.
inline constexpr std::size_t kTritsPerByte = 5;
constexpr std::size_t trit_byte_count(std::size_t n) { return (n + kTritsPerByte - 1) / kTritsPerByte; }

/// Code i of a P-KIVI word array.
KVCOMPRESS_HOST_DEVICE std::uint8_t pkivi_get(const std::uint32_t* words, std::size_t i, int bits) {
  const std::size_t per = pkivi_codes_per_word(bits);
  const std::uint32_t mask = (1u << bits) - 1u;
  return static_cast<std::uint8_t>((words[i / per] >> (bits * static_cast<int>(i % per))) & mask);
}

/// ORs code q into position i of a P-KIVI word array (the word must start zeroed).
KVCOMPRESS_HOST_DEVICE void pkivi_or(std::uint32_t* words, std::size_t i, int bits, std::uint8_t q) {
  const std::size_t per = pkivi_codes_per_word(bits);
  words[i / per] |= static_cast<std::uint32_t>(q) << (bits * static_cast<int>(i % per));
}

/// Code i of a P-CALIB byte array.
KVCOMPRESS_HOST_DEVICE std::uint8_t pcalib_get(const std::uint8_t* bytes, std::size_t i, int bits) {
  const std::size_t per = pcalib_codes_per_byte(bits);
  const int shift = bits * static_cast<int>(per - 1 - i % per);
  return static_cast<std::uint8_t>((bytes[i / per] >> shift) & ((1u << bits) - 1u));
}

/// ORs code q into position i of a P-CALIB byte array (the byte must start zeroed).
KVCOMPRESS_HOST_DEVICE void pcalib_or(std::uint8_t* bytes, std::size_t i, int bits, std::uint8_t q) {
  const std::size_t per = pcalib_codes_per_byte(bits);
  const int shift = bits * static_cast<int>(per - 1 - i % per);
  bytes[i / per] = static_cast<std::uint8_t>(bytes[i / per] | (q << shift));
}

/// Code i (0..31 within its block) of a P-GGML byte array.
KVCOMPRESS_HOST_DEVICE std::uint8_t ggml_q4_get(const std::uint8_t* qs, std::size_t i) {
  const std::size_t block = i / kGgmlBlockCodes, j = i % kGgmlBlockCodes;
  const std::uint8_t byte = qs[block * kGgmlBlockBytes + j % kGgmlBlockBytes];
  return static_cast<std::uint8_t>(j < kGgmlBlockBytes ? byte & 0x0f : byte >> 4);
}

/// Trit i of a base-3 byte array.
KVCOMPRESS_HOST_DEVICE std::uint8_t trit_get(const std::uint8_t* bytes, std::size_t i) {
  unsigned v = bytes[i / kTritsPerByte];
  for (std::size_t k = 0; k < i % kTritsPerByte; ++k) v /= 3u;
  return static_cast<std::uint8_t>(v % 3u);
}

namespace detail {

inline void require_pow2_bits(const char* where, int bits) {
  kvcompress::detail::require(bits == 1 || bits == 2 || bits == 4 || bits == 8, where, "bits", bits,
                              "one of {1, 2, 4, 8}");
}

inline void require_codes_fit(const char* where, const std::uint8_t* codes, std::size_t n, int bits) {
  const unsigned limit = 1u << bits;
  for (std::size_t i = 0; i < n; ++i) {
    if (codes[i] >= limit)
      kvcompress::detail::require(false, where, ("codes[" + std::to_string(i) + "]").c_str(),
                                  static_cast<unsigned>(codes[i]),
                                  "a code < 2^bits = " + std::to_string(limit));
  }
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// P-KIVI (canonical)

/// Packs n codes into pkivi_word_count(n, bits) words, LSB first.
inline void pack_pkivi(const std::uint8_t* codes, std::size_t n, int bits, std::uint32_t* words) {
  constexpr const char* where = "quant::common::pack_pkivi";
  detail::require_pow2_bits(where, bits);
  detail::require_codes_fit(where, codes, n, bits);
  for (std::size_t w = 0; w < pkivi_word_count(n, bits); ++w) words[w] = 0;
  for (std::size_t i = 0; i < n; ++i) pkivi_or(words, i, bits, codes[i]);
}

/// Unpacks n codes from P-KIVI words.
inline void unpack_pkivi(const std::uint32_t* words, std::size_t n, int bits, std::uint8_t* codes) {
  detail::require_pow2_bits("quant::common::unpack_pkivi", bits);
  for (std::size_t i = 0; i < n; ++i) codes[i] = pkivi_get(words, i, bits);
}

// ---------------------------------------------------------------------------------------------
// P-CALIB

/// Packs n codes into pcalib_byte_count(n, bits) bytes, MSB first.
inline void pack_pcalib(const std::uint8_t* codes, std::size_t n, int bits, std::uint8_t* bytes) {
  constexpr const char* where = "quant::common::pack_pcalib";
  detail::require_pow2_bits(where, bits);
  detail::require_codes_fit(where, codes, n, bits);
  for (std::size_t b = 0; b < pcalib_byte_count(n, bits); ++b) bytes[b] = 0;
  for (std::size_t i = 0; i < n; ++i) pcalib_or(bytes, i, bits, codes[i]);
}

/// Unpacks n codes from P-CALIB bytes.
inline void unpack_pcalib(const std::uint8_t* bytes, std::size_t n, int bits, std::uint8_t* codes) {
  detail::require_pow2_bits("quant::common::unpack_pcalib", bits);
  for (std::size_t i = 0; i < n; ++i) codes[i] = pcalib_get(bytes, i, bits);
}

// ---------------------------------------------------------------------------------------------
// P-GGML (4-bit)

/// Packs n 4-bit codes (n a multiple of 32) into n/2 bytes of q4 nibble blocks.
inline void pack_ggml_q4(const std::uint8_t* codes, std::size_t n, std::uint8_t* qs) {
  constexpr const char* where = "quant::common::pack_ggml_q4";
  kvcompress::detail::require(n % kGgmlBlockCodes == 0, where, "n", n, "a multiple of 32 (one q4 block)");
  detail::require_codes_fit(where, codes, n, 4);
  for (std::size_t b = 0; b < n / kGgmlBlockCodes; ++b) {
    const std::uint8_t* q = codes + b * kGgmlBlockCodes;
    for (std::size_t j = 0; j < kGgmlBlockBytes; ++j)
      qs[b * kGgmlBlockBytes + j] = static_cast<std::uint8_t>(q[j] | (q[j + kGgmlBlockBytes] << 4));
  }
}

/// Unpacks n 4-bit codes (n a multiple of 32) from q4 nibble blocks.
inline void unpack_ggml_q4(const std::uint8_t* qs, std::size_t n, std::uint8_t* codes) {
  kvcompress::detail::require(n % kGgmlBlockCodes == 0, "quant::common::unpack_ggml_q4", "n", n,
                              "a multiple of 32 (one q4 block)");
  for (std::size_t i = 0; i < n; ++i) codes[i] = ggml_q4_get(qs, i);
}

// ---------------------------------------------------------------------------------------------
// P-KVQ (4-bit, one token column)

/// Packs one token's d 4-bit codes (d a multiple of 8) into d/8 words at words[i·word_stride].
inline void pack_kvq_token(const std::uint8_t* codes, std::size_t d, std::uint32_t* words,
                           std::size_t word_stride) {
  constexpr const char* where = "quant::common::pack_kvq_token";
  kvcompress::detail::require(d > 0 && d % kKvqCodesPerWord == 0, where, "d", d, "a positive multiple of 8");
  kvcompress::detail::require(word_stride > 0, where, "word_stride", word_stride, "≥ 1 (max_T)");
  detail::require_codes_fit(where, codes, d, 4);
  for (std::size_t w = 0; w < d / kKvqCodesPerWord; ++w) {
    std::uint32_t word = 0;
    for (std::size_t c = 0; c < kKvqCodesPerWord; ++c)
      word |= static_cast<std::uint32_t>(codes[w * kKvqCodesPerWord + c]) << (4 * c);
    words[w * word_stride] = word;
  }
}

/// Unpacks one token's d 4-bit codes from words[i·word_stride].
inline void unpack_kvq_token(const std::uint32_t* words, std::size_t word_stride, std::size_t d,
                             std::uint8_t* codes) {
  constexpr const char* where = "quant::common::unpack_kvq_token";
  kvcompress::detail::require(d > 0 && d % kKvqCodesPerWord == 0, where, "d", d, "a positive multiple of 8");
  kvcompress::detail::require(word_stride > 0, where, "word_stride", word_stride, "≥ 1 (max_T)");
  for (std::size_t c = 0; c < d; ++c)
    codes[c] = static_cast<std::uint8_t>((words[(c / kKvqCodesPerWord) * word_stride] >> (4 * (c % kKvqCodesPerWord))) & 0xfu);
}

// ---------------------------------------------------------------------------------------------
// Base-3 trits

/// Packs n trits (codes 0..2) into trit_byte_count(n) bytes, 5 per byte, trit 0 least significant.
inline void pack_trits(const std::uint8_t* trits, std::size_t n, std::uint8_t* bytes) {
  constexpr const char* where = "quant::common::pack_trits";
  for (std::size_t i = 0; i < n; ++i) {
    if (trits[i] > 2)
      kvcompress::detail::require(false, where, ("trits[" + std::to_string(i) + "]").c_str(),
                                  static_cast<unsigned>(trits[i]), "a trit in {0, 1, 2}");
  }
  for (std::size_t b = 0; b < trit_byte_count(n); ++b) {
    unsigned v = 0;
    for (std::size_t k = kTritsPerByte; k-- > 0;) {
      const std::size_t i = b * kTritsPerByte + k;
      v = 3u * v + (i < n ? trits[i] : 0u);
    }
    bytes[b] = static_cast<std::uint8_t>(v);
  }
}

/// Unpacks n trits from base-3 bytes. Throws InvalidArgument for a byte above 242 (not a trit
/// pack).
inline void unpack_trits(const std::uint8_t* bytes, std::size_t n, std::uint8_t* trits) {
  for (std::size_t b = 0; b < trit_byte_count(n); ++b) {
    if (bytes[b] > 242)
      kvcompress::detail::require(false, "quant::common::unpack_trits",
                                  ("bytes[" + std::to_string(b) + "]").c_str(),
                                  static_cast<unsigned>(bytes[b]), "a base-3 byte ≤ 242 (3^5 − 1)");
  }
  for (std::size_t i = 0; i < n; ++i) trits[i] = trit_get(bytes, i);
}

// ---------------------------------------------------------------------------------------------
// Converters from / to the canonical P-KIVI layout (same codes, same order)

/// P-KIVI → P-CALIB, n codes of b bits.
inline void pkivi_to_pcalib(const std::uint32_t* words, std::size_t n, int bits, std::uint8_t* bytes) {
  detail::require_pow2_bits("quant::common::pkivi_to_pcalib", bits);
  for (std::size_t b = 0; b < pcalib_byte_count(n, bits); ++b) bytes[b] = 0;
  for (std::size_t i = 0; i < n; ++i) pcalib_or(bytes, i, bits, pkivi_get(words, i, bits));
}

/// P-CALIB → P-KIVI, n codes of b bits.
inline void pcalib_to_pkivi(const std::uint8_t* bytes, std::size_t n, int bits, std::uint32_t* words) {
  detail::require_pow2_bits("quant::common::pcalib_to_pkivi", bits);
  for (std::size_t w = 0; w < pkivi_word_count(n, bits); ++w) words[w] = 0;
  for (std::size_t i = 0; i < n; ++i) pkivi_or(words, i, bits, pcalib_get(bytes, i, bits));
}

/// 4-bit P-KIVI → P-GGML, n a multiple of 32.
inline void pkivi_to_ggml_q4(const std::uint32_t* words, std::size_t n, std::uint8_t* qs) {
  kvcompress::detail::require(n % kGgmlBlockCodes == 0, "quant::common::pkivi_to_ggml_q4", "n", n,
                              "a multiple of 32 (one q4 block)");
  for (std::size_t b = 0; b < n / kGgmlBlockCodes; ++b)
    for (std::size_t j = 0; j < kGgmlBlockBytes; ++j) {
      const std::size_t i = b * kGgmlBlockCodes + j;
      qs[b * kGgmlBlockBytes + j] =
          static_cast<std::uint8_t>(pkivi_get(words, i, 4) | (pkivi_get(words, i + kGgmlBlockBytes, 4) << 4));
    }
}

/// P-GGML → 4-bit P-KIVI, n a multiple of 32.
inline void ggml_q4_to_pkivi(const std::uint8_t* qs, std::size_t n, std::uint32_t* words) {
  kvcompress::detail::require(n % kGgmlBlockCodes == 0, "quant::common::ggml_q4_to_pkivi", "n", n,
                              "a multiple of 32 (one q4 block)");
  for (std::size_t w = 0; w < pkivi_word_count(n, 4); ++w) words[w] = 0;
  for (std::size_t i = 0; i < n; ++i) pkivi_or(words, i, 4, ggml_q4_get(qs, i));
}

/// 4-bit P-KIVI (one token's d channels, packed along channels) → P-KVQ column: the words are
/// identical, only their placement changes (word i → kvq[i·word_stride]).
inline void pkivi_to_kvq_token(const std::uint32_t* words, std::size_t d, std::uint32_t* kvq,
                               std::size_t word_stride) {
  constexpr const char* where = "quant::common::pkivi_to_kvq_token";
  kvcompress::detail::require(d > 0 && d % kKvqCodesPerWord == 0, where, "d", d, "a positive multiple of 8");
  kvcompress::detail::require(word_stride > 0, where, "word_stride", word_stride, "≥ 1 (max_T)");
  for (std::size_t w = 0; w < d / kKvqCodesPerWord; ++w) kvq[w * word_stride] = words[w];
}

/// P-KVQ column → 4-bit P-KIVI words of one token.
inline void kvq_token_to_pkivi(const std::uint32_t* kvq, std::size_t word_stride, std::size_t d,
                               std::uint32_t* words) {
  constexpr const char* where = "quant::common::kvq_token_to_pkivi";
  kvcompress::detail::require(d > 0 && d % kKvqCodesPerWord == 0, where, "d", d, "a positive multiple of 8");
  kvcompress::detail::require(word_stride > 0, where, "word_stride", word_stride, "≥ 1 (max_T)");
  for (std::size_t w = 0; w < d / kKvqCodesPerWord; ++w) words[w] = kvq[w * word_stride];
}

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
