// Device choice and memory helpers. Engine thread only: MLX default streams are per thread, so
// the stream made here belongs to the thread that first asks for it (the engine thread).
#pragma once
#include <cstddef>
#include <string>

#include <mlx/c/stream.h>

#include "blas.h"

namespace mlxnode {

// "gpu" when a Metal (or CUDA) device is available to MLX, else "cpu".
std::string current_device_name();

// The stream every model op runs on: a dedicated stream on the chosen device, created on first
// use (mlx-lm likewise runs generation on its own `generation_stream`).
mlx_stream compute_stream();

// MLX reads safetensors on the CPU (mx.load does the same), whatever the compute device.
mlx_stream load_stream();

struct RuntimeDescription {
  std::string device;       // current_device_name()
  std::string mlx_version;  // MLX's version string, e.g. "0.31.2"
  BlasDescription blas;     // the BLAS libmlx's CPU matmuls call
};
RuntimeDescription describe_runtime();

// Byte counts from MLX's allocator.
struct MemoryStats {
  size_t active = 0;
  size_t peak = 0;
  size_t cache = 0;
  size_t memory_limit = 0;
};
MemoryStats memory_stats();
size_t active_memory();
size_t peak_memory();
size_t cache_memory();
void reset_peak_memory();
void clear_memory_cache();
// Waits until MLX's streams have run every task queued on them (an evaluation started with
// async_eval and never read still holds its inputs' buffers until it runs).
void synchronize_streams();
// Return the previous limit.
size_t set_memory_limit(size_t bytes);
size_t set_cache_limit(size_t bytes);

}  // namespace mlxnode
