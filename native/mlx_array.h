// RAII over mlx-c handles and thin, checked op wrappers. Engine thread only.
// Every wrapper runs on compute_stream() (device.h), turns a nonzero mlx-c status into an
// EngineError via check(), and bumps op_count() so generate can report MLX ops per token.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <mlx/c/array.h>
#include <mlx/c/device.h>
#include <mlx/c/map.h>
#include <mlx/c/stream.h>
#include <mlx/c/string.h>
#include <mlx/c/vector.h>

namespace mlxnode {

// Owns one mlx-c handle whose only state is `ctx` (streams, devices, strings, maps, iterators).
// Move-only: mlx-c handles are pointers, and a copy would be freed twice.
template <typename T, int (*Free)(T)>
class Handle {
 public:
  Handle() = default;
  explicit Handle(T h) : h_(h) {}
  Handle(Handle&& o) noexcept : h_(o.h_) { o.h_.ctx = nullptr; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = o.h_;
      o.h_.ctx = nullptr;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }

  T get() const { return h_; }
  T* out() { return &h_; }  // for mlx-c calls that write a handle
  explicit operator bool() const { return h_.ctx != nullptr; }

 private:
  void reset() {
    if (h_.ctx) Free(h_);
    h_.ctx = nullptr;
  }
  T h_{};
};

using Stream = Handle<mlx_stream, mlx_stream_free>;
using Device = Handle<mlx_device, mlx_device_free>;
using String = Handle<mlx_string, mlx_string_free>;
using ArrayMap = Handle<mlx_map_string_to_array, mlx_map_string_to_array_free>;
using StringMap = Handle<mlx_map_string_to_string, mlx_map_string_to_string_free>;
using ArrayMapIter = Handle<mlx_map_string_to_array_iterator, mlx_map_string_to_array_iterator_free>;
using StringMapIter = Handle<mlx_map_string_to_string_iterator, mlx_map_string_to_string_iterator_free>;

// A reference to an MLX array (MLX arrays are themselves shared handles to a graph node, so a
// copy is cheap: mlx_array_set shares the node, it does not copy data).
class Array {
 public:
  Array() = default;  // empty: no array yet
  explicit Array(mlx_array owned) : a_(owned) {}  // takes ownership
  Array(const Array& o);
  Array(Array&& o) noexcept : a_(o.a_) { o.a_.ctx = nullptr; }
  Array& operator=(const Array& o);
  Array& operator=(Array&& o) noexcept;
  ~Array() { mlx_array_free(a_); }

  // Host data in (copied by MLX).
  static Array from_int32(const std::vector<int32_t>& data, const std::vector<int>& shape);
  static Array from_float32(const std::vector<float>& data, const std::vector<int>& shape);
  static Array from_bool(const std::vector<uint8_t>& data, const std::vector<int>& shape);  // 0 / 1 bytes
  static Array scalar(float v, mlx_dtype dtype);

  bool empty() const { return a_.ctx == nullptr; }
  mlx_array raw() const { return a_; }
  mlx_array* out() { return &a_; }

  int ndim() const;
  int dim(int axis) const;  // negative axes count from the end
  std::vector<int> shape() const;
  mlx_dtype dtype() const;
  size_t size() const;
  size_t nbytes() const;

  // Blocking reads (they evaluate the array first).
  void eval() const;
  int32_t item_int32() const;
  std::vector<float> to_float32() const;  // any float dtype, converted on device first
  std::vector<int32_t> to_int32() const;  // any integer dtype (sampled token ids), row-major

 private:
  mlx_array a_{};
};

// mlx_vector_array built from Arrays (for eval, async_eval, concatenate).
class VectorArray {
 public:
  VectorArray();
  explicit VectorArray(const std::vector<Array>& arrays);
  VectorArray(const VectorArray&) = delete;
  VectorArray& operator=(const VectorArray&) = delete;
  ~VectorArray() { mlx_vector_array_free(v_); }
  void push(const Array& a);
  mlx_vector_array raw() const { return v_; }
  mlx_vector_array* out() { return &v_; }  // for mlx-c calls that return a vector

