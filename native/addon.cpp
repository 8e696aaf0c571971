// Addon entry: registers the exports and the cleanup hook, nothing else.
#include <napi.h>

#include "engine.h"
#include "errors.h"
#ifdef MLXNODE_HAVE_MLX
#include "blas.h"
#include "model_binding.h"
#endif

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
#ifdef MLXNODE_HAVE_MLX
  // Before any MLX op: libmlx binds its BLAS symbols at their first call. A BLAS asked for and not
  // loadable leaves MLX unavailable with the reason (GGUF still works) rather than running slower.
  const std::string& blas_error = mlxnode::select_blas();
  if (!blas_error.empty()) {
    exports.Set("mlx", Napi::Boolean::New(env, false));
    exports.Set("mlxUnavailableReason", Napi::String::New(env, blas_error));
    exports.Set("mlxBuilt", Napi::Boolean::New(env, true));
    return exports;
  }
  // Before any MLX call: mlx-c's default handler prints and exits the process.
  mlxnode::install_mlx_error_handler();
  mlxnode::Engine::get().retain();
  napi_add_env_cleanup_hook(env, [](void*) { mlxnode::Engine::get().release(); }, nullptr);
  exports.Set("mlx", Napi::Boolean::New(env, true));
  mlxnode::register_mlx_exports(env, exports);
#else
  exports.Set("mlx", Napi::Boolean::New(env, false));
  // Both builds (CMakeLists.txt, binding.gyp) leave MLXNODE_HAVE_MLX undefined only without mlx-c.
  exports.Set("mlxUnavailableReason", Napi::String::New(env, "mlx-c was not found at build time"));
#endif
  return exports;
}

}  // namespace

NODE_API_MODULE(mlx_node, Init)
