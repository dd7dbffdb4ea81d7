"""python -m avatar_core.train --data CLIPS --output RUN --checkpoint MODEL [options]: every TrainConfig field
is an option (`--lora-rank 16`, `--no-train-lora --train-aem`, `--resume latest`)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import typing

from ..errors import InputError
from .trainer import TrainConfig, train

HELP = {
    "data": "folder of clip caches (*.safetensors written by avatar_core.train.data.write_clip)",
    "output": "run folder: lora.safetensors, aem.safetensors, checkpoints/, samples/",
    "checkpoint": "base Avatar transformer (official .pt, fp8 .pt + _map.pt, or our .safetensors)",
    "random_model": "tiny | 13b: random weights instead of a checkpoint (tests, benchmarks)",
    "lora_blocks": "all | double | single | double:0-9,single:20-39",
    "lora_layers": "regex on the linear's name inside a block, e.g. '.*attn.*|linear1'",
    "shift": "timestep shift of the logit-normal draw (musubi-tuner's HunyuanVideo default 7.0)",
    "audio_dropout": "probability of zero audio (the sampler's unconditional audio)",
    "resume": "'latest' or a checkpoint folder",
    "batch_size": "clips per micro-step, drawn from one aspect-ratio bucket (clips of the same size)",
    "lr_warmup": "steps of linear warmup from lr/N to lr",
    "lr_schedule": "constant | cosine (after the warmup, down to zero at the last step)",
    "fp8_base": "store the frozen block linears in fp8 e4m3 (13B: ~13 GB instead of ~26 GB)",
    "block_swap": "blocks whose weights stay in CPU memory, streamed to the GPU in forward and backward "
                  "(13B: 60 blocks; needs gradient checkpointing)",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m avatar_core.train", description=__doc__)
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        kind = hints[f.name]
        spec = TrainConfig.__specs__[f.name].describe()  # the same spec that checks the value
        text = " ".join(t for t in (HELP.get(f.name, ""), f"({spec})" if spec else "") if t) or None
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
            continue
        conv = int if kind is int else float if kind is float else str
        p.add_argument(flag, type=conv, default=default, required=required, help=text)
    return p


# Block swap and the fp8 base churn many differently sized buffers: with PyTorch's default allocator a 24 GB card
# ran out of memory holding 5.9 GiB reserved but free (13B, H100 capped at 23 GiB, bench/train_13b.py --preset
# 24gb, 2026-12-07); with expandable segments the same run peaked at 21.6 GiB reserved. A user's setting wins.
ALLOCATOR = ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault(*ALLOCATOR)  # read by PyTorch at its first CUDA allocation, which comes later
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = parser()
    args = p.parse_args(argv)
    try:
        result = train(TrainConfig(**vars(args)))
    except InputError as e:  # a bad setting or clip: the message (no traceback), exit status 2 as argparse does
        p.error(str(e))
    print(f"trained {result.step} steps; last loss {result.losses[-1]:.4f}")
    for label, path in (("LoRA", result.lora), ("AEM", result.aem)):
        if path is not None:
            print(f"{label}: {path}")


if __name__ == "__main__":
    main()