 private:
  mlx_vector_array v_{};
};

// Ops created through the wrappers below since the process started.
int64_t op_count();

const char* dtype_name(mlx_dtype dtype);  // "float32", "bfloat16", ...
std::string shape_string(const std::vector<int>& shape);  // "[512, 64]"

// Graph evaluation.
void eval(const std::vector<Array>& arrays);
void async_eval(const std::vector<Array>& arrays);

// The op set the engine needs, named after mlx.core.
namespace mx {
Array add(const Array& a, const Array& b);
Array subtract(const Array& a, const Array& b);
Array multiply(const Array& a, const Array& b);
Array power(const Array& a, const Array& b);
Array divide(const Array& a, const Array& b);
Array maximum(const Array& a, const Array& b);
Array less(const Array& a, const Array& b);
Array greater(const Array& a, const Array& b);
Array minimum(const Array& a, const Array& b);
Array logical_and(const Array& a, const Array& b);
Array where(const Array& cond, const Array& a, const Array& b);
Array exp(const Array& a);
Array floor(const Array& a);
Array log(const Array& a);
Array sigmoid(const Array& a);
Array silu(const Array& a);  // a * sigmoid(a), as mlx.nn.silu
Array tanh(const Array& a);
Array gelu_approx(const Array& a);  // tanh approximation, as mlx.nn.gelu_approx
Array softcap(const Array& a, float cap);  // cap * tanh(a / cap) (Gemma 2's soft capping)
Array softmax(const Array& a, int axis);  // precise: accumulates in float32
Array matmul(const Array& a, const Array& b);
Array addmm(const Array& c, const Array& a, const Array& b);  // c + a @ b, rounded once (as nn.Linear's bias)
Array astype(const Array& a, mlx_dtype dtype);
Array view(const Array& a, mlx_dtype dtype);  // the same bytes read as another dtype (last axis rescaled)
Array reshape(const Array& a, const std::vector<int>& shape);
Array transpose(const Array& a, const std::vector<int>& axes);
Array slice(const Array& a, const std::vector<int>& start, const std::vector<int>& stop);
Array slice_axis(const Array& a, int axis, int start, int stop);  // other axes whole
Array slice_update(const Array& src, const Array& update, const std::vector<int>& start,
                   const std::vector<int>& stop);
Array concatenate(const std::vector<Array>& arrays, int axis);
Array zeros(const std::vector<int>& shape, mlx_dtype dtype);
Array arange(double start, double stop, double step, mlx_dtype dtype);
Array take(const Array& a, const Array& indices, int axis);
Array take_along_axis(const Array& a, const Array& indices, int axis);
Array put_along_axis(const Array& a, const Array& indices, const Array& values, int axis);
Array argmax(const Array& a, int axis, bool keepdims);
Array max(const Array& a, int axis, bool keepdims);
Array logsumexp(const Array& a, int axis, bool keepdims);
Array argsort(const Array& a, int axis);
Array argpartition(const Array& a, int kth, int axis);
Array cumsum(const Array& a, int axis, bool reverse, bool inclusive);
Array negative(const Array& a);
Array sum(const Array& a, int axis, bool keepdims);
Array floor_divide(const Array& a, const Array& b);
Array stack(const std::vector<Array>& arrays, int axis);
// Gated DeltaNet (linear attention): softplus as mlx.nn.softplus (logaddexp(a, 0)), head repeat,
// a depthwise convolution and a compact copy of a view.
Array logaddexp(const Array& a, const Array& b);
Array repeat(const Array& a, int repeats, int axis);
Array conv1d(const Array& input, const Array& weight, int groups);  // [N, L, C] * [C_out, K, C/groups], stride 1, no padding
Array contiguous(const Array& a);
std::vector<Array> split(const Array& a, int parts, int axis);  // equal parts, one op

// Quantization. mode: "affine" (scales and biases per group), or "mxfp4", "mxfp8", "nvfp4" (uint8
// scales, no biases: `biases` empty).
Array quantized_matmul(const Array& x, const Array& w, const Array& scales, const Array& biases,
                       bool transpose, int group_size, int bits, const char* mode = "affine");
Array dequantize(const Array& w, const Array& scales, const Array& biases, int group_size, int bits,
                 const char* mode = "affine");
// Mixture-of-experts products: row r of `a` times expert rhs_indices[r] of the stacked `b` [E, K, N]
// (gather_qmm: of the stacked quantized [E, N, K*bits/32] with transpose). `sorted`: the indices ascend.
Array gather_mm(const Array& a, const Array& b, const Array& rhs_indices, bool sorted);
Array gather_qmm(const Array& x, const Array& w, const Array& scales, const Array& biases, const Array& rhs_indices,
                 int group_size, int bits, bool sorted, const char* mode = "affine");
// w [out, in] -> packed weight, scales and biases, as mlx.core.quantize (`biases` left empty in the
// microscaling modes, which have none).
void quantize(const Array& w, int group_size, int bits, Array& packed, Array& scales, Array& biases,
              const char* mode = "affine");

// mlx.core.linalg.norm(a, axis=axis): the L2 norm along one axis.
Array norm_l2(const Array& a, int axis);

// mlx.core.fast
Array rms_norm(const Array& x, const Array& weight, float eps);
// freqs: empty for the default base**(2i/dims) schedule, else per-pair periods (base ignored).
Array rope(const Array& x, int dims, bool traditional, float base, float scale, int offset,
           const Array& freqs);
// The same with one offset per batch row: `offsets` int32 [B] (rows at different positions).
Array rope(const Array& x, int dims, bool traditional, float base, float scale, const Array& offsets,
           const Array& freqs);
// mask_mode: "causal" or "" (no mask). sinks: empty, or a logit per query head that joins every
// softmax (gpt-oss's attention sinks).
Array sdpa(const Array& q, const Array& k, const Array& v, float scale, const char* mask_mode, const Array& sinks = Array());
// mask: bool, true where a query may attend a key (broadcast to [B, heads, T, S]).
Array sdpa_masked(const Array& q, const Array& k, const Array& v, float scale, const Array& mask, const Array& sinks = Array());

// mlx.core.random
Array random_key(uint64_t seed);
void random_split(const Array& key, Array& next_key, Array& sub_key);
Array categorical(const Array& logits, int axis, const Array& key);
}  // namespace mx

}  // namespace mlxnode
