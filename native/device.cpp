#include "device.h"

#include <algorithm>

#include <mlx/c/device.h>
#include <mlx/c/memory.h>
#include <mlx/c/version.h>

#include "errors.h"
#include "mlx_array.h"

namespace mlxnode {
namespace {

bool gpu_available() {
  Device gpu(mlx_device_new_type(MLX_GPU, 0));
  bool avail = false;
  check(mlx_device_is_available(&avail, gpu.get()), "mlx_device_is_available");
  return avail;
}

// Decided once: MLX cannot gain or lose a GPU while the process runs.
bool use_gpu() {
  static const bool gpu = gpu_available();
  return gpu;
}

Stream make_compute_stream() {
  Device dev(mlx_device_new_type(use_gpu() ? MLX_GPU : MLX_CPU, 0));
  // Ops that take no stream (mlx_random_key) follow the default device: keep it the same one.
  check(mlx_set_default_device(dev.get()), "mlx_set_default_device");
  Stream s(mlx_stream_new_device(dev.get()));
  if (!s) check(1, "mlx_stream_new_device");
  return s;
}

Stream make_load_stream() {
  Stream s(mlx_default_cpu_stream_new());
  if (!s) check(1, "mlx_default_cpu_stream_new");
  return s;
}

}  // namespace

std::string current_device_name() { return use_gpu() ? "gpu" : "cpu"; }

mlx_stream compute_stream() {
  static const Stream stream = make_compute_stream();
  return stream.get();
}

mlx_stream load_stream() {
  static const Stream stream = make_load_stream();
  return stream.get();
}

RuntimeDescription describe_runtime() {
  String version(mlx_string_new());
  check(mlx_version(version.out()), "mlx_version");
  const char* v = mlx_string_data(version.get());
  return RuntimeDescription{current_device_name(), v ? v : "", describe_blas()};
}

MemoryStats memory_stats() {
  MemoryStats m;
  m.active = active_memory();
  // MLX's reset sets its peak to 0 rather than to what is active; the peak since a reset is at
  // least what is active now.
  m.peak = std::max(peak_memory(), m.active);
  m.cache = cache_memory();
  check(mlx_get_memory_limit(&m.memory_limit), "mlx_get_memory_limit");
  return m;
}

size_t active_memory() {
  size_t n = 0;
  check(mlx_get_active_memory(&n), "mlx_get_active_memory");
  return n;
}

size_t peak_memory() {
  size_t n = 0;
  check(mlx_get_peak_memory(&n), "mlx_get_peak_memory");
  return n;
}

size_t cache_memory() {
  size_t n = 0;
  check(mlx_get_cache_memory(&n), "mlx_get_cache_memory");
  return n;
}

void reset_peak_memory() { check(mlx_reset_peak_memory(), "mlx_reset_peak_memory"); }

void clear_memory_cache() { check(mlx_clear_cache(), "mlx_clear_cache"); }

void synchronize_streams() {
  check(mlx_synchronize(compute_stream()), "mlx_synchronize");
  check(mlx_synchronize(load_stream()), "mlx_synchronize");
}

size_t set_memory_limit(size_t bytes) {
  size_t prev = 0;
  check(mlx_set_memory_limit(&prev, bytes), "mlx_set_memory_limit");
  return prev;
}

size_t set_cache_limit(size_t bytes) {
  size_t prev = 0;
  check(mlx_set_cache_limit(&prev, bytes), "mlx_set_cache_limit");
  return prev;
}

}  // namespace mlxnode
