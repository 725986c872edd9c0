// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The calibration file: offline statistics of one method (KVQuant codebooks and outlier
/// thresholds, CQ centroids, CalibQuant ranges, …) as named fp32 tensors, in a small versioned,
/// self-describing binary format. Methods turn their calibration objects into a CalibrationSet
/// and back; this file only knows tensors. No Eigen, no third-party code: plain C++17.
///
/// Layout (all integers little-endian, floats IEEE binary32 little-endian):
/// ```
///   magic          8 bytes  "KVCCALIB"
///   format         u32      kFormatVersion (this file's layout)
///   method         u32 length + bytes (UTF-8, e.g. "kvquant")
///   method_version u32      version of the method's tensor set
///   tensor_count   u32
///   per tensor:    u32 name length + name bytes, u32 rank (≤ 8), rank × u32 dims,
///                  prod(dims) × f32 data
///   checksum       u64      FNV-1a 64 of every byte before it
/// ```
/// Every malformed input — wrong magic, unknown format version, truncation, checksum mismatch,
/// another method's file, a tensor missing or of the wrong shape — throws InvalidArgument naming
/// what was wrong; nothing is half-loaded.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace calib {

/// Version of the byte layout above (not of any method's tensors).
inline constexpr std::uint32_t kFormatVersion = 1;
/// Largest tensor rank the format accepts.
inline constexpr std::uint32_t kMaxRank = 8;

/// One named fp32 tensor, row-major.
struct CalibrationTensor {
  std::string name;
  std::vector<std::uint32_t> shape;
  std::vector<float> data;
};

namespace detail {

inline std::string shape_string(const std::vector<std::uint32_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

inline std::size_t element_count(const std::vector<std::uint32_t>& s) {
  std::size_t n = 1;
  for (std::uint32_t d : s) n *= d;
  return n;
}

/// FNV-1a, 64-bit: detects truncation-free corruption (flipped bytes) of a file.
inline std::uint64_t fnv1a64(const std::uint8_t* p, std::size_t n) {
  std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64 offset basis
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;  // FNV-1a 64 prime
  }
  return h;
}

inline void put_u32(std::vector<std::uint8_t>& out, std::uint32_t x) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(x >> (8 * i)));
}

inline void put_string(std::vector<std::uint8_t>& out, const std::string& s) {
  put_u32(out, static_cast<std::uint32_t>(s.size()));
  out.insert(out.end(), s.begin(), s.end());
}

/// Bounds-checked little-endian reader over a byte buffer.
class Reader {
 public:
  Reader(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
  std::uint32_t u32(const char* what) {
    need(4, what);
    std::uint32_t x = 0;
    for (int i = 0; i < 4; ++i) x |= static_cast<std::uint32_t>(p_[at_ + static_cast<std::size_t>(i)]) << (8 * i);
    at_ += 4;
    return x;
  }
  std::string str(const char* what) {
    const std::uint32_t len = u32(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(p_ + at_), len);
    at_ += len;
    return s;
  }
  void floats(float* dst, std::size_t count, const char* what) {
    // Checked as count ≤ remaining / 4 so a huge count cannot overflow count * 4.
    kvcompress::detail::require(count <= (n_ - at_) / 4, "calib::deserialize", what, "truncated data",
                                "a complete calibration file");
    for (std::size_t i = 0; i < count; ++i) {
      std::uint32_t bits = 0;
      for (int b = 0; b < 4; ++b) bits |= static_cast<std::uint32_t>(p_[at_ + static_cast<std::size_t>(b)]) << (8 * b);
      std::memcpy(dst + i, &bits, 4);
      at_ += 4;
    }
  }
  std::size_t offset() const { return at_; }

 private:
  void need(std::size_t k, const char* what) const {
    kvcompress::detail::require(k <= n_ - at_, "calib::deserialize", what, "truncated data",
                                "a complete calibration file");
  }
  const std::uint8_t* p_;
  std::size_t n_;
  std::size_t at_ = 0;
};

}  // namespace detail

/// The calibration of one method: its name, the version of its tensor set, and the tensors.
struct CalibrationSet {
  std::string method;
  std::uint32_t method_version = 1;
  std::vector<CalibrationTensor> tensors;

  /// Adds a tensor; data.size() must equal the product of shape.
  void add(std::string name, std::vector<std::uint32_t> shape, std::vector<float> data) {
    kvcompress::detail::require(shape.size() <= kMaxRank, "calib::CalibrationSet::add", "shape",
                                detail::shape_string(shape), "rank <= 8");
    kvcompress::detail::require(data.size() == detail::element_count(shape), "calib::CalibrationSet::add",
                                "data.size()", data.size(),
                                "the product of shape " + detail::shape_string(shape));
    for (const auto& t : tensors)
      kvcompress::detail::require(t.name != name, "calib::CalibrationSet::add", "name", name, "a name not added before");
    tensors.push_back({std::move(name), std::move(shape), std::move(data)});
  }

