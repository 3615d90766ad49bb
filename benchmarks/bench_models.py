"""Benchmark of the models package: inference engines and occlusion heatmaps.

Prints (and with ``--out`` writes, Markdown or JSON by suffix):

1. images/s of each architecture per engine and precision at batch 1 and 16, with the largest
   probability difference from eager fp32 (random weights, head scaled so probabilities spread);
2. occlusion heatmap seconds per image (N=32, S=8 on 224: 625 occluded copies) for the batched
   channels-last reference and the exact fast (incremental) method, the speed-up, the largest map
   difference, and the theoretical FLOP ratio full / incremental (and the fraction of it reached);
3. with ``--registry``, the effect of bf16 on the probabilities and the AUC of a trained version
   on real images of the manifest's test split.

Run here (CPU, 2 threads)::

    .venv/bin/python benchmarks/bench_models.py --threads 2 --out docs/bench-cpu.md

and once on a GPU machine::

    python benchmarks/bench_models.py --device cuda --out bench-cuda.json

Timings are the minimum over repeats (the machines are shared; the minimum is the least
disturbed run).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.architectures import ARCHITECTURES, build_model, head_prefix  # noqa: E402
from models.card import ModelCard  # noqa: E402
from models.inference import Predictor, use_ieee_fp32_on_cuda  # noqa: E402
from models.occlusion import (  # noqa: E402
    OcclusionGrid,
    base_probability,
    fill_value,
    occlusion_flops,
    reference_scores,
)


@dataclass
class Throughput:
    arch: str
    engine: str
    precision: str
    batch: int
    images_per_s: float
    max_prob_diff: float
    setup_s: float


@dataclass
class Heatmap:
    arch: str
    precision: str
    reference_s: float
    fast_s: float
    speedup: float
    max_map_diff: float
    flop_ratio_theoretical: float
    flop_ratio_implemented: float
    fraction_of_theoretical: float


@dataclass
class Accuracy:
    version: str
    architecture: str
    images: int
    max_prob_diff_bf16: float
    mean_prob_diff_bf16: float
    auc_fp32: float | None
    auc_bf16: float | None


@dataclass
class Report:
    machine: dict[str, Any]
    throughput: list[Throughput] = field(default_factory=list)
    heatmaps: list[Heatmap] = field(default_factory=list)
    accuracy: list[Accuracy] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _best_time(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Minimum wall time of ``fn`` over ``repeats`` runs (after the caller's warm-up)."""
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def spread_model(arch: str, seed: int = 0) -> nn.Module:
    """Random weights with the head scaled and centred so that probabilities spread over (0, 1):
    random models otherwise output nearly constant (or saturated) probabilities and hide numeric
    differences. SqueezeNet's head loses its final ReLU for this (one 2 x 13 x 13 map: no effect
    on speed)."""
    torch.manual_seed(seed)
    model = build_model(arch)
    if arch.startswith("squeezenet"):
        model.classifier[2] = nn.Identity()  # type: ignore[index]
    torch.manual_seed(seed + 100)
    x = torch.randn(8, 3, 224, 224)
    with torch.inference_mode():
        logits = model(x)
    diff = logits[:, 1] - logits[:, 0]
    scale = 2.0 / max(float(diff.std()), 1e-6)
    head = [p for n, p in model.named_parameters() if n.startswith(head_prefix(arch))]
    with torch.no_grad():
        for param in head:
            param.mul_(scale)
        head[-1][1] -= scale * float(diff.mean())
    return model


