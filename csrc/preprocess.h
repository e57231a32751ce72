// Shared types for the preprocessing kernels: one fused pass from uint8 HWC
// images to the float32 NCHW tensor a network takes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace xfer {

enum class Interp { Area, Bilinear };

// A view of one C-contiguous HWC uint8 image; the kernels never own pixels.
struct ImageView {
  const std::uint8_t* data;
  std::int64_t h;
  std::int64_t w;
  std::int64_t c;
};

// out = value / 255 * (1/std) - mean/std, folded into one multiply-add per channel.
struct Params {
  std::int64_t out_h;
  std::int64_t out_w;
  int out_c;
  Interp interp;
  float scale[3];
  float bias[3];
};

// Resampling taps along one axis: output index o reads `count[o]` inputs
// starting at `start[o]` with weights `weight[offset[o] ...]`.
struct Taps {
  std::vector<std::int32_t> start;
  std::vector<std::int32_t> count;
  std::vector<std::int32_t> offset;
  std::vector<float> weight;
};

Taps make_taps(std::int64_t in, std::int64_t out, Interp interp);

namespace cpu {
void preprocess(const std::vector<ImageView>& images, const Params& p, float* out, int threads);
}  // namespace cpu

#ifdef XFER_WITH_CUDA
namespace cuda {
int device_count();
// Writes N*out_c*out_h*out_w floats either to host memory (`out_is_device`
// false) or straight into a device buffer the caller owns (IO binding).
void preprocess(const std::vector<ImageView>& images, const Params& p, float* out, bool out_is_device);
}  // namespace cuda
#endif

}  // namespace xfer
