// The torch-facing operators of ops.cpp, shared with the whole-model plan (plan.cpp).
#pragma once

#include <torch/extension.h>

#include <vector>

namespace mixq_fast {

std::vector<at::Tensor> conv_fused(const at::Tensor& x_in, const at::Tensor& packed,
                                   const at::Tensor& multiplier, const at::Tensor& bias,
                                   const at::Tensor& shift, int64_t rows, int64_t kh, int64_t kw,
                                   int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                                   int64_t dw, int64_t groups, int64_t low, int64_t high,
                                   const c10::optional<at::Tensor>& residual_in,
                                   int64_t residual_multiplier, int64_t out_dtype,
                                   const std::vector<int64_t>& second);
at::Tensor requantize(const at::Tensor& x_in, int64_t m, int64_t c, int64_t low, int64_t high,
                      int64_t out_dtype);
at::Tensor add_levels(const at::Tensor& a_in, const at::Tensor& b_in, int64_t m_a, int64_t m_b,
                      int64_t c, int64_t low, int64_t high, int64_t out_dtype);
at::Tensor quantize_input(const at::Tensor& x_in, double step, int64_t low, int64_t high,
                          int64_t out_dtype);
at::Tensor global_avg_pool(const at::Tensor& x_in, int64_t m, int64_t c, int64_t low,
                           int64_t high, int64_t out_dtype);
at::Tensor max_pool(const at::Tensor& x_in, int64_t kernel, int64_t stride, int64_t padding);

// Registers the Plan class (plan.cpp) on the extension module.
void register_plan(pybind11::module& m);

}  // namespace mixq_fast
