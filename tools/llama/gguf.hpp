// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Reader for GGUF files (llama.cpp's model format, versions 2 and 3): header, metadata key/value
/// pairs, tensor infos and tensor data, with dequantization to fp32 through ggml_types.hpp.
///
/// Layout (little endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv × (string key,
/// u32 value type, value); n_tensors × (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type,
/// u64 offset); padding to `general.alignment` (default 32); the data section, where each tensor
/// starts at its offset. A string is a u64 length followed by that many bytes. ne[0] is the
/// contiguous dimension, so a 2-D weight [ne0, ne1] is ne1 rows of ne0 values.
///
/// The whole file is read into memory and every length, count, offset and size is checked against
/// it before use, so a truncated, corrupt or unsupported file throws std::runtime_error that names
/// the file and the problem; it never reads out of bounds. Nested metadata arrays (which llama.cpp
/// does not write) are rejected.

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ggml_types.hpp"

namespace kvllama {

/// Metadata value types (enum gguf_type).
enum class GgufType : std::uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

/// One metadata value. Integers and bools are held in `i` (u64 values above INT64_MAX are
/// rejected), floats in `f`, strings in `s`; an array holds its elements in the vector matching
/// its element type (`ints`, `floats` or `strings`).
struct GgufValue {
  GgufType type = GgufType::kU8;
  GgufType elem_type = GgufType::kU8;  ///< arrays only
  std::int64_t i = 0;
  double f = 0.0;
  std::string s;
  std::vector<std::int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
};

/// Where a tensor lives and what it holds.
struct TensorInfo {
  std::string name;
  std::vector<std::int64_t> ne;  ///< dimensions, ne[0] contiguous
  std::uint32_t type = 0;        ///< ggml type id (see GgmlType)
  std::uint64_t offset = 0;      ///< from the start of the data section
  std::int64_t n_elements = 0;
  std::int64_t n_bytes = 0;

  std::int64_t rows() const { return n_elements / ne[0]; }
};

/// A parsed GGUF file held in memory.
class GgufFile {
 public:
  /// Reads and parses `path`; throws std::runtime_error if it cannot be read or is not valid.
  static GgufFile open(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("gguf '" + path + "': cannot open file");
    std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                    std::istreambuf_iterator<char>());
    if (in.bad()) throw std::runtime_error("gguf '" + path + "': read error");
    return GgufFile(std::move(bytes), path);
  }

  /// Parses an in-memory image of a GGUF file; `name` is used in error messages.
  GgufFile(std::vector<std::uint8_t> bytes, std::string name)
      : bytes_(std::move(bytes)), name_(std::move(name)) {
    parse();
  }

  std::uint32_t version() const { return version_; }
  std::uint64_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  bool has_key(const std::string& key) const { return kv_.count(key) != 0; }
  bool has_tensor(const std::string& name) const { return tensor_index_.count(name) != 0; }

  /// The value of `key`; throws if it is missing.
  const GgufValue& value(const std::string& key) const {
    auto it = kv_.find(key);
    if (it == kv_.end()) fail("missing metadata key '" + key + "'");
    return it->second;
  }
  /// Any integer-typed scalar.
  std::int64_t get_int(const std::string& key) const {
    const GgufValue& v = value(key);
    if (!is_integer(v.type)) fail_type(key, "an integer");
    return v.i;
  }
  /// An F32 or F64 scalar.
  double get_float(const std::string& key) const {
    const GgufValue& v = value(key);
    if (v.type != GgufType::kF32 && v.type != GgufType::kF64) fail_type(key, "a float");
    return v.f;
  }
  const std::string& get_string(const std::string& key) const {
    const GgufValue& v = value(key);
    if (v.type != GgufType::kString) fail_type(key, "a string");
    return v.s;
  }
  const std::vector<std::string>& get_string_array(const std::string& key) const {
    const GgufValue& v = value(key);
    if (v.type != GgufType::kArray || v.elem_type != GgufType::kString)
      fail_type(key, "an array of strings");
    return v.strings;
  }
  const std::vector<std::int64_t>& get_int_array(const std::string& key) const {
    const GgufValue& v = value(key);
    if (v.type != GgufType::kArray || !is_integer(v.elem_type))
      fail_type(key, "an array of integers");
    return v.ints;
  }

  /// The tensor named `name`; throws if there is none.
  const TensorInfo& tensor(const std::string& name) const {
    auto it = tensor_index_.find(name);
    if (it == tensor_index_.end()) fail("missing tensor '" + name + "'");
    return tensors_[it->second];
  }
  /// Raw bytes of a tensor (n_bytes of them, bounds checked at parse time).
  const std::uint8_t* data(const TensorInfo& t) const {
    return bytes_.data() + data_offset_ + t.offset;
  }
  /// The whole tensor dequantized to fp32, in storage order (rows of ne[0]).
  std::vector<float> dequantize(const std::string& name) const {
    const TensorInfo& t = tensor(name);
    std::vector<float> out(static_cast<std::size_t>(t.n_elements));
    dequantize_row(t.type, data(t), out.data(), t.n_elements);
    return out;
  }

