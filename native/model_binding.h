// JS bindings of the MLX engine: `loadModel`, runtime/memory calls, and the NativeModel class.
#pragma once
#include <napi.h>

namespace mlxnode {
void register_mlx_exports(Napi::Env env, Napi::Object exports);
}
