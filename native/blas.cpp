#include "blas.h"

#include <dlfcn.h>

#include <cstdlib>
#include <memory>

namespace mlxnode {
namespace {

constexpr const char* kSwitch = "MLX_NODE_BLAS";

struct DlClose {
  void operator()(void* handle) const { dlclose(handle); }
};
using DlHandle = std::unique_ptr<void, DlClose>;

template <typename Fn>
Fn symbol(void* handle, const char* name) {
  return reinterpret_cast<Fn>(dlsym(handle, name));
}

struct Selection {
  void* handle = nullptr;  // the library MLX_NODE_BLAS named, now in the global scope
  std::string error;
};

#if defined(__linux__) && defined(__GLIBC__)
// Debian/Ubuntu (libopenblas0-pthread or -openmp, through update-alternatives), Fedora, Arch.
constexpr const char* kOpenBlasSoname = "libopenblas.so.0";

std::string dl_error() {
  const char* text = dlerror();
  return text ? text : "unknown error";
}

// OpenBLAS reads these itself when it loads; only when none is set do we choose (1 thread).
bool threads_chosen_by_user() {
  for (const char* name : {"OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"}) {
    const char* value = std::getenv(name);
    if (value && *value) return true;
  }
  return false;
}

Selection load_into_global_scope(const std::string& value) {
  const bool by_name = value == "openblas";
  if (!by_name && value.find('/') == std::string::npos) {
    return {nullptr, std::string(kSwitch) + " must be \"openblas\" or the path of a shared library (with a \"/\"), not \"" +
                       value + "\""};
  }
  const std::string file = by_name ? kOpenBlasSoname : value;
  const std::string prefix = std::string(kSwitch) + "=" + value + ": ";
  const char* bind_now = std::getenv("LD_BIND_NOW");
  if (bind_now && *bind_now) {
    return {nullptr, prefix + "has no effect with LD_BIND_NOW set (libmlx's BLAS symbols were bound when it loaded)"};
  }
  // Local first, so that a library without CBLAS never enters the global scope.
  DlHandle probe(dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL));
  if (!probe) {
    return {nullptr, prefix + "cannot load " + file + " (" + dl_error() + ")" +
                       (by_name ? "; install OpenBLAS (Debian/Ubuntu: apt-get install libopenblas0-pthread)" : "") +
                       ", or unset " + kSwitch + " for libmlx's own BLAS"};
  }
  if (!dlsym(probe.get(), "cblas_sgemm")) return {nullptr, prefix + file + " does not export cblas_sgemm (not a CBLAS library)"};
  // Promoted to the global scope and never closed: libmlx's bindings will point into it.
  void* global = dlopen(file.c_str(), RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
  if (!global) {
    return {nullptr, prefix + "cannot add " + file + " to the global scope (" + dl_error() + ")"};
  }
  if (!threads_chosen_by_user()) {
    if (auto set_threads = symbol<void (*)(int)>(probe.get(), "openblas_set_num_threads")) set_threads(1);
  }
  return {global, ""};
}
#else
Selection load_into_global_scope(const std::string&) {
  // Elsewhere the trick does not hold: macOS binds per library (two-level namespace; MLX calls
  // Accelerate there anyway), musl binds every symbol at load.
  return {nullptr, std::string(kSwitch) + " is supported on Linux with glibc only"};
}
#endif

const Selection& selection() {
  static const Selection chosen = [] {
    const char* value = std::getenv(kSwitch);
    return value && *value ? load_into_global_scope(value) : Selection{};
  }();
  return chosen;
}

}  // namespace

const std::string& select_blas() { return selection().error; }

BlasDescription describe_blas() {
  BlasDescription d;
  // Looked up from the addon, whose scope is libmlx's (global scope, then the addon's dlopen group),
  // so this is the definition libmlx's own lazy binding of cblas_sgemm finds.
  Dl_info where{};
  void* sgemm = dlsym(RTLD_DEFAULT, "cblas_sgemm");
  if (sgemm && dladdr(sgemm, &where) && where.dli_fname) d.library = where.dli_fname;
  DlHandle library(d.library.empty() ? nullptr : dlopen(d.library.c_str(), RTLD_LAZY | RTLD_NOLOAD));
  if (library) {
    // Not so when something loaded earlier (LD_PRELOAD) provides cblas_sgemm first.
    d.from_env = library.get() == selection().handle;
    auto config = symbol<char* (*)()>(library.get(), "openblas_get_config");
    auto threads = symbol<int (*)()>(library.get(), "openblas_get_num_threads");
    if (config && config()) d.openblas_config = config();
    if (threads) d.openblas_threads = threads();
  }
  return d;
}

}  // namespace mlxnode