 private:
  static bool is_integer(GgufType t) {
    switch (t) {
      case GgufType::kU8: case GgufType::kI8: case GgufType::kU16: case GgufType::kI16:
      case GgufType::kU32: case GgufType::kI32: case GgufType::kU64: case GgufType::kI64:
      case GgufType::kBool:
        return true;
      default:
        return false;
    }
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("gguf '" + name_ + "': " + what);
  }
  [[noreturn]] void fail_type(const std::string& key, const char* expected) const {
    fail("metadata key '" + key + "' is not " + expected);
  }

  /// Bounds-checked read of `n` bytes at the cursor; `what` names the field in the error.
  const std::uint8_t* take(std::uint64_t n, const char* what) {
    if (n > bytes_.size() - pos_) {
      fail(std::string("truncated: ") + what + " needs " + std::to_string(n) + " bytes at offset " +
           std::to_string(pos_) + " but the file has " + std::to_string(bytes_.size()) + " bytes");
    }
    const std::uint8_t* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  template <class T>
  T read(const char* what) {
    T v;
    std::memcpy(&v, take(sizeof(T), what), sizeof(T));
    return v;
  }
  std::string read_string(const char* what) {
    const std::uint64_t n = read<std::uint64_t>(what);
    const std::uint8_t* p = take(n, what);
    return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
  }
  std::uint64_t remaining() const { return bytes_.size() - pos_; }

  /// Reads one scalar of type `t` into `v` (i, f or s).
  void read_scalar(GgufType t, GgufValue& v, const std::string& key) {
    switch (t) {
      case GgufType::kU8: v.i = read<std::uint8_t>("u8 value"); break;
      case GgufType::kI8: v.i = read<std::int8_t>("i8 value"); break;
      case GgufType::kU16: v.i = read<std::uint16_t>("u16 value"); break;
      case GgufType::kI16: v.i = read<std::int16_t>("i16 value"); break;
      case GgufType::kU32: v.i = read<std::uint32_t>("u32 value"); break;
      case GgufType::kI32: v.i = read<std::int32_t>("i32 value"); break;
      case GgufType::kI64: v.i = read<std::int64_t>("i64 value"); break;
      case GgufType::kU64: {
        const std::uint64_t u = read<std::uint64_t>("u64 value");
        if (u > static_cast<std::uint64_t>(INT64_MAX)) fail("metadata key '" + key + "': u64 value too large");
        v.i = static_cast<std::int64_t>(u);
        break;
      }
      case GgufType::kBool: {
        const std::uint8_t b = read<std::uint8_t>("bool value");
        if (b > 1) fail("metadata key '" + key + "': bool value " + std::to_string(b));
        v.i = b;
        break;
      }
      case GgufType::kF32: v.f = read<float>("f32 value"); break;
      case GgufType::kF64: v.f = read<double>("f64 value"); break;
      case GgufType::kString: v.s = read_string("string value"); break;
      default:
        fail("metadata key '" + key + "' has invalid value type " +
             std::to_string(static_cast<std::uint32_t>(t)));
    }
  }

  /// Smallest encoded size of one value of a scalar type (bounds the element count of arrays).
  static std::uint64_t min_size(GgufType t) {
    switch (t) {
      case GgufType::kU8: case GgufType::kI8: case GgufType::kBool: return 1;
      case GgufType::kU16: case GgufType::kI16: return 2;
      case GgufType::kU32: case GgufType::kI32: case GgufType::kF32: return 4;
      default: return 8;  // u64, i64, f64, string length
    }
  }

  void read_value(GgufValue& v, const std::string& key) {
    const std::uint32_t t = read<std::uint32_t>("value type");
    if (t > static_cast<std::uint32_t>(GgufType::kF64))
      fail("metadata key '" + key + "' has invalid value type " + std::to_string(t));
    v.type = static_cast<GgufType>(t);
    if (v.type != GgufType::kArray) {
      read_scalar(v.type, v, key);
      return;
    }
    const std::uint32_t et = read<std::uint32_t>("array element type");
    if (et > static_cast<std::uint32_t>(GgufType::kF64))
      fail("metadata key '" + key + "' has invalid array element type " + std::to_string(et));
    v.elem_type = static_cast<GgufType>(et);
    if (v.elem_type == GgufType::kArray) fail("metadata key '" + key + "': nested arrays are not supported");
    const std::uint64_t n = read<std::uint64_t>("array length");
    if (n > remaining() / min_size(v.elem_type))
      fail("truncated: metadata array '" + key + "' claims " + std::to_string(n) + " elements");
    GgufValue e;
    for (std::uint64_t k = 0; k < n; ++k) {
      read_scalar(v.elem_type, e, key);
      if (v.elem_type == GgufType::kString) v.strings.push_back(std::move(e.s));
      else if (v.elem_type == GgufType::kF32 || v.elem_type == GgufType::kF64) v.floats.push_back(e.f);
      else v.ints.push_back(e.i);
    }
  }

  void parse() {
    if (bytes_.size() < 4 || std::memcmp(bytes_.data(), "GGUF", 4) != 0) {
      fail("not a GGUF file (bad magic; expected \"GGUF\")");
    }
    pos_ = 4;
    version_ = read<std::uint32_t>("version");
    if (version_ != 2 && version_ != 3)
      fail("unsupported GGUF version " + std::to_string(version_) + " (supported: 2, 3)");
    const std::uint64_t n_tensors = read<std::uint64_t>("tensor count");
    const std::uint64_t n_kv = read<std::uint64_t>("metadata count");
    // Each key/value takes ≥ 13 bytes and each tensor info ≥ 28: reject absurd counts up front.
    if (n_kv > remaining() / 13) fail("corrupt header: metadata count " + std::to_string(n_kv));
    for (std::uint64_t k = 0; k < n_kv; ++k) {
      std::string key = read_string("metadata key");
      if (kv_.count(key)) fail("duplicate metadata key '" + key + "'");
      GgufValue v;
      read_value(v, key);
      kv_.emplace(std::move(key), std::move(v));
    }
    if (auto it = kv_.find("general.alignment"); it != kv_.end()) {
      const GgufValue& a = it->second;
      if (a.type != GgufType::kU32 || a.i == 0 || (a.i & (a.i - 1)) != 0)
        fail("general.alignment must be a u32 power of two");
      alignment_ = static_cast<std::uint64_t>(a.i);
    }
    if (n_tensors > remaining() / 28) fail("corrupt header: tensor count " + std::to_string(n_tensors));
    tensors_.reserve(static_cast<std::size_t>(n_tensors));
    for (std::uint64_t k = 0; k < n_tensors; ++k) tensors_.push_back(read_tensor_info());
    data_offset_ = (pos_ + alignment_ - 1) / alignment_ * alignment_;
    if (data_offset_ > bytes_.size()) fail("truncated: no data section");
    const std::uint64_t data_size = bytes_.size() - data_offset_;
    for (std::size_t k = 0; k < tensors_.size(); ++k) {
      const TensorInfo& t = tensors_[k];
      if (t.offset % alignment_ != 0)
        fail("tensor '" + t.name + "' offset " + std::to_string(t.offset) + " is not aligned");
      if (t.offset > data_size || static_cast<std::uint64_t>(t.n_bytes) > data_size - t.offset) {
        fail("truncated: tensor '" + t.name + "' needs bytes [" + std::to_string(t.offset) + ", " +
             std::to_string(t.offset + static_cast<std::uint64_t>(t.n_bytes)) +
             ") of a data section of " + std::to_string(data_size) + " bytes");
      }
      if (!tensor_index_.emplace(t.name, k).second) fail("duplicate tensor '" + t.name + "'");
    }
  }

  TensorInfo read_tensor_info() {
    TensorInfo t;
    t.name = read_string("tensor name");
    const std::uint32_t n_dims = read<std::uint32_t>("tensor n_dims");
    if (n_dims < 1 || n_dims > 4)
      fail("tensor '" + t.name + "' has " + std::to_string(n_dims) + " dimensions (1..4 allowed)");
    std::int64_t n = 1;
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      const std::uint64_t ne = read<std::uint64_t>("tensor dimension");
      if (ne < 1 || ne > (std::uint64_t{1} << 40) || static_cast<std::uint64_t>(n) > (std::uint64_t{1} << 62) / ne)
        fail("tensor '" + t.name + "' has an invalid dimension " + std::to_string(ne));
      t.ne.push_back(static_cast<std::int64_t>(ne));
      n *= static_cast<std::int64_t>(ne);
    }
    t.type = read<std::uint32_t>("tensor type");
    TypeTraits tr{};
    try {
      tr = type_traits(t.type);
    } catch (const std::runtime_error& e) {
      fail("tensor '" + t.name + "': " + e.what());
    }
    if (t.ne[0] % tr.block_size != 0) {
      fail("tensor '" + t.name + "': row length " + std::to_string(t.ne[0]) +
           " is not a multiple of the " + tr.name + " block size " + std::to_string(tr.block_size));
    }
    t.offset = read<std::uint64_t>("tensor offset");
    t.n_elements = n;
    t.n_bytes = n / tr.block_size * tr.block_bytes;
    return t;
  }

  std::vector<std::uint8_t> bytes_;
  std::string name_;
  std::uint64_t pos_ = 0;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = 32;
  std::uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> kv_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> tensor_index_;
};

}  // namespace kvllama
