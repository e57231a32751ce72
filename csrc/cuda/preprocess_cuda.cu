// CUDA kernel: one thread per output pixel (all channels), reading its
// separable footprint through precomputed taps. Same maths as the CPU kernel.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "preprocess.h"

namespace xfer {
namespace cuda {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

struct DevTaps {
  const int* start;
  const int* count;
  const int* offset;
  const float* weight;
};

struct KParams {
  int out_h, out_w, out_c, in_h, in_w, in_c;
  float scale[3], bias[3];
};

__global__ void preprocess_kernel(const unsigned char* __restrict__ in, float* __restrict__ out, KParams p,
                                  DevTaps ty, DevTaps tx) {
  const int ox = blockIdx.x * blockDim.x + threadIdx.x;
  const int oy = blockIdx.y * blockDim.y + threadIdx.y;
  const int n = blockIdx.z;
  if (ox >= p.out_w || oy >= p.out_h) return;
  const unsigned char* img = in + static_cast<long long>(n) * p.in_h * p.in_w * p.in_c;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  const int y0 = ty.start[oy], ny = ty.count[oy], wy0 = ty.offset[oy];
  const int x0 = tx.start[ox], nx = tx.count[ox], wx0 = tx.offset[ox];
  for (int j = 0; j < ny; ++j) {
    const unsigned char* row = img + static_cast<long long>(y0 + j) * p.in_w * p.in_c;
    float r[4] = {0.f, 0.f, 0.f, 0.f};
    for (int i = 0; i < nx; ++i) {
      const float w = tx.weight[wx0 + i];
      const unsigned char* px = row + (x0 + i) * p.in_c;
      for (int c = 0; c < p.in_c && c < 4; ++c) r[c] += w * static_cast<float>(px[c]);
    }
    const float w = ty.weight[wy0 + j];
    for (int c = 0; c < 4; ++c) acc[c] += w * r[c];
  }
  const long long plane = static_cast<long long>(p.out_h) * p.out_w;
  float* o = out + static_cast<long long>(n) * p.out_c * plane + static_cast<long long>(oy) * p.out_w + ox;
  if (p.out_c == 1) {
    const float g = p.in_c == 1 ? acc[0] : 0.299f * acc[0] + 0.587f * acc[1] + 0.114f * acc[2];
    o[0] = g * p.scale[0] + p.bias[0];
  } else {
    for (int c = 0; c < 3; ++c) o[c * plane] = acc[p.in_c == 1 ? 0 : c] * p.scale[c] + p.bias[c];
  }
}

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { check(cudaMalloc(&ptr, bytes > 0 ? bytes : 1), "cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

struct UploadedTaps {
  DeviceBuffer ints, weights;
  DevTaps view;
  explicit UploadedTaps(const Taps& t)
      : ints(3 * t.start.size() * sizeof(int)), weights(t.weight.size() * sizeof(float)) {
    const size_t n = t.start.size();
    int* d = static_cast<int*>(ints.ptr);
    check(cudaMemcpy(d, t.start.data(), n * sizeof(int), cudaMemcpyHostToDevice), "cudaMemcpy(taps)");
    check(cudaMemcpy(d + n, t.count.data(), n * sizeof(int), cudaMemcpyHostToDevice), "cudaMemcpy(taps)");
    check(cudaMemcpy(d + 2 * n, t.offset.data(), n * sizeof(int), cudaMemcpyHostToDevice), "cudaMemcpy(taps)");
    check(cudaMemcpy(weights.ptr, t.weight.data(), t.weight.size() * sizeof(float), cudaMemcpyHostToDevice),
          "cudaMemcpy(weights)");
    view = {d, d + n, d + 2 * n, static_cast<const float*>(weights.ptr)};
  }
};

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

void preprocess(const std::vector<ImageView>& images, const Params& p, float* out, bool out_is_device) {
  if (images.empty()) return;
  if (device_count() == 0) throw std::runtime_error("device='cuda': no CUDA device is available");
  const size_t image_floats = static_cast<size_t>(p.out_c) * p.out_h * p.out_w;
  DeviceBuffer dev_out(out_is_device ? 0 : images.size() * image_floats * sizeof(float));
  float* dst = out_is_device ? out : static_cast<float*>(dev_out.ptr);

  // Consecutive images of one size go up in one copy and one launch.
  size_t i = 0;
  while (i < images.size()) {
    const ImageView& first = images[i];
    size_t j = i + 1;
    while (j < images.size() && j - i < 65535 && images[j].h == first.h && images[j].w == first.w && images[j].c == first.c &&
           images[j].data == images[j - 1].data + first.h * first.w * first.c)
      ++j;
    const size_t count = j - i;
    const size_t bytes = count * static_cast<size_t>(first.h * first.w * first.c);
    DeviceBuffer dev_in(bytes);
    check(cudaMemcpy(dev_in.ptr, first.data, bytes, cudaMemcpyHostToDevice), "cudaMemcpy(images)");
    UploadedTaps ty(make_taps(first.h, p.out_h, p.interp));
    UploadedTaps tx(make_taps(first.w, p.out_w, p.interp));
    KParams kp{static_cast<int>(p.out_h), static_cast<int>(p.out_w), p.out_c, static_cast<int>(first.h),
               static_cast<int>(first.w), static_cast<int>(first.c), {}, {}};
    for (int c = 0; c < 3; ++c) {
      kp.scale[c] = p.scale[c];
      kp.bias[c] = p.bias[c];
    }
    const dim3 block(32, 8);
    const dim3 grid(static_cast<unsigned>((p.out_w + 31) / 32), static_cast<unsigned>((p.out_h + 7) / 8),
                    static_cast<unsigned>(count));
    preprocess_kernel<<<grid, block>>>(static_cast<const unsigned char*>(dev_in.ptr), dst + i * image_floats, kp,
                                       ty.view, tx.view);
    check(cudaGetLastError(), "preprocess_kernel launch");
    check(cudaDeviceSynchronize(), "preprocess_kernel");
    i = j;
  }
  if (!out_is_device)
    check(cudaMemcpy(out, dst, images.size() * image_floats * sizeof(float), cudaMemcpyDeviceToHost),
          "cudaMemcpy(out)");
}

}  // namespace cuda
}  // namespace xfer
