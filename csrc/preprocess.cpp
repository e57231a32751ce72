// Python bindings for the preprocessing kernels: every argument is checked
// here, with messages saying what was expected and what came, before any
// kernel touches memory. The kernels then run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <thread>

#include "front.h"
#include "preprocess.h"

namespace py = pybind11;

namespace xfer {
namespace {

int g_threads = 0;  // 0: cpu::default_threads()

constexpr std::int64_t kMaxSide = 1 << 16;
constexpr int kMaxThreads = 1024;     // far past any machine's cores; beyond it a count is a mistake, not a wish
constexpr double kMinStd = 1e-6;      // below it (x - mean) / std overflows float32 for 8-bit pixels

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

void check_threads(int threads, const std::string& what) {
  if (threads < 0 || threads > kMaxThreads)
    throw py::value_error(what + ": expected 0 (all cores) to " + std::to_string(kMaxThreads) + ", got " +
                          std::to_string(threads));
}

std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

std::string strides_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.strides(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

[[noreturn]] void type_error(const std::string& msg) { throw py::type_error(msg); }
[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }

bool is_c_contiguous(const py::array& a) { return (a.flags() & py::array::c_style) != 0; }

void check_image_array(const py::array& a, const std::string& what) {
  if (!a.dtype().is(py::dtype::of<std::uint8_t>()))
    type_error(what + ": expected dtype uint8, got " + dtype_str(a));
  if (!is_c_contiguous(a))
    value_error(what + ": expected a C-contiguous array, got shape " + shape_str(a) + " with strides " +
                strides_str(a) + "; pass numpy.ascontiguousarray(...)");
}

// Collects views of the input images without copying a byte. `keep` receives
// a reference to every array viewed: the kernels run with the GIL released,
// so another thread may empty the list meanwhile, and these references are
// what keeps the pixels alive until the call returns.
// `index` (1-D int64) as positions into a batch of n images, each checked.
std::vector<std::int64_t> positions(const py::object& index, std::int64_t n) {
  if (!py::isinstance<py::array>(index))
    type_error("index: expected a 1-D int64 numpy array, got " +
               py::str(py::type::handle_of(index).attr("__name__")).cast<std::string>());
  py::array ix = py::reinterpret_borrow<py::array>(index);
  if (!ix.dtype().is(py::dtype::of<std::int64_t>())) type_error("index: expected dtype int64, got " + dtype_str(ix));
  if (ix.ndim() != 1) value_error("index: expected a 1-D array, got shape " + shape_str(ix));
  if (ix.shape(0) == 0) value_error("index: expected at least one position, got an empty index");
  auto at = ix.unchecked<std::int64_t, 1>();
  std::vector<std::int64_t> out(static_cast<std::size_t>(ix.shape(0)));
  for (py::ssize_t i = 0; i < ix.shape(0); ++i) {
    const std::int64_t k = at(i);
    if (k < 0 || k >= n)
      value_error("index[" + std::to_string(i) + "]: " + std::to_string(k) + " is out of range for a batch of " +
                  std::to_string(n) + " images");
    out[static_cast<std::size_t>(i)] = k;
  }
  return out;
}

// `index` (1-D int64 or None) picks images of a 4-D batch by position, so a test split can be streamed out of a
// memory-mapped pack in chunks without gathering its pixels into a copy first.
std::vector<ImageView> pick(const std::vector<ImageView>& all, const py::object& index) {
  std::vector<ImageView> views;
  for (const std::int64_t k : positions(index, static_cast<std::int64_t>(all.size())))
    views.push_back(all[static_cast<std::size_t>(k)]);
  return views;
}

std::vector<ImageView> collect_images(const py::handle& images, std::vector<py::array>& keep,
                                      const py::object& index = py::none()) {
  std::vector<ImageView> views;
  if (!index.is_none() && !py::isinstance<py::array>(images))
    type_error("index: needs images as a 4-D numpy batch (N, H, W, C), got a " +
               py::str(py::type::handle_of(images).attr("__name__")).cast<std::string>());
  if (py::isinstance<py::array>(images)) {
    py::array a = py::reinterpret_borrow<py::array>(images);
    keep.push_back(a);
    if (a.ndim() != 4)
      value_error("images: expected a 4-D batch (N, H, W, C) or a list of (H, W[, C]) images, got a " +
                  std::to_string(a.ndim()) + "-D array of shape " + shape_str(a));
    check_image_array(a, "images");
    const std::int64_t n = a.shape(0), h = a.shape(1), w = a.shape(2), c = a.shape(3);
    if (n == 0) value_error("images: expected at least one image, got an empty batch of shape " + shape_str(a));
    if (h == 0 || w == 0) value_error("images: expected non-empty images, got shape " + shape_str(a));
    if (c != 1 && c != 3 && c != 4)
      value_error("images: expected 1, 3 or 4 channels in the last axis, got " + std::to_string(c) +
                  " (shape " + shape_str(a) + ")");
    if (h > kMaxSide || w > kMaxSide) value_error("images: image sides above 65536 are not supported, got " + shape_str(a));
    const auto* base = static_cast<const std::uint8_t*>(a.data());
    views.reserve(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) views.push_back({base + i * h * w * c, h, w, c});
    return index.is_none() ? views : pick(views, index);
  }
  if (!py::isinstance<py::list>(images) && !py::isinstance<py::tuple>(images))
    type_error("images: expected a uint8 numpy array (N, H, W, C) or a list of arrays, got " +
               py::str(py::type::handle_of(images).attr("__name__")).cast<std::string>());
  py::sequence seq = py::reinterpret_borrow<py::sequence>(images);
  if (seq.size() == 0) value_error("images: expected at least one image, got an empty list");
  std::size_t i = 0;
  for (py::handle item : seq) {
    const std::string what = "images[" + std::to_string(i) + "]";
    if (!py::isinstance<py::array>(item))
      type_error(what + ": expected a numpy array, got " +
                 py::str(py::type::handle_of(item).attr("__name__")).cast<std::string>());
    py::array a = py::reinterpret_borrow<py::array>(item);
    if (a.ndim() != 2 && a.ndim() != 3)
      value_error(what + ": expected an (H, W) or (H, W, C) image, got shape " + shape_str(a));
    check_image_array(a, what);
    const std::int64_t h = a.shape(0), w = a.shape(1), c = a.ndim() == 3 ? a.shape(2) : 1;
    if (h == 0 || w == 0) value_error(what + ": expected a non-empty image, got shape " + shape_str(a));
    if (c != 1 && c != 3 && c != 4)
      value_error(what + ": expected 1, 3 or 4 channels, got " + std::to_string(c) + " (shape " + shape_str(a) + ")");
    if (h > kMaxSide || w > kMaxSide) value_error(what + ": image sides above 65536 are not supported, got " + shape_str(a));
    views.push_back({static_cast<const std::uint8_t*>(a.data()), h, w, c});
    keep.push_back(a);
    ++i;
  }
  return views;
}

std::vector<float> per_channel(const std::vector<float>& v, int channels, const char* name) {
  if (v.size() == 1) return std::vector<float>(static_cast<std::size_t>(channels), v[0]);
  if (static_cast<int>(v.size()) != channels)
    value_error(std::string(name) + ": expected 1 or " + std::to_string(channels) + " values, got " +
                std::to_string(v.size()));
  return v;
}

Params make_params(std::pair<std::int64_t, std::int64_t> size, int channels, const std::vector<float>& mean,
                   const std::vector<float>& stdv, const std::string& interp) {
  if (size.first <= 0 || size.second <= 0 || size.first > kMaxSide || size.second > kMaxSide)
    value_error("size: expected (h, w) with 1 <= h, w <= 65536, got (" + std::to_string(size.first) + ", " +
                std::to_string(size.second) + ")");
  if (channels != 1 && channels != 3)
    value_error("channels: expected 1 (gray) or 3 (RGB), got " + std::to_string(channels));
  Params p{};
  p.out_h = size.first;
  p.out_w = size.second;
  p.out_c = channels;
  if (interp == "area") p.interp = Interp::Area;
  else if (interp == "bilinear") p.interp = Interp::Bilinear;
  else value_error("interp: expected 'area' or 'bilinear', got '" + interp + "'");
  const auto m = per_channel(mean, channels, "mean");
  const auto s = per_channel(stdv, channels, "std");
  for (int c = 0; c < channels; ++c) {
    if (!std::isfinite(m[c])) value_error("mean: expected finite values, got " + num(m[c]));
    if (!(s[c] >= kMinStd) || !std::isfinite(s[c]))
      value_error("std: expected finite values >= 1e-06, got " + num(s[c]));
    p.scale[c] = static_cast<float>(1.0 / (255.0 * s[c]));
    p.bias[c] = static_cast<float>(-static_cast<double>(m[c]) / s[c]);
  }
  return p;
}

bool overlaps(const std::vector<ImageView>& views, const float* out, std::size_t out_bytes) {
  const auto* o0 = reinterpret_cast<const std::uint8_t*>(out);
  const auto* o1 = o0 + out_bytes;
  for (const auto& v : views) {
    const std::uint8_t* i1 = v.data + v.h * v.w * v.c;
    if (v.data < o1 && o0 < i1) return true;
  }
  return false;
}

// `out` checked as the float32 C-contiguous writeable (N, C, H, W) array `shape` says, or a new one when None.
py::array_t<float> nchw_out(const py::object& out, const std::vector<py::ssize_t>& shape) {
  if (out.is_none()) return py::array_t<float>(shape);
  if (!py::isinstance<py::array>(out))
    type_error("out: expected a float32 numpy array, got " +
               py::str(py::type::handle_of(out).attr("__name__")).cast<std::string>());
  py::array o = py::reinterpret_borrow<py::array>(out);
  if (!o.dtype().is(py::dtype::of<float>())) type_error("out: expected dtype float32, got " + dtype_str(o));
  bool same = o.ndim() == 4;
  for (int i = 0; same && i < 4; ++i) same = o.shape(i) == shape[static_cast<std::size_t>(i)];
  if (!same) {
    std::ostringstream s;
    s << "out: expected shape (" << shape[0] << ", " << shape[1] << ", " << shape[2] << ", " << shape[3] << "), got "
      << shape_str(o);
    value_error(s.str());
  }
  if (!is_c_contiguous(o)) value_error("out: expected a C-contiguous array, got strides " + strides_str(o));
  if (!o.writeable()) value_error("out: expected a writeable array, got a read-only one");
  return py::reinterpret_borrow<py::array_t<float>>(o);
}

int threads_of(int threads) { return threads > 0 ? threads : (g_threads > 0 ? g_threads : cpu::default_threads()); }

py::array_t<float> preprocess(py::handle images, std::pair<std::int64_t, std::int64_t> size, int channels,
                              std::vector<float> mean, std::vector<float> stdv, const std::string& interp,
                              py::object out, const std::string& device, int threads, int cuda_device,
                              py::object index) {
  const Params p = make_params(size, channels, mean, stdv, interp);
  if (device != "cpu" && device != "cuda") value_error("device: expected 'cpu' or 'cuda', got '" + device + "'");
#ifndef XFER_WITH_CUDA
  if (device == "cuda")
    throw std::runtime_error("device='cuda': this build of xfer._C has no CUDA kernels (no CUDA compiler was found at build time)");
#endif
  check_threads(threads, "threads");
  if (cuda_device < 0) value_error("cuda_device: expected >= 0, got " + std::to_string(cuda_device));
#ifndef XFER_WITH_CUDA
  (void)cuda_device;
#endif
  std::vector<py::array> keep;
  std::vector<ImageView> views = collect_images(images, keep, index);
  const auto n = static_cast<py::ssize_t>(views.size());
  py::array_t<float> result = nchw_out(out, {n, channels, p.out_h, p.out_w});
  float* dst = result.mutable_data();
  if (overlaps(views, dst, static_cast<std::size_t>(result.nbytes())))
    value_error("out: the output buffer overlaps the input images");
  const int nthreads = threads_of(threads);
  {
    py::gil_scoped_release release;
    if (device == "cpu") {
      cpu::preprocess(views, p, dst, nthreads);
    } else {
#ifdef XFER_WITH_CUDA
      cuda::preprocess(views, p, dst, false, cuda_device);
#endif
    }
  }
  return result;
}

#ifdef XFER_WITH_CUDA
void preprocess_to_device(py::handle images, std::uintptr_t out_ptr, std::int64_t out_bytes,
                          std::pair<std::int64_t, std::int64_t> size, int channels, std::vector<float> mean,
                          std::vector<float> stdv, const std::string& interp) {
  const Params p = make_params(size, channels, mean, stdv, interp);
  if (out_ptr == 0) value_error("out_ptr: expected a CUDA device pointer, got 0");
  std::vector<py::array> keep;
  std::vector<ImageView> views = collect_images(images, keep);
  const std::int64_t needed = static_cast<std::int64_t>(views.size()) * channels * p.out_h * p.out_w *
                              static_cast<std::int64_t>(sizeof(float));
  if (out_bytes < needed)
    value_error("out_bytes: the device buffer holds " + std::to_string(out_bytes) + " bytes, " +
                std::to_string(views.size()) + " images need " + std::to_string(needed));
  const int device = cuda::pointer_device(reinterpret_cast<const void*>(out_ptr));
  if (device < 0)
    value_error("out_ptr: expected CUDA device memory, got a pointer CUDA does not know as device memory "
                "(host memory, freed, or from another process)");
  py::gil_scoped_release release;
  cuda::preprocess(views, p, reinterpret_cast<float*>(out_ptr), true, device);
}
#endif

constexpr std::int64_t kMaxFrontSide = 4096;
constexpr std::int64_t kMaxFrontChannels = 4096;
constexpr std::int64_t kMaxFrontKernel = 64;

std::pair<std::int64_t, std::int64_t> pair_of(const py::handle& h, const std::string& what) {
  auto v = py::cast<std::vector<std::int64_t>>(h);
  if (v.size() != 2) value_error(what + ": expected 2 values, got " + std::to_string(v.size()));
  return {v[0], v[1]};
}

py::array float_array(const py::handle& h, int ndim, const std::string& what) {
  if (!py::isinstance<py::array>(h))
    type_error(what + ": expected a float32 numpy array, got " + py::str(py::type::handle_of(h).attr("__name__")).cast<std::string>());
  py::array a = py::reinterpret_borrow<py::array>(h);
  if (!a.dtype().is(py::dtype::of<float>())) type_error(what + ": expected dtype float32, got " + dtype_str(a));
  if (a.ndim() != ndim)
    value_error(what + ": expected a " + std::to_string(ndim) + "-D array, got shape " + shape_str(a));
  if (!is_c_contiguous(a)) value_error(what + ": expected a C-contiguous array, got strides " + strides_str(a));
  return a;
}

// Builds a Front from (channels, height, width) and a list of layers: ("conv", weight (co, ci, kh, kw), bias (co,),
// (top, left, bottom, right) pads, relu) or ("maxpool", (kh, kw), (sh, sw)); every size is checked against the
// one before it, so the loops never index past a buffer.
Front make_front(std::int64_t c, std::int64_t h, std::int64_t w, const py::list& layers) {
  if (c < 1 || c > kMaxFrontChannels || h < 1 || h > kMaxFrontSide || w < 1 || w > kMaxFrontSide)
    value_error("input: expected 1 <= channels <= 4096 and 1 <= height, width <= 4096, got (" + std::to_string(c) + ", " +
                std::to_string(h) + ", " + std::to_string(w) + ")");
  if (layers.size() == 0) value_error("layers: expected at least one layer, got none");
  Front f;
  f.c = c;
  f.h = h;
  f.w = w;
  std::int64_t cc = c, hh = h, ww = w;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const std::string what = "layers[" + std::to_string(i) + "]";
    if (!py::isinstance<py::tuple>(layers[i]) || py::len(layers[i]) == 0 || !py::isinstance<py::str>(layers[i][py::int_(0)]))
      type_error(what + ": expected a tuple ('conv', weight, bias, pads, relu) or ('maxpool', (kh, kw), (sh, sw)), got " +
                 py::str(layers[i]).cast<std::string>().substr(0, 80));
    py::tuple t = py::reinterpret_borrow<py::tuple>(layers[i]);
    const std::string kind = py::cast<std::string>(t[0]);
    FrontLayer l;
    try {
      if (kind == "conv") {
        if (t.size() != 5) value_error(what + ": expected ('conv', weight, bias, pads, relu), got " + std::to_string(t.size()) + " items");
        py::array wa = float_array(t[1], 4, what + " weight");
        py::array ba = float_array(t[2], 1, what + " bias");
        auto pads = py::cast<std::vector<std::int64_t>>(t[3]);
        ConvLayer& L = l.conv;
        L.co = wa.shape(0);
        L.ci = wa.shape(1);
        L.kh = wa.shape(2);
        L.kw = wa.shape(3);
        if (L.ci != cc)
          value_error(what + " weight: expected " + std::to_string(cc) + " input channels, got shape " + shape_str(wa));
        if (L.co < 1 || L.co > kMaxFrontChannels || L.kh < 1 || L.kw < 1 || L.kh > kMaxFrontKernel || L.kw > kMaxFrontKernel)
          value_error(what + " weight: expected 1 to 4096 output channels and 1 to 64 taps a side, got shape " + shape_str(wa));
        if (ba.shape(0) != L.co)
          value_error(what + " bias: expected " + std::to_string(L.co) + " values, got shape " + shape_str(ba));
        if (pads.size() != 4)
          value_error(what + " pads: expected (top, left, bottom, right), got " + std::to_string(pads.size()) + " values");
        for (auto p : pads)
          if (p < 0 || p > kMaxFrontKernel) value_error(what + " pads: expected 0 to 64, got " + std::to_string(p));
        L.pad_top = pads[0];
        L.pad_left = pads[1];
        L.pad_bottom = pads[2];
        L.pad_right = pads[3];
        L.relu = py::cast<bool>(t[4]);
        L.in_h = hh;
        L.in_w = ww;
        if (hh + L.pad_top + L.pad_bottom < L.kh || ww + L.pad_left + L.pad_right < L.kw)
          value_error(what + ": a " + std::to_string(L.kh) + "x" + std::to_string(L.kw) + " kernel does not fit a padded " +
                      std::to_string(hh + L.pad_top + L.pad_bottom) + "x" + std::to_string(ww + L.pad_left + L.pad_right) + " input");
        prepare_conv(L, static_cast<const float*>(wa.data()), static_cast<const float*>(ba.data()));
        cc = L.co;
        hh = L.out_h;
        ww = L.out_w;
      } else if (kind == "maxpool") {
        if (t.size() != 3) value_error(what + ": expected ('maxpool', (kh, kw), (sh, sw)), got " + std::to_string(t.size()) + " items");
        auto k = pair_of(t[1], what + " kernel");
        auto s = pair_of(t[2], what + " strides");
        if (k.first < 1 || k.second < 1 || k.first > kMaxFrontKernel || k.second > kMaxFrontKernel || s.first < 1 || s.second < 1 ||
            s.first > kMaxFrontKernel || s.second > kMaxFrontKernel)
          value_error(what + ": expected kernel and strides of 1 to 64, got kernel (" + std::to_string(k.first) + ", " +
                      std::to_string(k.second) + ") strides (" + std::to_string(s.first) + ", " + std::to_string(s.second) + ")");
        if (k.first > hh || k.second > ww)
          value_error(what + ": a " + std::to_string(k.first) + "x" + std::to_string(k.second) + " window does not fit a " +
                      std::to_string(hh) + "x" + std::to_string(ww) + " input");
        PoolLayer& P = l.pool;
        l.is_conv = false;
        P.c = cc;
        P.kh = k.first;
        P.kw = k.second;
        P.sh = s.first;
        P.sw = s.second;
        P.in_h = hh;
        P.in_w = ww;
        P.out_h = (hh - P.kh) / P.sh + 1;
        P.out_w = (ww - P.kw) / P.sw + 1;
        hh = P.out_h;
        ww = P.out_w;
      } else {
        value_error(what + ": expected 'conv' or 'maxpool', got '" + kind + "'");
      }
    } catch (const py::cast_error&) {  // pads, sizes or relu of the wrong type
      type_error(what + ": expected ('conv', weight, bias, (top, left, bottom, right), relu) with integer pads and a "
                 "bool, or ('maxpool', (kh, kw), (sh, sw)) with integers, got " + py::str(t).cast<std::string>().substr(0, 80));
    }
    f.layers.push_back(std::move(l));
  }
  f.out_features = cc * hh * ww;
  return f;
}

// (n, out_features) float32: a new array, or `out` checked for that shape.
py::array_t<float> features_out(const Front& f, py::ssize_t n, const py::object& out) {
  if (out.is_none()) return py::array_t<float>(std::vector<py::ssize_t>{n, static_cast<py::ssize_t>(f.out_features)});
  py::array o = float_array(out, 2, "out");
  if (o.shape(0) != n || o.shape(1) != f.out_features)
    value_error("out: expected shape (" + std::to_string(n) + ", " + std::to_string(f.out_features) + "), got " + shape_str(o));
  if (!o.writeable()) value_error("out: expected a writeable array, got a read-only one");
  return py::reinterpret_borrow<py::array_t<float>>(o);
}

py::array_t<float> run_front_images(const Front& f, py::handle images, std::vector<float> mean, std::vector<float> stdv,
                                    const std::string& interp, py::object index, py::object out, int threads) {
  check_threads(threads, "threads");
  if (f.c != 1 && f.c != 3)
    value_error("images: this front takes " + std::to_string(f.c) + " channels; images preprocess to 1 (gray) or 3 (RGB)");
  const Params p = make_params({f.h, f.w}, static_cast<int>(f.c), mean, stdv, interp);
  std::vector<py::array> keep;
  std::vector<ImageView> views = collect_images(images, keep, index);
  py::array_t<float> result = features_out(f, static_cast<py::ssize_t>(views.size()), out);
  float* dst = result.mutable_data();
  if (overlaps(views, dst, static_cast<std::size_t>(result.nbytes())))
    value_error("out: the output buffer overlaps the input images");
  {
    py::gil_scoped_release release;  // `keep` and `result` hold their arrays until the call returns
    cpu::front_images(f, views, p, dst, threads_of(threads));
  }
  return result;
}

// A file of back-to-back (H, W, C) uint8 images from `offset`, and the picked ones, checked.
struct FileImages {
  std::int64_t h, w, c;
  std::vector<std::int64_t> picked;
};

FileImages file_images(int fd, std::int64_t offset, const std::vector<std::int64_t>& shape, const py::object& index) {
  if (fd < 0) value_error("fd: expected an open file descriptor, got " + std::to_string(fd));
  if (offset < 0) value_error("offset: expected >= 0, got " + std::to_string(offset));
  if (shape.size() != 4 || std::any_of(shape.begin(), shape.end(), [](std::int64_t d) { return d < 1; }))
    value_error("shape: expected (N, H, W, C) of positive sizes, got " + std::to_string(shape.size()) + " values");
  const std::int64_t h = shape[1], w = shape[2], c = shape[3];
  if (c != 1 && c != 3 && c != 4) value_error("shape: expected 1, 3 or 4 channels, got " + std::to_string(c));
  if (h > kMaxSide || w > kMaxSide) value_error("shape: image sides above 65536 are not supported");
  return {h, w, c, positions(index, shape[0])};
}

py::array_t<float> run_front_file(const Front& f, int fd, std::int64_t offset, std::vector<std::int64_t> shape,
                                  py::object index, std::vector<float> mean, std::vector<float> stdv,
                                  const std::string& interp, py::object out, int threads) {
  check_threads(threads, "threads");
  const FileImages im = file_images(fd, offset, shape, index);
  if (f.c != 1 && f.c != 3)
    value_error("images: this front takes " + std::to_string(f.c) + " channels; images preprocess to 1 (gray) or 3 (RGB)");
  const Params p = make_params({f.h, f.w}, static_cast<int>(f.c), mean, stdv, interp);
  py::array_t<float> result = features_out(f, static_cast<py::ssize_t>(im.picked.size()), out);
  float* dst = result.mutable_data();
  {
    py::gil_scoped_release release;
    cpu::front_file(f, fd, offset, im.h, im.w, im.c, im.picked, p, dst, threads_of(threads));
  }
  return result;
}

py::array_t<float> preprocess_file(int fd, std::int64_t offset, std::vector<std::int64_t> shape, py::object index,
                                   std::pair<std::int64_t, std::int64_t> size, int channels, std::vector<float> mean,
                                   std::vector<float> stdv, const std::string& interp, py::object out, int threads) {
  check_threads(threads, "threads");
  const FileImages im = file_images(fd, offset, shape, index);
  const Params p = make_params(size, channels, mean, stdv, interp);
  const auto n = static_cast<py::ssize_t>(im.picked.size());
  py::array_t<float> result = nchw_out(out, {n, channels, p.out_h, p.out_w});
  float* dst = result.mutable_data();
  {
    py::gil_scoped_release release;
    cpu::preprocess_file(fd, offset, im.h, im.w, im.c, im.picked, p, dst, threads_of(threads));
  }
  return result;
}

py::array_t<float> run_front(const Front& f, py::handle x, py::object out, int threads) {
  check_threads(threads, "threads");
  py::array a = float_array(x, 4, "x");
  if (a.shape(0) < 1 || a.shape(1) != f.c || a.shape(2) != f.h || a.shape(3) != f.w)
    value_error("x: expected shape (N >= 1, " + std::to_string(f.c) + ", " + std::to_string(f.h) + ", " + std::to_string(f.w) +
                "), got " + shape_str(a));
  const py::ssize_t n = a.shape(0);
  py::array_t<float> result = features_out(f, n, out);
  const auto* src = static_cast<const float*>(a.data());
  float* dst = result.mutable_data();
  const auto* s0 = reinterpret_cast<const std::uint8_t*>(src);
  const auto* d0 = reinterpret_cast<const std::uint8_t*>(dst);
  if (s0 < d0 + result.nbytes() && d0 < s0 + a.nbytes()) value_error("out: the output buffer overlaps x");
  {
    py::gil_scoped_release release;  // `a` and `result` hold their arrays until the call returns
    cpu::front(f, src, n, dst, threads_of(threads));
  }
  return result;
}

}  // namespace
}  // namespace xfer

