"""Deep Compression of SqueezeNet 1.0 on the embedded digits data, beside Table 1 of Iandola et al. (2016).

One process, one seed: (1) train a dense SqueezeNet 1.0 with the pipeline (``kcnn train``'s code),
(2) prune it to Table 1's densities and retrain with ``PruningCallback`` (masks re-applied after
every step), (3) share its weights at 6 bits (k-means, linear initialisation) and fine-tune the
centroids on the run's training split as ``kcnn compress`` does (``pipelines.compress_finetune.RunData``),
(4) write the Deep Compression artefact (relative indices, Huffman) and decode it, (5) export the
dense model to LiteRT int8. Reports test accuracy, bytes and compression factors, and the
structural Table 1 reproduction at the paper's 227x227 ImageNet shape.

    PYTHONPATH=$PWD python benchmarks/bench_compress.py [--epochs 8 --retrain-epochs 4]

Last line: ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import kcnn  # noqa: E402
from kcnn import compress  # noqa: E402
from kcnn.compress.tables import SQUEEZENET_TABLE1_PARAMS, SQUEEZENET_TABLE1_TOTAL, squeezenet_module  # noqa: E402
from pipelines.compress_finetune import DEFAULT_STEPS  # noqa: E402
from result import print_result  # noqa: E402 - the RESULT line with the wall time

MB = 2 ** 20


def config_for(args):
    from pipelines.config import from_dict

    return from_dict({
        "data": {"source": "digits", "image_size": args.image_size, "channels": 1, "batch_size": 32,
                 "augment": "none"},
        # The fully convolutional head without the paper's ReLU on the class scores: on 10 classes a ReLU'd
        # score map that goes dead loses its class for good (a first trial stalled at 79% that way).
        "model": {"name": "squeezenet1_0", "head": "fully_conv", "head_kwargs": {"dropout": 0.2}},
        "optimizer": {"name": "adamw", "learning_rate": 2e-3, "weight_decay": 1e-4, "schedule": "cosine",
                      "warmup_epochs": 1},
        "train": {"epochs": args.epochs, "seed": 0},
    })


def table1_structure() -> dict:
    """Table 1's pruning applied to the 227x227 ImageNet SqueezeNet, and its 6-bit size."""
    pruned = compress.prune(kcnn.build("squeezenet1_0"), "squeezenet_table1")
    model = compress.strip_pruning(pruned)
    codes = compress.quantise(model, 6)
    report = compress.size_report(model, codes, compress.encode_model(model, codes))
    modules = {}
    for row in report["layers"]:
        key = squeezenet_module(row["layer"])
        modules[key] = modules.get(key, 0) + row["params_after"]
    return {"modules": {k: [modules[k], SQUEEZENET_TABLE1_PARAMS[k][1]] for k in SQUEEZENET_TABLE1_PARAMS},
            "total": [report["params_after"], SQUEEZENET_TABLE1_TOTAL[1]],
            "bytes_before_huffman": report["bytes_before_huffman"], "bytes": report["total_bytes"],
            "megabytes": report["total_bytes"] / MB, "paper_megabytes": 0.47,
            "compression": report["compression"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="dense training epochs")
    parser.add_argument("--retrain-epochs", type=int, default=4, help="retraining epochs after pruning")
    parser.add_argument("--finetune-steps", type=int, default=DEFAULT_STEPS,
                        help=f"centroid fine-tuning steps (default {DEFAULT_STEPS}, kcnn compress's)")
    parser.add_argument("--image-size", type=int, default=48, help="digits upsampled to this size (>= 35)")
    parser.add_argument("--work-dir", help="where the runs go (default: a temporary directory)")
    args = parser.parse_args()

    from pipelines.compress_finetune import RunData
    from pipelines.data import DataSpec, make_dataset
    from pipelines.train import train
    from serving.litert import export_run_litert

    work = args.work_dir or tempfile.mkdtemp(prefix="kcnn-bench-compress-")
    started = time.perf_counter()
    structure = table1_structure()
    print(f"Table 1 at 227x227: {structure['total'][0]:,} non-zero parameters (paper {structure['total'][1]:,}), "
          f"{structure['bytes']:,} bytes = {structure['megabytes']:.3f} MB at 6 bits (paper 0.47 MB)", flush=True)

    config = config_for(args)
    run_dir = os.path.join(work, "dense")
    train(config, run_dir, verbose=False)
    dense = keras.saving.load_model(os.path.join(run_dir, "model.keras"), safe_mode=True)
    data = RunData(run_dir)  # the run's own training and test splits, as kcnn compress and kcnn evaluate read them
    spec = DataSpec.from_config(config.data, seed=0).evaluation(cache=False)
    train_ds, _ = make_dataset(spec, spec.train_split, shuffle=True)
    dense_accuracy = data.top1(dense)
    print(f"dense: test accuracy {dense_accuracy:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)

    pruned = compress.prune(dense, "squeezenet_table1")
    one_shot_accuracy = data.top1(pruned)
    pruned.compile(keras.optimizers.AdamW(5e-4, weight_decay=1e-4), "sparse_categorical_crossentropy")
    pruned.fit(train_ds, epochs=args.retrain_epochs, verbose=0, callbacks=[compress.PruningCallback()])
    pruned_accuracy = data.top1(pruned)
    print(f"pruned: one-shot {one_shot_accuracy:.4f}, retrained {pruned_accuracy:.4f}", flush=True)

    model = compress.strip_pruning(pruned)
    codes = compress.quantise(model, 6)
    quantised_accuracy = data.top1(model)
    data.finetune(model, codes, args.finetune_steps)
    finetuned_accuracy = data.top1(model)
    artefact = os.path.join(work, "compressed", "model.kcnn.zip")
    report = compress.write_artefact(model, codes, artefact)
    restored = compress.load_artefact(artefact)
    restored_accuracy = data.top1(restored)
    print(f"pruned + 6-bit: {quantised_accuracy:.4f} before centroid fine-tuning, {finetuned_accuracy:.4f} after "
          f"(decoded artefact {restored_accuracy:.4f}); {report['total_bytes']:,} bytes vs "
          f"{report['dense_bytes']:,} dense ({report['compression']:.1f}x)", flush=True)

    litert = export_run_litert(run_dir, os.path.join(work, "litert"))
    print(f"LiteRT int8 (dense model): {litert.bytes:,} bytes, accuracy {litert.litert_accuracy:.4f} "
          f"(float {litert.float_accuracy:.4f})", flush=True)

    result = {
        "image_size": args.image_size, "epochs": args.epochs, "retrain_epochs": args.retrain_epochs,
        "finetune_steps": args.finetune_steps, "test_examples": litert.examples,
        "dense_accuracy": dense_accuracy, "pruned_one_shot_accuracy": one_shot_accuracy,
        "pruned_retrained_accuracy": pruned_accuracy, "pruned_quantised_accuracy": quantised_accuracy,
        "pruned_quantised_finetuned_accuracy": finetuned_accuracy, "decoded_artefact_accuracy": restored_accuracy,
        "dense_bytes": report["dense_bytes"], "bytes_before_huffman": report["bytes_before_huffman"],
        "compressed_bytes": report["total_bytes"], "artefact_file_bytes": report["file_bytes"],
        "compression": report["compression"], "accuracy_loss_points": 100 * (dense_accuracy - restored_accuracy),
        "litert_int8_bytes": litert.bytes, "litert_int8_accuracy": litert.litert_accuracy,
        "litert_float_accuracy": litert.float_accuracy,
        "table1": structure, "seconds": time.perf_counter() - started,
    }
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
