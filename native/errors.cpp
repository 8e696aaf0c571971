#include "errors.h"

#ifdef MLXNODE_HAVE_MLX
#include <mlx/c/error.h>

namespace mlxnode {
namespace {
// mlx-c calls the handler on the thread where the failing op ran (the engine thread), so a
// thread-local slot carries the message to the `check` that follows on that same thread.
thread_local std::string last_mlx_error;

void record_error(const char* msg, void* /*data*/) { last_mlx_error = msg ? msg : "unknown MLX error"; }
}  // namespace

void install_mlx_error_handler() { mlx_set_error_handler(&record_error, nullptr, nullptr); }

void check(int status, const char* what) {
  if (status == 0) return;
  std::string message = std::string(what) + ": " + (last_mlx_error.empty() ? "MLX reported an error" : last_mlx_error);
  last_mlx_error.clear();
  throw EngineError(kMlxError, message);
}
}  // namespace mlxnode
#endif
