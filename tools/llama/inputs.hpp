// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Where the engine's inputs live: the SmolLM2 GGUF file (fetched by scripts/fetch_model.sh into
/// ${KVCOMPRESS_MODEL_DIR:-$HOME/.cache/kvcompress}) and the evaluation text, real English that
/// every Debian/Ubuntu machine has: license texts from /usr/share/common-licenses (package
/// base-files), concatenated in a fixed order (about 22k tokens, so 8192-token contexts fit).

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace kvllama {

inline constexpr const char* kModelFileName = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The model's directory: $KVCOMPRESS_MODEL_DIR, else $HOME/.cache/kvcompress.
inline std::string model_dir() {
  if (const char* d = std::getenv("KVCOMPRESS_MODEL_DIR"); d && *d) return d;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/kvcompress";
}

/// Full path of the GGUF file in model_dir() (it may not exist).
inline std::string default_model_path() { return model_dir() + "/" + kModelFileName; }

inline bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

/// The whole file as bytes; throws naming the path if it cannot be read.
inline std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The evaluation text: GPL-3, Apache-2.0, MPL-2.0, GFDL-1.3, Artistic and CC0-1.0 from `dir`,
/// separated by blank lines.
inline std::string load_eval_text(const std::string& dir = "/usr/share/common-licenses") {
  static const char* const kFiles[] = {"GPL-3", "Apache-2.0", "MPL-2.0", "GFDL-1.3", "Artistic", "CC0-1.0"};
  std::string text;
  for (const char* f : kFiles) {
    if (!text.empty()) text += "\n\n";
    text += read_text_file(dir + "/" + f);
  }
  return text;
}

}  // namespace kvllama
