#include <algorithm>
#include "mlx_array.h"

#include <mlx/c/fast.h>
#include <mlx/c/linalg.h>
#include <mlx/c/ops.h>
#include <mlx/c/random.h>
#include <mlx/c/transforms.h>

#include "device.h"
#include "errors.h"

namespace mlxnode {
namespace {

// Engine thread only, so a plain counter suffices.
int64_t g_op_count = 0;

// Runs one mlx-c op that writes `*res` on the compute stream; checks and counts it.
template <typename F>
Array run(const char* what, F&& f) {
  Array out;
  check(f(out.out(), compute_stream()), what);
  ++g_op_count;
  return out;
}

int normalize_axis(int axis, int ndim) { return axis < 0 ? axis + ndim : axis; }

}  // namespace

// ---- Array ------------------------------------------------------------------------------------

Array::Array(const Array& o) {
  if (!o.empty()) check(mlx_array_set(&a_, o.a_), "mlx_array_set");
}

Array& Array::operator=(const Array& o) {
  if (this == &o) return *this;
  if (o.empty()) {
    mlx_array_free(a_);
    a_.ctx = nullptr;
  } else {
    check(mlx_array_set(&a_, o.a_), "mlx_array_set");
  }
  return *this;
}

Array& Array::operator=(Array&& o) noexcept {
  if (this != &o) {
    mlx_array_free(a_);
    a_ = o.a_;
    o.a_.ctx = nullptr;
  }
  return *this;
}

Array Array::from_int32(const std::vector<int32_t>& data, const std::vector<int>& shape) {
  Array a(mlx_array_new_data(data.data(), shape.data(), static_cast<int>(shape.size()), MLX_INT32));
  if (a.empty()) check(1, "mlx_array_new_data");
  return a;
}

Array Array::from_float32(const std::vector<float>& data, const std::vector<int>& shape) {
  Array a(mlx_array_new_data(data.data(), shape.data(), static_cast<int>(shape.size()), MLX_FLOAT32));
  if (a.empty()) check(1, "mlx_array_new_data");
  return a;
}

Array Array::from_bool(const std::vector<uint8_t>& data, const std::vector<int>& shape) {
  // MLX stores bool as one byte per element, 0 or 1, which is what `data` holds.
  Array a(mlx_array_new_data(data.data(), shape.data(), static_cast<int>(shape.size()), MLX_BOOL));
  if (a.empty()) check(1, "mlx_array_new_data");
  return a;
}

Array Array::scalar(float v, mlx_dtype dtype) {
  Array a(mlx_array_new_float32(v));
  if (a.empty()) check(1, "mlx_array_new_float32");
  return dtype == MLX_FLOAT32 ? a : mx::astype(a, dtype);
}

int Array::ndim() const { return static_cast<int>(mlx_array_ndim(a_)); }

int Array::dim(int axis) const { return mlx_array_shape(a_)[normalize_axis(axis, ndim())]; }

std::vector<int> Array::shape() const {
  const int* s = mlx_array_shape(a_);
  return std::vector<int>(s, s + ndim());
}

mlx_dtype Array::dtype() const { return mlx_array_dtype(a_); }
size_t Array::size() const { return mlx_array_size(a_); }
size_t Array::nbytes() const { return mlx_array_nbytes(a_); }

void Array::eval() const { check(mlx_array_eval(a_), "mlx_array_eval"); }

int32_t Array::item_int32() const {
  // Sampled token ids are int32 already; argmax/categorical give uint32 (same bits below 2^31).
  Array a = (dtype() == MLX_INT32 || dtype() == MLX_UINT32) ? *this : mx::astype(*this, MLX_INT32);
  int32_t v = 0;
  check(mlx_array_item_int32(&v, a.a_), "mlx_array_item_int32");
  return v;
}

// The array's values on the host as T: cast to `dtype` and made row-contiguous on the device
// first, since data_* exposes the raw buffer.
template <typename T>
static std::vector<T> host_values(const Array& a, mlx_dtype dtype, const T* (*data)(const mlx_array), const char* what) {
  Array f = mx::contiguous(mx::astype(a, dtype));
  f.eval();
  const T* p = data(f.raw());
  if (!p) check(1, what);
  return std::vector<T>(p, p + f.size());
}

std::vector<float> Array::to_float32() const {
  return host_values<float>(*this, MLX_FLOAT32, mlx_array_data_float32, "mlx_array_data_float32");
}

std::vector<int32_t> Array::to_int32() const {
  return host_values<int32_t>(*this, MLX_INT32, mlx_array_data_int32, "mlx_array_data_int32");
}

// ---- VectorArray ------------------------------------------------------------------------------

VectorArray::VectorArray() : v_(mlx_vector_array_new()) {}

VectorArray::VectorArray(const std::vector<Array>& arrays) : v_(mlx_vector_array_new()) {
  for (const auto& a : arrays) push(a);
}

void VectorArray::push(const Array& a) {
  check(mlx_vector_array_append_value(v_, a.raw()), "mlx_vector_array_append_value");
}

// ---- misc -------------------------------------------------------------------------------------

int64_t op_count() { return g_op_count; }

const char* dtype_name(mlx_dtype dtype) {
  switch (dtype) {
    case MLX_BOOL: return "bool";
    case MLX_UINT8: return "uint8";
    case MLX_UINT16: return "uint16";
    case MLX_UINT32: return "uint32";
    case MLX_UINT64: return "uint64";
    case MLX_INT8: return "int8";
    case MLX_INT16: return "int16";
    case MLX_INT32: return "int32";
    case MLX_INT64: return "int64";
    case MLX_FLOAT16: return "float16";
    case MLX_FLOAT32: return "float32";
    case MLX_FLOAT64: return "float64";
    case MLX_BFLOAT16: return "bfloat16";
    case MLX_COMPLEX64: return "complex64";
  }
  return "unknown";
}

std::string shape_string(const std::vector<int>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void eval(const std::vector<Array>& arrays) {
  VectorArray v(arrays);
  check(mlx_eval(v.raw()), "mlx_eval");
}

void async_eval(const std::vector<Array>& arrays) {
  VectorArray v(arrays);
  check(mlx_async_eval(v.raw()), "mlx_async_eval");
}

// ---- ops --------------------------------------------------------------------------------------

namespace mx {

#define MLXNODE_BINARY(name)                                                                \
  Array name(const Array& a, const Array& b) {                                              \
    return run("mlx_" #name, [&](mlx_array* r, mlx_stream s) { return mlx_##name(r, a.raw(), b.raw(), s); }); \
  }
#define MLXNODE_UNARY(name)                                                                 \
  Array name(const Array& a) {                                                              \
    return run("mlx_" #name, [&](mlx_array* r, mlx_stream s) { return mlx_##name(r, a.raw(), s); }); \
  }

MLXNODE_BINARY(add)
MLXNODE_BINARY(subtract)
MLXNODE_BINARY(multiply)
MLXNODE_BINARY(power)
MLXNODE_BINARY(divide)
MLXNODE_BINARY(maximum)
MLXNODE_BINARY(less)
MLXNODE_BINARY(greater)
MLXNODE_BINARY(minimum)
MLXNODE_BINARY(logical_and)
MLXNODE_BINARY(matmul)
MLXNODE_UNARY(exp)
MLXNODE_UNARY(log)
MLXNODE_UNARY(sigmoid)
MLXNODE_UNARY(negative)
MLXNODE_UNARY(tanh)
#undef MLXNODE_BINARY
#undef MLXNODE_UNARY

Array silu(const Array& a) { return multiply(a, sigmoid(a)); }

Array addmm(const Array& c, const Array& a, const Array& b) {
  return run("mlx_addmm", [&](mlx_array* r, mlx_stream s) { return mlx_addmm(r, c.raw(), a.raw(), b.raw(), 1.0f, 1.0f, s); });
}

Array gelu_approx(const Array& a) {
  // 0.5 a (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3))), in a's dtype, with mlx.nn's ops in its order:
  // a^3 is one power, not two products (they round differently in float16/bfloat16).
  const mlx_dtype t = a.dtype();
  const Array cube = power(a, Array::scalar(3.0f, t));
  const Array inner = multiply(Array::scalar(0.7978845608028654f, t), add(a, multiply(Array::scalar(0.044715f, t), cube)));
  return multiply(multiply(Array::scalar(0.5f, t), a), add(Array::scalar(1.0f, t), tanh(inner)));
}

Array softcap(const Array& a, float cap) {
  const Array c = Array::scalar(cap, a.dtype());
  return multiply(tanh(divide(a, c)), c);
}

Array softmax(const Array& a, int axis) {
  return run("mlx_softmax", [&](mlx_array* r, mlx_stream s) { return mlx_softmax_axis(r, a.raw(), axis, true, s); });
}

Array where(const Array& cond, const Array& a, const Array& b) {
  return run("mlx_where", [&](mlx_array* r, mlx_stream s) { return mlx_where(r, cond.raw(), a.raw(), b.raw(), s); });
}

Array astype(const Array& a, mlx_dtype dtype) {
  return run("mlx_astype", [&](mlx_array* r, mlx_stream s) { return mlx_astype(r, a.raw(), dtype, s); });
}

Array view(const Array& a, mlx_dtype dtype) {
  return run("mlx_view", [&](mlx_array* r, mlx_stream s) { return mlx_view(r, a.raw(), dtype, s); });
}

Array reshape(const Array& a, const std::vector<int>& shape) {
  return run("mlx_reshape",
             [&](mlx_array* r, mlx_stream s) { return mlx_reshape(r, a.raw(), shape.data(), shape.size(), s); });
}

Array transpose(const Array& a, const std::vector<int>& axes) {
  return run("mlx_transpose",
             [&](mlx_array* r, mlx_stream s) { return mlx_transpose_axes(r, a.raw(), axes.data(), axes.size(), s); });
}

Array slice(const Array& a, const std::vector<int>& start, const std::vector<int>& stop) {
  std::vector<int> strides(start.size(), 1);
  return run("mlx_slice", [&](mlx_array* r, mlx_stream s) {
    return mlx_slice(r, a.raw(), start.data(), start.size(), stop.data(), stop.size(), strides.data(),
                     strides.size(), s);
  });
}

Array slice_axis(const Array& a, int axis, int start, int stop) {
  std::vector<int> lo(a.ndim(), 0), hi = a.shape();
  axis = normalize_axis(axis, a.ndim());
  lo[axis] = start;
  hi[axis] = stop;
  return slice(a, lo, hi);
}

Array slice_update(const Array& src, const Array& update, const std::vector<int>& start,
                   const std::vector<int>& stop) {
  std::vector<int> strides(start.size(), 1);
  return run("mlx_slice_update", [&](mlx_array* r, mlx_stream s) {
    return mlx_slice_update(r, src.raw(), update.raw(), start.data(), start.size(), stop.data(), stop.size(),
                            strides.data(), strides.size(), s);
  });
}

Array concatenate(const std::vector<Array>& arrays, int axis) {
  VectorArray v(arrays);
  return run("mlx_concatenate",
             [&](mlx_array* r, mlx_stream s) { return mlx_concatenate_axis(r, v.raw(), axis, s); });
}

Array zeros(const std::vector<int>& shape, mlx_dtype dtype) {
  return run("mlx_zeros",
             [&](mlx_array* r, mlx_stream s) { return mlx_zeros(r, shape.data(), shape.size(), dtype, s); });
}

Array arange(double start, double stop, double step, mlx_dtype dtype) {
  return run("mlx_arange", [&](mlx_array* r, mlx_stream s) { return mlx_arange(r, start, stop, step, dtype, s); });
}

Array take(const Array& a, const Array& indices, int axis) {
  return run("mlx_take", [&](mlx_array* r, mlx_stream s) { return mlx_take_axis(r, a.raw(), indices.raw(), axis, s); });
}

Array take_along_axis(const Array& a, const Array& indices, int axis) {
  return run("mlx_take_along_axis",
             [&](mlx_array* r, mlx_stream s) { return mlx_take_along_axis(r, a.raw(), indices.raw(), axis, s); });
}

Array put_along_axis(const Array& a, const Array& indices, const Array& values, int axis) {
  return run("mlx_put_along_axis", [&](mlx_array* r, mlx_stream s) {
    return mlx_put_along_axis(r, a.raw(), indices.raw(), values.raw(), axis, s);
  });
}

Array argmax(const Array& a, int axis, bool keepdims) {
  return run("mlx_argmax", [&](mlx_array* r, mlx_stream s) { return mlx_argmax_axis(r, a.raw(), axis, keepdims, s); });
}

Array max(const Array& a, int axis, bool keepdims) {
  return run("mlx_max", [&](mlx_array* r, mlx_stream s) { return mlx_max_axis(r, a.raw(), axis, keepdims, s); });
}

Array logsumexp(const Array& a, int axis, bool keepdims) {
  return run("mlx_logsumexp",
             [&](mlx_array* r, mlx_stream s) { return mlx_logsumexp_axis(r, a.raw(), axis, keepdims, s); });
}

Array argsort(const Array& a, int axis) {
  return run("mlx_argsort", [&](mlx_array* r, mlx_stream s) { return mlx_argsort_axis(r, a.raw(), axis, s); });
}

Array argpartition(const Array& a, int kth, int axis) {
  return run("mlx_argpartition",
             [&](mlx_array* r, mlx_stream s) { return mlx_argpartition_axis(r, a.raw(), kth, axis, s); });
}

Array cumsum(const Array& a, int axis, bool reverse, bool inclusive) {
  return run("mlx_cumsum",
             [&](mlx_array* r, mlx_stream s) { return mlx_cumsum(r, a.raw(), axis, reverse, inclusive, s); });
}

Array sum(const Array& a, int axis, bool keepdims) {
  return run("mlx_sum", [&](mlx_array* r, mlx_stream s) { return mlx_sum_axis(r, a.raw(), axis, keepdims, s); });
}

Array floor(const Array& a) {
  return run("mlx_floor", [&](mlx_array* r, mlx_stream s) { return mlx_floor(r, a.raw(), s); });
}

Array floor_divide(const Array& a, const Array& b) {
  return run("mlx_floor_divide", [&](mlx_array* r, mlx_stream s) { return mlx_floor_divide(r, a.raw(), b.raw(), s); });
}

Array stack(const std::vector<Array>& arrays, int axis) {
  VectorArray v(arrays);
  return run("mlx_stack", [&](mlx_array* r, mlx_stream s) { return mlx_stack_axis(r, v.raw(), axis, s); });
}

Array logaddexp(const Array& a, const Array& b) {
  return run("mlx_logaddexp", [&](mlx_array* r, mlx_stream s) { return mlx_logaddexp(r, a.raw(), b.raw(), s); });
}

Array repeat(const Array& a, int repeats, int axis) {
  return run("mlx_repeat_axis", [&](mlx_array* r, mlx_stream s) { return mlx_repeat_axis(r, a.raw(), repeats, axis, s); });
}

Array conv1d(const Array& input, const Array& weight, int groups) {
  return run("mlx_conv1d", [&](mlx_array* r, mlx_stream s) { return mlx_conv1d(r, input.raw(), weight.raw(), 1, 0, 1, groups, s); });
}

Array contiguous(const Array& a) {
  return run("mlx_contiguous", [&](mlx_array* r, mlx_stream s) { return mlx_contiguous(r, a.raw(), false, s); });
}

std::vector<Array> split(const Array& a, int parts, int axis) {
  VectorArray pieces;
  check(mlx_split(pieces.out(), a.raw(), parts, axis, compute_stream()), "mlx_split");
  ++g_op_count;
  std::vector<Array> out(mlx_vector_array_size(pieces.raw()));
  for (size_t i = 0; i < out.size(); ++i) check(mlx_vector_array_get(out[i].out(), pieces.raw(), i), "mlx_vector_array_get");
  return out;
}

Array gather_mm(const Array& a, const Array& b, const Array& rhs_indices, bool sorted) {
  return run("mlx_gather_mm", [&](mlx_array* r, mlx_stream s) {
    return mlx_gather_mm(r, a.raw(), b.raw(), mlx_array{nullptr}, rhs_indices.raw(), sorted, s);
  });
}

Array gather_qmm(const Array& x, const Array& w, const Array& scales, const Array& biases, const Array& rhs_indices,
                 int group_size, int bits, bool sorted, const char* mode) {
  return run("mlx_gather_qmm", [&](mlx_array* r, mlx_stream s) {
    return mlx_gather_qmm(r, x.raw(), w.raw(), scales.raw(), biases.raw(), mlx_array{nullptr}, rhs_indices.raw(), true,
                          mlx_optional_int{group_size, true}, mlx_optional_int{bits, true}, mode, sorted, s);
  });
}

Array quantized_matmul(const Array& x, const Array& w, const Array& scales, const Array& biases,
                       bool transpose, int group_size, int bits, const char* mode) {
  return run("mlx_quantized_matmul", [&](mlx_array* r, mlx_stream s) {
    return mlx_quantized_matmul(r, x.raw(), w.raw(), scales.raw(), biases.raw(), transpose,
                                mlx_optional_int{group_size, true}, mlx_optional_int{bits, true}, mode, s);
  });
}

Array dequantize(const Array& w, const Array& scales, const Array& biases, int group_size, int bits, const char* mode) {
  return run("mlx_dequantize", [&](mlx_array* r, mlx_stream s) {
    return mlx_dequantize(r, w.raw(), scales.raw(), biases.raw(), mlx_optional_int{group_size, true},
                          mlx_optional_int{bits, true}, mode, mlx_array{nullptr},
                          mlx_optional_dtype{MLX_FLOAT32, false}, s);
  });
}

void quantize(const Array& w, int group_size, int bits, Array& packed, Array& scales, Array& biases, const char* mode) {
  VectorArray parts;
  check(mlx_quantize(parts.out(), w.raw(), mlx_optional_int{group_size, true}, mlx_optional_int{bits, true}, mode,
                     mlx_array{nullptr}, compute_stream()),
        "mlx_quantize");
  // affine: packed, scales, biases; the microscaling modes have no biases.
  Array* outs[3] = {&packed, &scales, &biases};
  const size_t n = std::min<size_t>(3, mlx_vector_array_size(parts.raw()));
  if (n < 3) biases = Array();
  for (size_t i = 0; i < n; ++i) check(mlx_vector_array_get(outs[i]->out(), parts.raw(), i), "mlx_vector_array_get");
  ++g_op_count;
}

Array norm_l2(const Array& a, int axis) {
  return run("mlx_linalg_norm_l2",
             [&](mlx_array* r, mlx_stream s) { return mlx_linalg_norm_l2(r, a.raw(), &axis, 1, false, s); });
}

Array rms_norm(const Array& x, const Array& weight, float eps) {
  return run("mlx_fast_rms_norm",
             [&](mlx_array* r, mlx_stream s) { return mlx_fast_rms_norm(r, x.raw(), weight.raw(), eps, s); });
}

Array rope(const Array& x, int dims, bool traditional, float base, float scale, int offset,
           const Array& freqs) {
  // MLX accepts exactly one of base and freqs.
  mlx_optional_float b{base, freqs.empty()};
  return run("mlx_fast_rope", [&](mlx_array* r, mlx_stream s) {
    return mlx_fast_rope(r, x.raw(), dims, traditional, b, scale, offset, freqs.raw(), s);
  });
}

Array rope(const Array& x, int dims, bool traditional, float base, float scale, const Array& offsets,
           const Array& freqs) {
  mlx_optional_float b{base, freqs.empty()};
  return run("mlx_fast_rope_dynamic", [&](mlx_array* r, mlx_stream s) {
    return mlx_fast_rope_dynamic(r, x.raw(), dims, traditional, b, scale, offsets.raw(), freqs.raw(), s);
  });
}

Array sdpa(const Array& q, const Array& k, const Array& v, float scale, const char* mask_mode, const Array& sinks) {
  return run("mlx_fast_scaled_dot_product_attention", [&](mlx_array* r, mlx_stream s) {
    return mlx_fast_scaled_dot_product_attention(r, q.raw(), k.raw(), v.raw(), scale, mask_mode,
                                                 mlx_array{nullptr}, sinks.raw(), s);
  });
}

Array sdpa_masked(const Array& q, const Array& k, const Array& v, float scale, const Array& mask, const Array& sinks) {
  return run("mlx_fast_scaled_dot_product_attention", [&](mlx_array* r, mlx_stream s) {
    return mlx_fast_scaled_dot_product_attention(r, q.raw(), k.raw(), v.raw(), scale, "array", mask.raw(),
                                                 sinks.raw(), s);
  });
}

Array random_key(uint64_t seed) {
  Array key;
  check(mlx_random_key(key.out(), seed), "mlx_random_key");
  ++g_op_count;
  return key;
}

void random_split(const Array& key, Array& next_key, Array& sub_key) {
  Array a, b;
  check(mlx_random_split(a.out(), b.out(), key.raw(), compute_stream()), "mlx_random_split");
  ++g_op_count;
  next_key = std::move(a);
  sub_key = std::move(b);
}

Array categorical(const Array& logits, int axis, const Array& key) {
  return run("mlx_random_categorical",
             [&](mlx_array* r, mlx_stream s) { return mlx_random_categorical(r, logits.raw(), axis, key.raw(), s); });
}

}  // namespace mx
}  // namespace mlxnode