def machine_info(device: torch.device, threads: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": threads,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def bench_throughput(
    arch: str,
    engines: list[str],
    precisions: list[str],
    batches: list[int],
    device: torch.device,
    repeats: int,
) -> list[Throughput]:
    model = spread_model(arch)
    card = ModelCard(architecture=arch)
    torch.manual_seed(1)
    x = torch.randn(max(batches), 3, 224, 224)
    reference: np.ndarray | None = None
    rows: list[Throughput] = []
    for engine in engines:
        for precision in precisions:
            if engine == "onnx" and (precision != "fp32" or device.type != "cpu"):
                continue
            start = time.perf_counter()
            try:
                predictor = Predictor(
                    copy.deepcopy(model),
                    card,
                    device=device.type,
                    engine=engine,
                    precision=precision,  # type: ignore[arg-type]
                    batch_size=max(batches),
                )
                for batch in batches:  # warm-up (compiles each shape)
                    predictor.predict_tensor(x[:batch])
            except Exception as exc:  # report and go on: one engine failing is a result too
                print(f"  {arch} {engine} {precision}: failed: {exc}", flush=True)
                continue
            setup = time.perf_counter() - start
            probs = predictor.predict_tensor(x)
            if reference is None and engine == "eager" and precision == "fp32":
                reference = probs
            diff = float(np.abs(probs - reference).max()) if reference is not None else float("nan")
            for batch in batches:
                reps = repeats if batch > 1 else repeats * 3
                seconds = _best_time(
                    lambda b=batch, p=predictor: p.predict_tensor(x[:b]), device, reps
                )
                row = Throughput(arch, engine, precision, batch, batch / seconds, diff, setup)
                rows.append(row)
                print(
                    f"  {arch:<14} {engine:<8} {precision:<5} batch {batch:>2}: "
                    f"{row.images_per_s:8.1f} img/s  (max |dp| {diff:.1e}, setup {setup:.1f} s)",
                    flush=True,
                )
    return rows


def bench_heatmap(
    arch: str,
    precision: str,
    device: torch.device,
    repeats: int,
    batch_size: int,
) -> Heatmap:
    from models.occlusion.incremental import incremental_scores

    model = spread_model(arch).to(device=device, memory_format=torch.channels_last).eval()
    torch.manual_seed(2)
    x = torch.randn(3, 224, 224, device=device)
    grid = OcclusionGrid(224, 32, 8)
    value = fill_value(x, "gray")
    autocast = precision == "bf16"

    def reference() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return reference_scores(model, x, grid, value, batch_size=batch_size)

    def fast() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return incremental_scores(model, x, grid, value, batch_size=batch_size)

    p0 = base_probability(model, x)
    ref_scores = reference()  # warm-up, and the map to compare
    fast_scores = fast()
    ref_s = _best_time(reference, device, repeats)
    fast_s = _best_time(fast, device, repeats)
    max_diff = float((ref_scores - fast_scores).abs().max())
    if precision == "bf16":  # error of the reduced-precision map against the fp32 map
        fp32_ref = reference_scores(model, x, grid, value, batch_size=batch_size)
        max_diff = float((fast_scores - fp32_ref).abs().max())
    flops = occlusion_flops(model, grid)
    speedup = ref_s / fast_s
    row = Heatmap(
        arch,
        precision,
        ref_s,
        fast_s,
        speedup,
        max_diff,
        flops["ratio_theoretical"],
        flops["ratio_implemented"],
        speedup / flops["ratio_theoretical"],
    )
    print(
        f"  {arch:<14} {precision:<5} reference {ref_s:7.2f} s/image, fast {fast_s:7.2f} s/image, "
        f"speed-up {speedup:4.2f}x (FLOP ratio {row.flop_ratio_theoretical:.2f}, "
        f"{row.fraction_of_theoretical:.0%} of it), max |diff| {max_diff:.1e}; p0 {p0:.3f}",
        flush=True,
    )
    return row


