// Which BLAS libmlx's CPU matrix products call, and the opt-in switch MLX_NODE_BLAS that puts an
// optimized one (OpenBLAS) in place of the one libmlx was linked with, as MLX on macOS calls
// Accelerate. The `mlx[cpu]` pip wheel links a vendored reference (netlib) BLAS, several times
// slower for float32 matmuls than OpenBLAS.
//
// How: libmlx binds cblas_* and LAPACK symbols lazily (JUMP_SLOT relocations, no BIND_NOW), and
// glibc resolves a lazy binding in the global scope before the local scope of the dlopen group
// libmlx belongs to (the addon's). A library dlopen'ed with RTLD_GLOBAL before libmlx's first
// call of a symbol therefore provides it. Linux/glibc only.
#pragma once
#include <string>

namespace mlxnode {

// Reads MLX_NODE_BLAS once per process (later calls return the first answer) and, when it is set,
// loads that library into the global scope. Must run before the first MLX op. Values: unset or
// empty, libmlx's own BLAS; "openblas", libopenblas.so.0 by the dynamic loader's search; a value
// with a "/", that file. Returns "" on success, else why the request cannot be honoured (the
// value, the file, dlerror's text). OpenBLAS gets 1 thread unless OPENBLAS_NUM_THREADS,
// GOTO_NUM_THREADS or OMP_NUM_THREADS is set: MLX already runs CPU ops on its own stream thread.
const std::string& select_blas();

struct BlasDescription {
  // The shared object whose cblas_sgemm libmlx's lookup scope resolves to.
  std::string library;
  // True when it is the library select_blas() loaded (MLX_NODE_BLAS).
  bool from_env = false;
  // openblas_get_config() when that library is OpenBLAS, else "".
  std::string openblas_config;
  int openblas_threads = 0;
};
BlasDescription describe_blas();

}  // namespace mlxnode