PYBIND11_MODULE(_C, m) {
  m.doc() = "xfer's compiled kernels: fused image preprocessing (resize, colour, normalise) on CPU and CUDA";
  m.def("preprocess", &xfer::preprocess, py::arg("images"), py::arg("size"), py::arg("channels") = 1,
        py::arg("mean") = std::vector<float>{0.0f}, py::arg("std") = std::vector<float>{1.0f},
        py::arg("interp") = "area", py::arg("out") = py::none(), py::arg("device") = "cpu", py::arg("threads") = 0,
        py::arg("cuda_device") = 0, py::arg("index") = py::none(),
        "uint8 HWC images (a 4-D batch or a list) -> float32 NCHW, resized, colour-converted and normalised; "
        "index (int64) picks images of a 4-D batch by position without copying them.");
  m.def("gray_weights", []() { return std::vector<float>{xfer::kGrayR, xfer::kGrayG, xfer::kGrayB}; },
        "The BT.601 (R, G, B) weights the kernels convert colour to gray with.");
  m.def("cuda_available", []() {
#ifdef XFER_WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "True when this build has the CUDA kernels.");
  m.def("cuda_device_count", []() {
#ifdef XFER_WITH_CUDA
    return xfer::cuda::device_count();
#else
    return 0;
#endif
  }, "Number of CUDA devices the CUDA kernels can use (0 without a CUDA build or a GPU).");
#ifdef XFER_WITH_CUDA
  m.def("preprocess_to_device", &xfer::preprocess_to_device, py::arg("images"), py::arg("out_ptr"), py::arg("out_bytes"),
        py::arg("size"),
        py::arg("channels") = 1, py::arg("mean") = std::vector<float>{0.0f}, py::arg("std") = std::vector<float>{1.0f},
        py::arg("interp") = "area",
        "Like preprocess, writing into a CUDA device buffer of out_bytes bytes the caller owns (ONNX Runtime IO "
        "binding); the pointer must be device memory, and the call runs on the device that owns it.");
#endif
  m.def("read_floor", [](py::handle images, int threads, py::object index) {
    xfer::check_threads(threads, "threads");
    std::vector<py::array> keep;
    std::vector<xfer::ImageView> views = xfer::collect_images(images, keep, index);
    const int n = threads > 0 ? threads : (xfer::g_threads > 0 ? xfer::g_threads : xfer::cpu::default_threads());
    py::gil_scoped_release release;
    return xfer::cpu::read_all(views, n);
  }, py::arg("images"), py::arg("threads") = 0, py::arg("index") = py::none(),
     "Read every byte of the images once (the same images, index and threads as preprocess): the memory floor.");
  m.def("preprocess_file", &xfer::preprocess_file, py::arg("fd"), py::arg("offset"), py::arg("shape"), py::arg("index"),
        py::arg("size"), py::arg("channels") = 1, py::arg("mean") = std::vector<float>{0.0f},
        py::arg("std") = std::vector<float>{1.0f}, py::arg("interp") = "area", py::arg("out") = py::none(),
        py::arg("threads") = 0,
        "preprocess (CPU) for a file of back-to-back uint8 (H, W, C) images at `offset` (shape (N, H, W, C)), each "
        "picked image read with pread into a per-thread buffer: for a split too big to keep mapped.");
  m.def("read_floor_file", [](int fd, std::int64_t offset, std::vector<std::int64_t> shape, py::object index,
                              int threads) {
    xfer::check_threads(threads, "threads");
    const xfer::FileImages im = xfer::file_images(fd, offset, shape, index);
    py::gil_scoped_release release;
    xfer::cpu::read_file(fd, offset, im.h * im.w * im.c, im.picked, xfer::threads_of(threads));
  }, py::arg("fd"), py::arg("offset"), py::arg("shape"), py::arg("index"), py::arg("threads") = 0,
     "Read the picked images' bytes by pread and nothing else (the same file, index and threads as preprocess_file).");
  m.def("_check_worker_failure", [](std::int64_t items, int threads, std::int64_t fail_at) {
    // The kernel's thread pool with a body that throws at item `fail_at`: proves a worker's exception
    // reaches Python (as MemoryError for bad_alloc) with every thread joined.
    std::atomic<std::int64_t> done{0};
    {
      py::gil_scoped_release release;
      xfer::cpu::parallel_for<int>(items, threads, [&](std::int64_t item, int&) {
        if (item == fail_at) throw std::bad_alloc();
        done.fetch_add(1);
      });
    }
    return done.load();
  }, py::arg("items"), py::arg("threads"), py::arg("fail_at"));
  m.def("kernel_targets", &xfer::cpu::targets, py::arg("supported_only") = true,
        "Targets the CPU kernel's loops were built for, widest first (only those this CPU runs, by default).");
  m.def("kernel_target", &xfer::cpu::target, "The target the CPU kernel dispatches to now.");
  m.def("set_kernel_target", &xfer::cpu::set_target, py::arg("name"),
        "Pin the CPU kernel to a target of kernel_targets() (ValueError for one this CPU cannot run).");
  m.def("set_num_threads", [](int n) {
    xfer::check_threads(n, "set_num_threads");
    xfer::g_threads = n;
  }, py::arg("n"), "Threads the CPU kernel uses by default (0 = the CPUs this process may run on).");
  py::class_<xfer::Front>(m, "Front",
      "A chain of Conv(+Relu) and MaxPool layers run per image with its intermediates in cache: "
      "Front(channels, height, width, layers), layers as ('conv', weight, bias, (top, left, bottom, right), relu) "
      "or ('maxpool', (kh, kw), (sh, sw)); calling it maps float32 (N, C, H, W) to (N, out_features).")
      .def(py::init(&xfer::make_front), py::arg("channels"), py::arg("height"), py::arg("width"), py::arg("layers"))
      .def_property_readonly("out_features", [](const xfer::Front& f) { return f.out_features; })
      .def("__call__", &xfer::run_front, py::arg("x"), py::arg("out") = py::none(), py::arg("threads") = 0,
           "float32 (N, C, H, W) -> float32 (N, out_features), NCHW order, with the kernel's dispatch target.")
      .def("from_images", &xfer::run_front_images, py::arg("images"), py::arg("mean"), py::arg("std"),
           py::arg("interp") = "area", py::arg("index") = py::none(), py::arg("out") = py::none(), py::arg("threads") = 0,
           "uint8 images (as preprocess takes them) -> float32 (N, out_features): preprocess to (channels, height, "
           "width) and the front fused per image, the next image prefetched meanwhile; equal to front(preprocess(...)).")
      .def("from_file", &xfer::run_front_file, py::arg("fd"), py::arg("offset"), py::arg("shape"), py::arg("index"),
           py::arg("mean"), py::arg("std"), py::arg("interp") = "area", py::arg("out") = py::none(),
           py::arg("threads") = 0,
           "from_images for a file of back-to-back uint8 (H, W, C) images at `offset` (shape (N, H, W, C)), each "
           "picked image read with pread into a per-thread buffer: for a split too big to keep mapped.");
  m.def("clock_mhz", [](int trials, std::int64_t steps) {
    if (trials < 1 || steps < 1)
      throw py::value_error("clock_mhz: expected trials >= 1 and steps >= 1, got " + std::to_string(trials) + " and " +
                            std::to_string(steps));
    py::gil_scoped_release release;
    return xfer::cpu::measure_clock_mhz(trials, steps);
  }, py::arg("trials") = 5, py::arg("steps") = 250000,
     "The core clock in MHz, measured by chains of dependent adds (one per cycle); 0.0 where not measurable.");
  m.def("get_num_threads", []() { return xfer::g_threads > 0 ? xfer::g_threads : xfer::cpu::default_threads(); },
        "Threads the CPU kernel uses by default: set_num_threads' value, or the CPUs this process may use "
        "(its affinity mask, capped by a cgroup CPU quota).");
}
