// SPDX-License-Identifier: Apache-2.0
// GGUF reader on synthetic files written here: metadata of every value type, tensor infos and
// data, and rejection (std::runtime_error, never a crash) of truncated, corrupt or unsupported
// files.
#include "gguf.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

using kvllama::GgufFile;

/// Builds a GGUF v3 image byte by byte.
class GgufWriter {
 public:
  void u32(std::uint32_t v) { raw(&v, 4); }
  void u64(std::uint64_t v) { raw(&v, 8); }
  void str(const std::string& s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void raw(const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    bytes.insert(bytes.end(), b, b + n);
  }
  void pad_to(std::size_t alignment) {
    while (bytes.size() % alignment) bytes.push_back(0);
  }
  std::vector<std::uint8_t> bytes;
};

/// A valid file: 5 metadata keys, an F32 tensor [4, 2] and an F16 tensor [3].
std::vector<std::uint8_t> valid_file(std::uint32_t version = 3) {
  GgufWriter w;
  w.raw("GGUF", 4);
  w.u32(version);
  w.u64(2);  // tensors
  w.u64(5);  // metadata
  w.str("general.architecture"); w.u32(8); w.str("llama");
  w.str("llama.block_count"); w.u32(4); w.u32(30);
  w.str("llama.rope.freq_base"); w.u32(6); { float f = 100000.0f; w.raw(&f, 4); }
  w.str("tokenizer.ggml.tokens"); w.u32(9); w.u32(8); w.u64(2); w.str("a"); w.str("b");
  w.str("tokenizer.ggml.token_type"); w.u32(9); w.u32(5); w.u64(2); w.u32(1); w.u32(3);
  w.str("w"); w.u32(2); w.u64(4); w.u64(2); w.u32(0); w.u64(0);    // F32 [4, 2] at 0
  w.str("h"); w.u32(1); w.u64(3); w.u32(1); w.u64(32);             // F16 [3] at 32
  w.pad_to(32);
  for (int i = 0; i < 8; ++i) { float f = static_cast<float>(i) - 1.5f; w.raw(&f, 4); }
  for (std::uint16_t h : {0x3C00, 0xC000, 0x3800}) w.raw(&h, 2);  // 1, -2, 0.5
  return w.bytes;
}

TEST(Gguf, ParsesMetadataAndTensors) {
  const GgufFile f(valid_file(), "synthetic");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);  // the default
  EXPECT_EQ(f.metadata().size(), 5u);
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[1].name, "h");
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("llama.block_count"), 30);
  EXPECT_FLOAT_EQ(static_cast<float>(f.get_float("llama.rope.freq_base")), 100000.0f);
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type"), (std::vector<std::int64_t>{1, 3}));
  const auto& w = f.tensor("w");
  EXPECT_EQ(w.ne, (std::vector<std::int64_t>{4, 2}));
  EXPECT_EQ(w.rows(), 2);
  EXPECT_EQ(f.dequantize("w"), (std::vector<float>{-1.5f, -0.5f, 0.5f, 1.5f, 2.5f, 3.5f, 4.5f, 5.5f}));
  EXPECT_EQ(f.dequantize("h"), (std::vector<float>{1.0f, -2.0f, 0.5f}));
}

TEST(Gguf, AcceptsVersion2) { EXPECT_EQ(GgufFile(valid_file(2), "v2").version(), 2u); }

TEST(Gguf, MissingKeysAndWrongTypesThrowByName) {
  const GgufFile f(valid_file(), "synthetic");
  EXPECT_THROW(f.get_int("no.such.key"), std::runtime_error);
  EXPECT_THROW(f.get_string("llama.block_count"), std::runtime_error);
  EXPECT_THROW(f.tensor("missing"), std::runtime_error);
  try {
    f.get_int("no.such.key");
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no.such.key"), std::string::npos) << e.what();
  }
}

