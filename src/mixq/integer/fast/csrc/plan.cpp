// A whole integer model as one C++ call: the lowered fx graph's operations, in order, on
// numbered tensor slots. At batch 1 a ResNet-20 layer computes for tens of microseconds,
// and an fx node's Python dispatch (module call, argument conversion) costs about as much;
// the plan pays it once per forward. It runs exactly the operators of ops.cpp, so its
// integers are the graph's.
#include <torch/extension.h>

#include <string>
#include <vector>

#include "ops.h"

namespace mixq_fast {

namespace {

enum Kind : int64_t {
  kQuantizeInput = 0,
  kConv = 1,
  kRequantize = 2,
  kAdd = 3,
  kGlobalAvgPool = 4,
  kMaxPool = 5,
  kLookup = 6,
  kSlice = 7,
  kPad = 8,
  kFlatten = 9,
  kCat = 10,
};

struct Step {
  int64_t kind;
  std::vector<int64_t> inputs, outputs, ints, release;
  std::vector<at::Tensor> tensors;
  double real = 0.0;
};

// Conv ints: rows, kh, kw, sh, sw, ph, pw, dh, dw, groups, low, high, has_residual,
// residual_multiplier, out_dtype, linear, then the second output's 5 values (or none).
constexpr size_t kConvFixed = 16;

std::vector<at::Tensor> run_conv(const Step& s, const std::vector<at::Tensor>& slots) {
  const auto& v = s.ints;
  at::Tensor x = slots[s.inputs[0]];
  c10::optional<at::Tensor> residual;
  if (v[12] != 0) residual = slots[s.inputs[1]];
  const bool linear = v[15] != 0;
  std::vector<int64_t> lead;
  if (linear) {
    lead.assign(x.sizes().begin(), x.sizes().end() - 1);
    x = x.reshape({-1, x.size(-1), 1, 1});
    if (residual) residual = residual->reshape({-1, v[0], 1, 1});
  }
  // tensors: packed, multiplier, bias for uint8 inputs, bias for int8 inputs, shift
  const at::Tensor& bias = x.scalar_type() == at::kChar ? s.tensors[3] : s.tensors[2];
  const std::vector<int64_t> second(v.begin() + kConvFixed, v.end());
  std::vector<at::Tensor> out =
      conv_fused(x, s.tensors[0], s.tensors[1], bias, s.tensors[4], v[0], v[1], v[2], v[3], v[4],
                 v[5], v[6], v[7], v[8], v[9], v[10], v[11], residual, v[13], v[14], second);
  if (linear) {
    std::vector<int64_t> shape = lead;
    shape.push_back(v[0]);
    for (auto& t : out) t = t.reshape(shape);
  }
  return out;
}

at::Tensor run_slice(const Step& s, const at::Tensor& x) {
  at::Tensor y = x;
  for (size_t i = 0; i + 3 < s.ints.size(); i += 4) {
    y = y.slice(s.ints[i], s.ints[i + 1], s.ints[i + 2], s.ints[i + 3]);
  }
  return y;
}

at::Tensor run_lookup(const Step& s, const at::Tensor& x) {
  const at::Tensor index = (x.to(at::kLong) - s.ints[0]).reshape({-1});
  return s.tensors[0].index_select(0, index).reshape(x.sizes());
}

}  // namespace

class Plan {
 public:
  explicit Plan(int64_t slots) : slots_(slots) {}

