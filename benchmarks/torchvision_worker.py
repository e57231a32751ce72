"""Export one torchvision classification model with both of PyTorch's ONNX exporters.

Runs in the torchvision environment (torch 2.14.1 + torchvision 0.29.1 + onnxscript), never beside xfer: it
imports nothing of xfer and only files cross. ``benchmarks/torchvision_suite.py`` runs it once per model:

    python torchvision_worker.py --list                       # the model names, one per line
    python torchvision_worker.py MODEL OUT_DIR [--size 224]   # OUT_DIR/MODEL.{dynamo,legacy}.onnx + MODEL.json

Weights are random (seeded) and every BatchNorm gets realistic running statistics and affine parameters, so
the exported graphs compute what a trained network computes rather than a near-constant. The JSON records,
per exporter, the opset, the seconds the export took, whether the batch dimension is dynamic, and the error
if the export failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings


def _realistic(net, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            c = m.running_mean.numel()
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(c, generator=g) * 1.0 + 0.5)
                m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return net.eval()


def _export(net, x, path: str, dynamo: bool) -> dict:
    import onnx
    import torch

    t = time.perf_counter()
    try:
        if dynamo:
            batch = torch.export.Dim("batch")
            try:
                torch.onnx.export(net, (x,), path, input_names=["input"], output_names=["logits"],
                                  dynamic_shapes={"x": {0: batch}}, external_data=True)
                dynamic = True
            except Exception:  # a model whose export specialises the batch: export it static, say so
                torch.onnx.export(net, (x,), path, input_names=["input"], output_names=["logits"], external_data=True)
                dynamic = False
        else:
            torch.onnx.export(net, (x,), path, dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
            dynamic = True
        m = onnx.load(path, load_external_data=False)
        opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
        return {"ok": True, "seconds": time.perf_counter() - t, "opset": opset, "dynamic_batch": dynamic,
                "bytes": sum(os.path.getsize(p) for p in _files(path))}
    except Exception as e:
        return {"ok": False, "seconds": time.perf_counter() - t, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}",
                "trace": traceback.format_exc()[-2000:]}


def _files(path: str) -> list[str]:
    folder, base = os.path.split(path)
    return [os.path.join(folder, f) for f in os.listdir(folder) if f == os.path.basename(path) or f.startswith(base + ".")
            or f == base + ".data"]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", help="a name from torchvision.models.list_models (default: none)")
    p.add_argument("out", nargs="?", help="folder for the ONNX files and the JSON record (default: none)")
    p.add_argument("--size", type=int, default=224, help="square input size of the export (default: 224)")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    p.add_argument("--list", action="store_true", help="print the classification models and exit (default: off)")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    import torch
    import torchvision

    if args.list:
        print("\n".join(torchvision.models.list_models(module=torchvision.models)))
        return 0
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    net = torchvision.models.get_model(args.model, weights=None)
    net = _realistic(net, args.seed)
    # a batch of 2: torch.export specialises a dimension whose example size is 1
    x = torch.randn(2, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    os.makedirs(args.out, exist_ok=True)
    record = {"model": args.model, "params": sum(p.numel() for p in net.parameters()), "size": args.size,
              "torch": torch.__version__, "torchvision": torchvision.__version__, "exports": {}}
    with torch.no_grad():
        record["exports"]["dynamo"] = _export(net, x, os.path.join(args.out, f"{args.model}.dynamo.onnx"), True)
    # with grad on: under no_grad attention takes a fused kernel (aten::_native_multi_head_attention) that the old
    # exporter cannot write
    record["exports"]["legacy"] = _export(net, x, os.path.join(args.out, f"{args.model}.legacy.onnx"), False)
    tmp = os.path.join(args.out, f".{args.model}.json.tmp")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, os.path.join(args.out, f"{args.model}.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
