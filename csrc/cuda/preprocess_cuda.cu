// CUDA kernel: one thread per output pixel (all channels), reading its
// separable footprint through precomputed taps. Same maths as the CPU kernel.
#include <cuda_runtime.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

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
    const float g = p.in_c == 1 ? acc[0] : kGrayR * acc[0] + kGrayG * acc[1] + kGrayB * acc[2];
    o[0] = g * p.scale[0] + p.bias[0];
  } else {
    for (int c = 0; c < 3; ++c) o[c * plane] = acc[p.in_c == 1 ? 0 : c] * p.scale[c] + p.bias[c];
  }
}

// Memory that grows on demand and is kept between calls: on the device, or page-locked on the host (what
// makes a host-to-device copy asynchronous).
enum class Memory { Device, Pinned };

template <Memory M>
struct Buffer {
  void* ptr = nullptr;
  size_t cap = 0;
  void ensure(size_t bytes) {
    if (bytes <= cap) return;
    release();
    if constexpr (M == Memory::Device) check(cudaMalloc(&ptr, bytes), "cudaMalloc");
    else check(cudaMallocHost(&ptr, bytes), "cudaMallocHost");
    cap = bytes;
  }
  void release() {
    if (ptr) {
      if constexpr (M == Memory::Device) cudaFree(ptr);
      else cudaFreeHost(ptr);
    }
    ptr = nullptr;
    cap = 0;
  }
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }
};
using DeviceMem = Buffer<Memory::Device>;
using PinnedMem = Buffer<Memory::Pinned>;

// One half of the double buffer: while the GPU copies and computes chunk k in
// one slot, the host packs chunk k+1 into the other slot's pinned staging.
struct Slot {
  cudaStream_t stream = nullptr;
  cudaEvent_t done = nullptr;
  PinnedMem staging, out_staging;
  DeviceMem in, out;
  float* pending_dst = nullptr;  // host output of the chunk still in out_staging
  size_t pending_bytes = 0;
};

struct TapKey {
  std::int64_t in, out;
  int interp;
  bool operator<(const TapKey& o) const { return std::tie(in, out, interp) < std::tie(o.in, o.out, o.interp); }
};

struct DeviceTaps {
  DeviceMem ints, weights;
  DevTaps view{};
};

// Everything a device keeps between calls; one call at a time per device.
struct Context {
  std::mutex lock;
  Slot slots[2];
  std::map<TapKey, std::unique_ptr<DeviceTaps>> taps;
  bool ready = false;

  void init() {
    if (ready) return;
    for (Slot& s : slots) {
      check(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "cudaStreamCreate");
      check(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming), "cudaEventCreate");
    }
    ready = true;
  }

  const DevTaps& taps_for(std::int64_t in, std::int64_t out, Interp interp) {
    const TapKey key{in, out, static_cast<int>(interp)};
    auto it = taps.find(key);
    if (it != taps.end()) return it->second->view;
    if (taps.size() >= 64) taps.clear();  // mixed-size lists: bounded cache
    const Taps t = make_taps(in, out, interp);
    auto d = std::make_unique<DeviceTaps>();
    const size_t n = t.start.size();
    d->ints.ensure(3 * n * sizeof(int));
    d->weights.ensure(std::max<size_t>(1, t.weight.size()) * sizeof(float));
    int* ip = static_cast<int*>(d->ints.ptr);
    check(cudaMemcpy(ip, t.start.data(), n * sizeof(int), cudaMemcpyHostToDevice), "cudaMemcpy(taps)");
    check(cudaMemcpy(ip + n, t.count.data(), n * sizeof(int), cudaMemcpyHostToDevice), "cudaMemcpy(taps)");
    check(cudaMemcpy(ip + 2 * n, t.offset.data(), n * sizeof(int), cudaMemcpyHostToDevice), "cudaMemcpy(taps)");
    check(cudaMemcpy(d->weights.ptr, t.weight.data(), t.weight.size() * sizeof(float), cudaMemcpyHostToDevice),
          "cudaMemcpy(weights)");
    d->view = {ip, ip + n, ip + 2 * n, static_cast<const float*>(d->weights.ptr)};
    return taps.emplace(key, std::move(d)).first->second->view;
  }

  // Waits for a slot's last chunk and hands its host output over.
  void drain(Slot& s) {
    check(cudaEventSynchronize(s.done), "cudaEventSynchronize");
    if (s.pending_dst) {
      std::memcpy(s.pending_dst, s.out_staging.ptr, s.pending_bytes);
      s.pending_dst = nullptr;
    }
  }
};