  void add(int64_t kind, std::vector<int64_t> inputs, std::vector<int64_t> outputs,
           std::vector<int64_t> ints, std::vector<at::Tensor> tensors, double real,
           std::vector<int64_t> release) {
    TORCH_CHECK(kind >= kQuantizeInput && kind <= kCat, "mixq plan: unknown step kind ", kind);
    for (int64_t i : inputs) TORCH_CHECK(i >= 0 && i < slots_, "mixq plan: bad input slot");
    for (int64_t i : outputs) TORCH_CHECK(i >= 0 && i < slots_, "mixq plan: bad output slot");
    for (int64_t i : release) TORCH_CHECK(i >= 0 && i < slots_, "mixq plan: bad release slot");
    TORCH_CHECK(!inputs.empty() && !outputs.empty(), "mixq plan: a step needs inputs and outputs");
    if (kind == kConv) {
      TORCH_CHECK(tensors.size() == 5 && (ints.size() == kConvFixed || ints.size() == kConvFixed + 5),
                  "mixq plan: a conv step needs 5 tensors and 16 or 21 integers");
      TORCH_CHECK(outputs.size() == (ints.size() == kConvFixed ? 1u : 2u),
                  "mixq plan: a conv step's outputs do not match its second output");
      TORCH_CHECK(inputs.size() == (ints[12] != 0 ? 2u : 1u),
                  "mixq plan: a conv step's inputs do not match its residual");
    }
    steps_.push_back(Step{kind, std::move(inputs), std::move(outputs), std::move(ints),
                          std::move(release), std::move(tensors), real});
  }

  // x goes to slot 0; returns the output slot's levels as int64.
  at::Tensor run(const at::Tensor& x, int64_t output) const {
    TORCH_CHECK(output >= 0 && output < slots_, "mixq plan: bad output slot");
    std::vector<at::Tensor> slots(slots_);
    slots[0] = x;
    for (const Step& s : steps_) {
      const auto& v = s.ints;
      const at::Tensor& a = slots[s.inputs[0]];
      switch (s.kind) {
        case kQuantizeInput:
          slots[s.outputs[0]] = quantize_input(a, s.real, v[0], v[1], v[2]);
          break;
        case kConv: {
          std::vector<at::Tensor> out = run_conv(s, slots);
          for (size_t i = 0; i < out.size(); ++i) slots[s.outputs[i]] = std::move(out[i]);
          break;
        }
        case kRequantize:
          slots[s.outputs[0]] = requantize(a, v[0], v[1], v[2], v[3], v[4]);
          break;
        case kAdd:
          slots[s.outputs[0]] = add_levels(a, slots[s.inputs[1]], v[0], v[1], v[2], v[3], v[4], v[5]);
          break;
        case kGlobalAvgPool: {
          at::Tensor y = global_avg_pool(a, v[0], v[1], v[2], v[3], v[4]);
          slots[s.outputs[0]] = v[5] != 0 ? y.reshape({y.size(0), y.size(1), 1, 1}) : y;
          break;
        }
        case kMaxPool:
          slots[s.outputs[0]] = max_pool(a, v[0], v[1], v[2]);
          break;
        case kLookup:
          slots[s.outputs[0]] = run_lookup(s, a);
          break;
        case kSlice:
          slots[s.outputs[0]] = run_slice(s, a);
          break;
        case kPad:
          slots[s.outputs[0]] = at::constant_pad_nd(a, v, 0);
          break;
        case kFlatten:
          slots[s.outputs[0]] = a.flatten(v[0], v[1]);
          break;
        case kCat: {
          std::vector<at::Tensor> parts;
          parts.reserve(s.inputs.size());
          for (int64_t i : s.inputs) parts.push_back(slots[i]);
          slots[s.outputs[0]] = at::cat(parts, v[0]);
          break;
        }
      }
      // Tensors no later step reads go now, so a batch's activations do not pile up.
      for (int64_t i : s.release) slots[i] = at::Tensor();
    }
    TORCH_CHECK(slots[output].defined(), "mixq plan: the output slot was never written");
    return slots[output].to(at::kLong);
  }

  int64_t steps() const { return static_cast<int64_t>(steps_.size()); }

 private:
  int64_t slots_;
  std::vector<Step> steps_;
};

void register_plan(pybind11::module& m) {
  pybind11::class_<Plan>(m, "Plan")
      .def(pybind11::init<int64_t>())
      .def("add", &Plan::add, "append one step")
      .def("run", &Plan::run, "run every step; x is slot 0", pybind11::arg("x"),
           pybind11::arg("output"), pybind11::call_guard<pybind11::gil_scoped_release>())
      .def("steps", &Plan::steps, "the number of steps");
}

}  // namespace mixq_fast
