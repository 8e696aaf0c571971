// Errors of the native engine. MLX failures never abort the process: mlx-c reports through
// our handler, `check` turns a nonzero status into an EngineError, and the engine thread hands
// the error to JS as data (code + message), where lib/errors.ts maps the code to a class.
#pragma once
#include <stdexcept>
#include <string>

namespace mlxnode {

// Stable codes shared with lib/errors.ts.
inline constexpr const char* kMlxError = "MLX_ERROR";
inline constexpr const char* kBadWeights = "BAD_WEIGHTS";
inline constexpr const char* kBadConfig = "BAD_CONFIG";  // config.json: a key missing, mistyped or out of range
inline constexpr const char* kModelNotFound = "MODEL_NOT_FOUND";
inline constexpr const char* kUnsupportedArchitecture = "UNSUPPORTED_ARCHITECTURE";
inline constexpr const char* kInvalidOption = "INVALID_OPTION";
inline constexpr const char* kBadAdapter = "BAD_ADAPTER";
inline constexpr const char* kUnloaded = "UNLOADED";  // the model was unloaded before the call reached it

class EngineError : public std::runtime_error {
 public:
  EngineError(std::string code, const std::string& message)
      : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

#ifdef MLXNODE_HAVE_MLX
// Replaces mlx-c's default handler (which prints and exits) with one that records the message.
void install_mlx_error_handler();
// Throws EngineError(kMlxError, "<what>: <mlx message>") when status is nonzero.
void check(int status, const char* what);
#endif

}  // namespace mlxnode