TEST(Gguf, EveryTruncationThrows) {
  const std::vector<std::uint8_t> full = valid_file();
  for (std::size_t n = 0; n < full.size(); ++n) {
    std::vector<std::uint8_t> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(GgufFile(cut, "cut"), std::runtime_error) << "prefix of " << n << " bytes";
  }
}

/// Returns the valid file with `bytes` written at `offset`.
std::vector<std::uint8_t> patched(std::size_t offset, std::vector<std::uint8_t> bytes) {
  std::vector<std::uint8_t> f = valid_file();
  std::memcpy(f.data() + offset, bytes.data(), bytes.size());
  return f;
}

std::string error_of(const std::vector<std::uint8_t>& bytes) {
  try {
    GgufFile f(bytes, "corrupt");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(Gguf, CorruptHeadersThrowNamingTheProblem) {
  EXPECT_NE(error_of(patched(0, {'G', 'G', 'U', 'X'})).find("magic"), std::string::npos);
  EXPECT_NE(error_of(patched(4, {7, 0, 0, 0})).find("version 7"), std::string::npos);
  EXPECT_NE(error_of(patched(8, {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F})).find("tensor count"), std::string::npos);
  EXPECT_NE(error_of(patched(16, {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0})).find("metadata count"), std::string::npos);
  // First key length made huge: the string would run past the end of the file.
  EXPECT_NE(error_of(patched(24, {0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0})).find("truncated"), std::string::npos);
}

/// Offset of the tensor info of "w" (its name's length field).
std::size_t tensor_info_offset(const std::vector<std::uint8_t>& f) {
  const char name[] = {1, 0, 0, 0, 0, 0, 0, 0, 'w'};
  for (std::size_t i = 0; i + sizeof name <= f.size(); ++i)
    if (std::memcmp(f.data() + i, name, sizeof name) == 0) return i;
  return 0;
}

TEST(Gguf, CorruptTensorInfosThrow) {
  const std::vector<std::uint8_t> base = valid_file();
  const std::size_t t = tensor_info_offset(base);
  ASSERT_GT(t, 0u);
  const std::size_t n_dims = t + 9, ne0 = n_dims + 4, type = ne0 + 16, offset = type + 4;
  auto with = [&](std::size_t at, std::vector<std::uint8_t> b) {
    std::vector<std::uint8_t> f = base;
    std::memcpy(f.data() + at, b.data(), b.size());
    return error_of(f);
  };
  EXPECT_NE(with(n_dims, {9, 0, 0, 0}).find("dimensions"), std::string::npos);
  EXPECT_NE(with(ne0, {0, 0, 0, 0, 0, 0, 0, 0}).find("invalid dimension"), std::string::npos);
  EXPECT_NE(with(type, {99, 0, 0, 0}).find("unsupported ggml tensor type id 99"), std::string::npos);
  EXPECT_NE(with(type, {2, 0, 0, 0}).find("block size"), std::string::npos);  // Q4_0 rows of 4
  EXPECT_NE(with(offset, {8, 0, 0, 0, 0, 0, 0, 0}).find("not aligned"), std::string::npos);
  EXPECT_NE(with(offset, {0, 1, 0, 0, 0, 0, 0, 0}).find("truncated"), std::string::npos);
}

TEST(Gguf, RejectsNestedArraysAndBadBools) {
  GgufWriter w;
  w.raw("GGUF", 4); w.u32(3); w.u64(0); w.u64(1);
  w.str("nested"); w.u32(9); w.u32(9); w.u64(1);
  EXPECT_NE(error_of(w.bytes).find("nested"), std::string::npos);
  GgufWriter b;
  b.raw("GGUF", 4); b.u32(3); b.u64(0); b.u64(1);
  b.str("flag"); b.u32(7); b.raw("\x05", 1);
  EXPECT_NE(error_of(b.bytes).find("bool"), std::string::npos);
}

TEST(Gguf, MissingFileThrows) {
  EXPECT_THROW(GgufFile::open("/nonexistent/model.gguf"), std::runtime_error);
}

}  // namespace