Context& context(int device) {
  static std::mutex registry_lock;
  static std::map<int, std::unique_ptr<Context>> registry;
  std::lock_guard<std::mutex> g(registry_lock);
  auto& c = registry[device];
  if (!c) c = std::make_unique<Context>();
  return *c;
}

// Makes `device` current for the call and restores the caller's device after.
struct DeviceGuard {
  int previous = 0;
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous), "cudaGetDevice");
    check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous); }
};

constexpr size_t kChunkBytes = size_t{32} << 20;  // input bytes per upload: bounded, whatever N is

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

int pointer_device(const void* ptr) {
  cudaPointerAttributes attr{};
  const cudaError_t e = cudaPointerGetAttributes(&attr, ptr);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged) ? attr.device : -1;
}

void preprocess(const std::vector<ImageView>& images, const Params& p, float* out, bool out_is_device, int device) {
  if (images.empty()) return;
  if (device_count() == 0) throw std::runtime_error("device='cuda': no CUDA device is available");
  if (device < 0 || device >= device_count())
    throw std::runtime_error("device='cuda': CUDA device " + std::to_string(device) + " does not exist (" +
                             std::to_string(device_count()) + " found)");
  DeviceGuard guard(device);
  Context& ctx = context(device);
  std::lock_guard<std::mutex> g(ctx.lock);
  ctx.init();
  for (Slot& s : ctx.slots) ctx.drain(s);  // a previous call that failed midway leaves nothing behind
  const size_t image_floats = static_cast<size_t>(p.out_c) * p.out_h * p.out_w;
  KParams kp{static_cast<int>(p.out_h), static_cast<int>(p.out_w), p.out_c, 0, 0, 0, {}, {}};
  for (int c = 0; c < 3; ++c) {
    kp.scale[c] = p.scale[c];
    kp.bias[c] = p.bias[c];
  }

  // Chunks: consecutive images of one size, at most kChunkBytes of pixels (at least one image) and 65535 images.
  size_t i = 0, k = 0;
  while (i < images.size()) {
    const ImageView& first = images[i];
    const size_t image_bytes = static_cast<size_t>(first.h * first.w * first.c);
    size_t j = i + 1;
    while (j < images.size() && j - i < 65535 && (j - i + 1) * image_bytes <= kChunkBytes &&
           images[j].h == first.h && images[j].w == first.w && images[j].c == first.c)
      ++j;
    const size_t count = j - i, in_bytes = count * image_bytes, out_bytes = count * image_floats * sizeof(float);
    Slot& s = ctx.slots[k % 2];
    ctx.drain(s);  // the chunk that used this slot two steps ago is done
    s.staging.ensure(in_bytes);
    s.in.ensure(in_bytes);
    auto* stage = static_cast<std::uint8_t*>(s.staging.ptr);
    for (size_t m = i; m < j; ++m) std::memcpy(stage + (m - i) * image_bytes, images[m].data, image_bytes);
    check(cudaMemcpyAsync(s.in.ptr, stage, in_bytes, cudaMemcpyHostToDevice, s.stream), "cudaMemcpyAsync(images)");
    float* dst = out + i * image_floats;
    if (!out_is_device) {
      s.out.ensure(out_bytes);
      dst = static_cast<float*>(s.out.ptr);
    }
    kp.in_h = static_cast<int>(first.h);
    kp.in_w = static_cast<int>(first.w);
    kp.in_c = static_cast<int>(first.c);
    const dim3 block(32, 8);
    const dim3 grid(static_cast<unsigned>((p.out_w + 31) / 32), static_cast<unsigned>((p.out_h + 7) / 8),
                    static_cast<unsigned>(count));
    const DevTaps ty = ctx.taps_for(first.h, p.out_h, p.interp);
    const DevTaps tx = ctx.taps_for(first.w, p.out_w, p.interp);
    preprocess_kernel<<<grid, block, 0, s.stream>>>(static_cast<const unsigned char*>(s.in.ptr), dst, kp, ty, tx);
    check(cudaGetLastError(), "preprocess_kernel launch");
    if (!out_is_device) {
      s.out_staging.ensure(out_bytes);
      check(cudaMemcpyAsync(s.out_staging.ptr, dst, out_bytes, cudaMemcpyDeviceToHost, s.stream),
            "cudaMemcpyAsync(out)");
      s.pending_dst = out + i * image_floats;
      s.pending_bytes = out_bytes;
    }
    check(cudaEventRecord(s.done, s.stream), "cudaEventRecord");
    i = j;
    ++k;
  }
  // Everything is written (and, for a device buffer, visible to any stream) before the call returns.
  for (Slot& s : ctx.slots) ctx.drain(s);
}

}  // namespace cuda
}  // namespace xfer