  /// The tensor called `name`; throws InvalidArgument naming it if absent.
  const CalibrationTensor& get(const std::string& name) const {
    for (const auto& t : tensors)
      if (t.name == name) return t;
    throw InvalidArgument("calib::CalibrationSet::get: tensor '" + name + "' is missing from the '" +
                          method + "' calibration");
  }

  /// As above, and its shape must equal `expected_shape`.
  const CalibrationTensor& get(const std::string& name, const std::vector<std::uint32_t>& expected_shape) const {
    const CalibrationTensor& t = get(name);
    kvcompress::detail::require(t.shape == expected_shape, "calib::CalibrationSet::get", name.c_str(),
                                detail::shape_string(t.shape),
                                "shape " + detail::shape_string(expected_shape) + " (calibration of another model shape?)");
    return t;
  }
};

/// The file's bytes (see the layout at the top of this file).
inline std::vector<std::uint8_t> serialize(const CalibrationSet& set) {
  static constexpr char kMagic[] = "KVCCALIB";
  std::vector<std::uint8_t> out(kMagic, kMagic + 8);
  detail::put_u32(out, kFormatVersion);
  detail::put_string(out, set.method);
  detail::put_u32(out, set.method_version);
  detail::put_u32(out, static_cast<std::uint32_t>(set.tensors.size()));
  for (const auto& t : set.tensors) {
    detail::put_string(out, t.name);
    detail::put_u32(out, static_cast<std::uint32_t>(t.shape.size()));
    for (std::uint32_t d : t.shape) detail::put_u32(out, d);
    for (float x : t.data) {
      std::uint32_t bits;
      std::memcpy(&bits, &x, 4);
      detail::put_u32(out, bits);
    }
  }
  const std::uint64_t sum = detail::fnv1a64(out.data(), out.size());
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(sum >> (8 * i)));
  return out;
}

/// Parses a calibration of `expected_method`; throws InvalidArgument on any malformed input.
inline CalibrationSet deserialize(const std::uint8_t* bytes, std::size_t n, const std::string& expected_method) {
  const char* where = "calib::deserialize";
  kvcompress::detail::require(bytes != nullptr || n == 0, where, "bytes", "nullptr", "a buffer");
  kvcompress::detail::require(n >= 8 + 8 && std::memcmp(bytes, "KVCCALIB", 8) == 0, where, "magic",
                              "not \"KVCCALIB\"", "a kvcompress calibration file");
  std::uint64_t stored = 0;
  for (int i = 0; i < 8; ++i) stored |= static_cast<std::uint64_t>(bytes[n - 8 + static_cast<std::size_t>(i)]) << (8 * i);
  kvcompress::detail::require(stored == detail::fnv1a64(bytes, n - 8), where, "checksum", "mismatch",
                              "an uncorrupted file (FNV-1a 64 of the contents)");
  detail::Reader r(bytes + 8, n - 16);
  const std::uint32_t format = r.u32("format");
  kvcompress::detail::require(format == kFormatVersion, where, "format", format,
                              "format version " + std::to_string(kFormatVersion));
  CalibrationSet set;
  set.method = r.str("method");
  kvcompress::detail::require(set.method == expected_method, where, "method", set.method,
                              "'" + expected_method + "' (a calibration of another method)");
  set.method_version = r.u32("method_version");
  const std::uint32_t count = r.u32("tensor_count");
  for (std::uint32_t i = 0; i < count; ++i) {
    CalibrationTensor t;
    t.name = r.str("tensor name");
    const std::uint32_t rank = r.u32("rank");
    kvcompress::detail::require(rank <= kMaxRank, where, "rank", rank, "<= 8");
    for (std::uint32_t a = 0; a < rank; ++a) t.shape.push_back(r.u32("dims"));
    std::size_t elems = 1;
    for (std::uint32_t d : t.shape) {
      kvcompress::detail::require(d == 0 || elems <= (n / 4) / d, where, "dims", detail::shape_string(t.shape),
                                  "a tensor that fits in the file");
      elems *= d;
    }
    t.data.resize(elems);
    r.floats(t.data.data(), elems, "tensor data");
    set.add(std::move(t.name), std::move(t.shape), std::move(t.data));
  }
  kvcompress::detail::require(r.offset() == n - 16, where, "length", n, "no bytes after the last tensor");
  return set;
}

/// Writes `set` to `path`; throws InvalidArgument if the file cannot be written.
inline void save(const CalibrationSet& set, const std::string& path) {
  const std::vector<std::uint8_t> bytes = serialize(set);
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  kvcompress::detail::require(static_cast<bool>(f), "calib::save", "path", path, "a writable file");
}

/// Reads a calibration of `expected_method` from `path`.
inline CalibrationSet load(const std::string& path, const std::string& expected_method) {
  std::ifstream f(path, std::ios::binary);
  kvcompress::detail::require(static_cast<bool>(f), "calib::load", "path", path, "a readable file");
  const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return deserialize(bytes.data(), bytes.size(), expected_method);
}

}  // namespace calib
KVCOMPRESS_NAMESPACE_END