def bench_accuracy(
    registry_root: Path, version: str | None, device: torch.device, n_images: int
) -> Accuracy:
    """bf16 vs fp32 on real test images with a trained version."""
    import csv

    from models.preprocessing import load_image_file

    manifest = ROOT.parent / "shared" / "data" / "cxr" / "manifest.csv"
    with open(manifest, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"][:n_images]
    images = [load_image_file(manifest.parent / r["path"]) for r in rows]
    labels = np.array([1 if r["label"] == "covid" else 0 for r in rows])
    fp32 = Predictor.from_registry(registry_root, version, device=device.type, engine="eager")
    bf16 = Predictor.from_registry(
        registry_root, version, device=device.type, engine="eager", precision="bf16"
    )
    p32, p16 = fp32.predict(images), bf16.predict(images)
    auc32 = auc16 = None
    if 0 < labels.sum() < len(labels):
        from sklearn.metrics import roc_auc_score

        auc32 = float(roc_auc_score(labels, p32))
        auc16 = float(roc_auc_score(labels, p16))
    row = Accuracy(
        str(fp32.version),
        fp32.card.architecture,
        len(images),
        float(np.abs(p32 - p16).max()),
        float(np.abs(p32 - p16).mean()),
        auc32,
        auc16,
    )
    print(f"  {row}", flush=True)
    return row


def to_markdown(report: Report) -> str:
    m = report.machine
    lines = [
        f"Machine: {m.get('gpu') or m.get('cpu')}, device {m['device']}, {m['threads']} threads, "
        f"torch {m['torch']}" + (f", onnxruntime {m['onnxruntime']}" if "onnxruntime" in m else ""),
        "",
    ]
    if report.throughput:
        lines += [
            "| architecture | engine | precision | batch | images/s | max abs Δp vs eager fp32 |"
            " setup s |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for t in report.throughput:
            lines.append(
                f"| {t.arch} | {t.engine} | {t.precision} | {t.batch} | {t.images_per_s:.1f} | "
                f"{t.max_prob_diff:.1e} | {t.setup_s:.1f} |"
            )
        lines.append("")
    if report.heatmaps:
        lines += [
            "| architecture | precision | reference s/image | fast s/image | speed-up |"
            " FLOP ratio (theoretical) | FLOP ratio (implemented) | speed-up / theoretical |"
            " max abs map diff |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for h in report.heatmaps:
            lines.append(
                f"| {h.arch} | {h.precision} | {h.reference_s:.2f} | {h.fast_s:.2f} | "
                f"{h.speedup:.2f}x | {h.flop_ratio_theoretical:.2f} | "
                f"{h.flop_ratio_implemented:.2f} | {h.fraction_of_theoretical:.0%} | "
                f"{h.max_map_diff:.1e} |"
            )
        lines.append("")
    for a in report.accuracy:
        lines.append(
            f"bf16 vs fp32, version {a.version} ({a.architecture}), {a.images} test images: "
            f"max |Δp| {a.max_prob_diff_bf16:.1e}, mean {a.mean_prob_diff_bf16:.1e}, "
            f"AUC fp32 {a.auc_fp32} vs bf16 {a.auc_bf16}"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch/ORT threads (CPU)")
    parser.add_argument("--archs", default=",".join(ARCHITECTURES))
    parser.add_argument(
        "--engines", default=None, help="default: eager,onnx,compile (CPU); eager,compile (CUDA)"
    )
    parser.add_argument("--precisions", default=None, help="default: fp32 (CPU); fp32,bf16 (CUDA)")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--heatmap-archs", default="efficientnet_lite0,squeezenet1_1,resnet18")
    parser.add_argument("--heatmap-repeats", type=int, default=2)
    parser.add_argument("--heatmap-batch", type=int, default=64)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-heatmaps", action="store_true")
    parser.add_argument("--registry", type=Path, default=None, help="trained versions (bf16 AUC)")
    parser.add_argument("--version", default=None)
    parser.add_argument("--accuracy-images", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="write .md or .json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU available", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        use_ieee_fp32_on_cuda()
    engines = args.engines or ("eager,onnx,compile" if device.type == "cpu" else "eager,compile")
    precisions = args.precisions or ("fp32" if device.type == "cpu" else "fp32,bf16")
    report = Report(machine=machine_info(device, args.threads))
    print(f"machine: {report.machine}", flush=True)
    if not args.skip_throughput:
        print("inference throughput:", flush=True)
        for arch in args.archs.split(","):
            report.throughput += bench_throughput(
                arch,
                engines.split(","),
                precisions.split(","),
                [int(b) for b in args.batches.split(",")],
                device,
                args.repeats,
            )
    if not args.skip_heatmaps:
        print("occlusion heatmaps (N=32, S=8, 224x224, fill gray):", flush=True)
        for arch in args.heatmap_archs.split(","):
            for precision in precisions.split(","):
                try:
                    report.heatmaps.append(
                        bench_heatmap(
                            arch, precision, device, args.heatmap_repeats, args.heatmap_batch
                        )
                    )
                except Exception as exc:  # keep the other figures of a one-off GPU run
                    print(f"  {arch} {precision}: heatmap failed: {exc!r}", flush=True)
    if args.registry is not None:
        print("bf16 effect on a trained version:", flush=True)
        report.accuracy.append(
            bench_accuracy(args.registry, args.version, device, args.accuracy_images)
        )
    markdown = to_markdown(report)
    print(markdown)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.suffix == ".json":
            args.out.write_text(json.dumps(asdict(report), indent=2) + "\n")
        else:
            args.out.write_text(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
