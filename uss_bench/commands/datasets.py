"""``uss-bench datasets check|prepare|fixture``: verify data on disk, derive artefacts, write tiny fixtures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uss_bench.paths import default_data_root, default_weights_dir


def handle_check(args: argparse.Namespace) -> int:
    from uss_bench.data.check import check_dataset
    from uss_bench.registry import DATASETS, UnknownNameError

    try:
        names = DATASETS.select(",".join(args.names) or "all")
    except UnknownNameError as exc:
        print(f"uss-bench datasets check: error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        report = check_dataset(name, args.data_root, full=args.full, sample=args.sample)
        print(report.line(), flush=True)
        failed += not report.ok
        if args.ucm:  # HSG's over-segmentation maps (methods/hsg.yaml), opt-in
            from uss_bench.methods.hsg.oversegment import ucm_check_line

            line = ucm_check_line(name, args.data_root, args.sample)
            if line:
                print(line, flush=True)
                failed += " MISSING " in line
    return 1 if failed else 0


def smoke_batch_size() -> int:
    """The largest training batch of any method's smoke preset: a fixture this big runs every smoke demo."""
    import yaml

    from uss_bench.paths import cards_dir

    sizes = [1]
    for path in cards_dir("methods").glob("*.yaml"):
        card = yaml.safe_load(path.read_text()) or {}
        train = (((card.get("presets") or {}).get("smoke") or {}).get("train") or {})
        if isinstance(train.get("batch_size"), int):
            sizes.append(train["batch_size"])
    return max(sizes)


def handle_fixture(args: argparse.Namespace) -> int:
    from uss_bench.data.fixtures import write_fixture

    try:
        train_images = args.train_images if args.train_images is not None else smoke_batch_size()
        counts = write_fixture(args.name, args.out, train_images=train_images)
    except KeyError as exc:
        print(f"uss-bench datasets fixture: error: {exc.args[0]}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{split} {n}" for split, n in counts.items())
    print(f"{args.name}: fixture written under {args.out} ({sizes})")
    return 0


def _progress(label: str):
    def report(done: int, total: int) -> None:
        if done == total or done % 500 == 0:
            print(f"  {label}: {done}/{total}", file=sys.stderr, flush=True)

    return report


def handle_prepare(args: argparse.Namespace) -> int:
    from uss_bench.data.base import DatasetError
    from uss_bench.data.layout import RealDataset
    from uss_bench.registry import BACKBONES, DATASETS, UnknownNameError

    try:
        cls = DATASETS.get(args.name)
    except UnknownNameError as exc:
        print(f"uss-bench datasets prepare: error: {exc}", file=sys.stderr)
        return 2
    if not issubclass(cls, RealDataset):
        print(f"uss-bench datasets prepare: {args.name} needs no preparation", file=sys.stderr)
        return 2
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    try:
        if args.what == "five-crop":
            from uss_bench.data.five_crop import five_crop_split

            if args.name.startswith("potsdam"):
                print("note: STEGO/HP/PPAP never five-crop Potsdam (their loader ignores crop_type)", file=sys.stderr)
            for split in splits:
                out = five_crop_split(cls, args.data_root, split, args.ratio, _progress(f"{args.name} {split}"),
                                      workers=args.workers)
                print(f"{args.name}: five-crop of {split} at ratio {args.ratio} -> {out}")
        else:
            from uss_bench.data.knn_precompute import precompute_knn
            from uss_bench.pipeline import RunEnv

            device = RunEnv(device=args.device).torch_device()
            spec = BACKBONES.get(args.backbone)
            if not args.random_init:
                checker = getattr(spec, "weights_problem", None) or spec.missing_weights  # opens the file too
                message = checker(args.weights_dir)
                if message:
                    print(f"uss-bench datasets prepare: {message}", file=sys.stderr)
                    return 2
            backbone = spec.build(args.weights_dir, random_init=args.random_init)
            for split in splits:
                path = precompute_knn(
                    args.name, args.data_root, split, args.backbone, backbone, res=args.res,
                    feature_dropout=args.feature_dropout, seed=args.seed, batch_size=args.batch_size,
                    device=device, progress=_progress(f"{args.name} {split} chunks"),
                )
                print(f"{args.name}: kNN table for {split} ({args.backbone}) -> {path}")
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"uss-bench datasets prepare: error: {exc}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("datasets", help="check datasets on disk, prepare derived files, write fixtures")
    sub = parser.add_subparsers(dest="datasets_command", required=True)

    check = sub.add_parser("check", help="files present, counts, label ranges, image/label sizes; one line each")
    check.add_argument("names", nargs="*", default=[], help="e.g. cocostuff27 potsdam | 'coco*' (default: all)")
    check.add_argument("--data-root", type=Path, default=default_data_root(), help="default $USS_BENCH_DATA or ./data")
    check.add_argument("--full", action="store_true", help="decode every image and label (default: a sample)")
    check.add_argument("--sample", type=int, default=8, help="items decoded per split without --full (default 8)")
    check.add_argument("--ucm", action="store_true", help="also check HSG's OWT-UCM over-segmentation maps")
    check.set_defaults(func=handle_check)

    prepare = sub.add_parser("prepare", help="derived files: STEGO five-crops or kNN tables (resumable)")
    prepare.add_argument("name")
    prepare.add_argument("--what", choices=["five-crop", "knn"], default="five-crop")
    prepare.add_argument("--splits", default="train,val",
                         help="five-crop: base splits (train,val); knn: splits such as train_five_crop_0.5")
    prepare.add_argument("--ratio", type=float, default=0.5, help="five-crop size ratio (STEGO 0.5; HP/PPAP also 0.7)")
    prepare.add_argument("--data-root", type=Path, default=default_data_root())
    prepare.add_argument("--backbone", default="vit-s8", help="knn: backbone (name carries the patch size)")
    prepare.add_argument("--weights-dir", type=Path, default=default_weights_dir())
    prepare.add_argument("--random-init", action="store_true", help="knn: random backbone (smoke tests only)")
    prepare.add_argument("--res", type=int, default=224, help="knn: image size (STEGO hard-codes 224)")
    prepare.add_argument("--feature-dropout", type=float, default=0.1,
                         help="knn: Dropout2d on features, active in STEGO's precompute (0 = off)")
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--batch-size", type=int, default=32)
    prepare.add_argument("--device", default="auto")
    prepare.add_argument("--workers", type=int, default=0, help="five-crop: processes (0 = this process)")
    prepare.set_defaults(func=handle_prepare)

    fixture = sub.add_parser("fixture", help="write a tiny copy of a dataset in its real layout and encoding")
    fixture.add_argument("name")
    fixture.add_argument("--out", type=Path, required=True)
    fixture.add_argument("--train-images", type=int, default=None,
                         help="at least this many training images where the family allows it (COCO-Stuff, "
                              "Cityscapes); default: the largest smoke-preset batch size, so `run --preset smoke` "
                              "works on the fixture")
    fixture.set_defaults(func=handle_fixture)
