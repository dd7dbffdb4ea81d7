"""A training dataset from a folder of videos: clips of 4k+1 frames with their VAE latents, Whisper features,
face mask and prompt, written as the clip caches (train/data.py) that `python -m avatar_core.train` reads.

    report = prepare_dataset(PrepareConfig(videos="talks/", output="dataset/"), encoders)
    print(report.summary())

The encoders are callables (`Encoders`): the "Avatar Training Dataset From Folder" node (nodes/training.py)
gives ComfyUI's VAE and text encoders, the pack's Whisper and face detector; tests give tiny random ones
(train/synthetic.py). Each video is cut into back-to-back clips at the clip rate (official 25 fps); clip i of
`talk.mp4` is `talk_mp4_c0003.safetensors`. Every clip is encoded as the sampler conditions the model: the
frames resized to the official video size of their aspect ratio (clips of different shapes train in separate
buckets), the first frame as the reference (repeated and encoded, as the sampler does) and as the face
detector's image, the caption from `talk.txt` beside the video (else the default), audio rows cut from the
Whisper features of the whole track (so a clip's first frames hear the speech before it, as in a long render).

Resumable: a clip file already there is kept, never encoded or written again; new files appear whole
(output_files.write_exclusive). `dataset.json` holds the settings the clips were made with; a rerun with
other settings is refused (they would mix in one folder). Bad files are skipped and named with the reason
(unreadable, no audio track, silent, too small, too short, no face in a clip's first frame).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..conditioning.audio import encode_audio
from ..conditioning.faces import FaceDetector, character_masks, to_latent
from ..conditioning.image import official_video_size
from ..errors import InputError
from ..output_files import check_folder, write_exclusive
from ..specs.audio import SILENCE_PEAK
from ..specs.concepts import CAPTION, CLIP_FRAMES, MAX_CLIPS, MIN_SIDE, PATH, VIDEO_FPS, VIDEO_SIZE
from ..specs.fields import Flag, Maybe, Rule, check_fields, declared
from .data import ClipSample, clip_bytes
from .video import VIDEO_SUFFIXES, VideoError, VideoInfo, frame_count, frames_at, probe, read_audio, reason

log = logging.getLogger(__name__)
DATASET_FORMAT = "hyavatar-train-dataset"
MOTION_EXP, MOTION_POSE = 30, 25  # official motion bucket ids (the sampler node's defaults)
TextEncoder = Callable[[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class Encoders:
    """What turns pixels, words and sound into the model's conditioning (module docstring)."""

    vae: Callable[[torch.Tensor], torch.Tensor]  # frames [F, H, W, 3] in 0..1 -> latents [16, T, H/8, W/8], scaled
    text: TextEncoder                           # (caption, reference [H, W, 3]) -> states [L, Dt], mask [L], pooled
    audio: Callable[[torch.Tensor, int, float, int], torch.Tensor]  # (wave [C, S], rate, fps, F) -> [F, 10, 5, 384]
    faces: FaceDetector | None = None           # None: whole-frame masks (one speaker filling the frame)
    check_cancel: Callable[[], None] = lambda: None  # raises to stop (ComfyUI's interrupt), between clips


def whisper_audio(encoder: torch.nn.Module) -> Callable[[torch.Tensor, int, float, int], torch.Tensor]:
    """The pack's audio path (16 kHz mono resampling, Whisper windows of any length) as `Encoders.audio`."""
    return lambda wave, rate, fps, frames: encode_audio(encoder, wave, rate, fps, frames)


def _four_k_plus_one(cfg: PrepareConfig) -> str:
    return "" if (cfg.clip_frames - 1) % 4 == 0 else f"{cfg.clip_frames} frames is not 4k+1 (the VAE's 4x time steps)"


@declared(Rule(("clip_frames",), _four_k_plus_one, "Use 33, 65, 129 (4k+1)."),
          videos=PATH, output=Maybe(PATH), clip_frames=CLIP_FRAMES, fps=VIDEO_FPS, image_size=VIDEO_SIZE,
          max_clips=MAX_CLIPS, min_side=MIN_SIDE, caption=CAPTION, progress=Flag())
@dataclass
class PrepareConfig:
    """Every setting of a dataset build, checked when made (specs above)."""

    videos: str                              # folder of videos (its own files, not subfolders)
    output: str | None = None                # dataset folder: clip caches + dataset.json (None: survey only)
    clip_frames: int = 33                    # 4k+1 video frames per clip (33 = 1.3 s at 25 fps)
    fps: float = 25.0                        # clip rate: 25 (official) or 12.5
    image_size: int = 704                    # short side of the video size (official sizes per aspect ratio)
    max_clips: int = 0                       # per video; 0: as many as fit
    min_side: int = 256                      # videos with a shorter side (pixels) are skipped as too small
    caption: str = "A person is talking."    # for videos without a <name>.txt beside them
    progress: bool = True

    def check(self) -> None:
        """The settings again (after a field was changed in place) and the videos folder."""
        check_fields(self)
        if not Path(self.videos).is_dir():
            raise InputError(f"videos {self.videos}: not a folder; give the folder that holds your videos")

    def settings(self) -> dict:
        """What the clips' contents depend on (dataset.json): a rerun must match."""
        keep = ("clip_frames", "fps", "image_size", "caption")
        return {"format": DATASET_FORMAT, "version": 1, **{k: v for k, v in asdict(self).items() if k in keep}}


@dataclass
class VideoPlan:
    path: Path
    info: VideoInfo
    size: tuple[int, int]          # (h, w) the clips are encoded at
    clips: int


@dataclass(frozen=True)
class Skip:
    video: str                     # file name
    why: str
    clip: int | None = None        # None: the whole video


@dataclass
class PrepareReport:
    folder: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)            # already there (a resumed run)
    skipped: list[Skip] = field(default_factory=list)

    def summary(self) -> str:
        """One line per skipped video, or per reason within a video (its clips listed)."""
        lines = [f"{self.folder}: {len(self.written)} clips written, {len(self.kept)} already there"]
        groups: dict[tuple[str, str], list[int | None]] = {}
        for s in self.skipped:
            groups.setdefault((s.video, s.why), []).append(s.clip)
        for (video, why), clips in groups.items():
            which = "" if clips == [None] else " clip" + ("s " if len(clips) > 1 else " ") + _ranges(clips)
            lines.append(f"  skipped {video}{which}: {why}")
        return "\n".join(lines)


def _ranges(clips: list) -> str:
    runs: list[list[int]] = []
    for c in sorted(c for c in clips if c is not None):
        if runs and c == runs[-1][-1] + 1:
            runs[-1].append(c)
        else:
            runs.append([c])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def clip_name(video: Path, index: int) -> str:
    """`talk.mp4` clip 3 -> `talk_mp4_c0003` (the suffix keeps talk.mp4 and talk.mov apart)."""
    stem = re.sub(r'[/\\:*?"<>|\0]', "_", video.stem).strip() or "video"
    return f"{stem}_{video.suffix.lstrip('.').lower()}_c{index:04d}"


def list_videos(folder: str | Path) -> list[Path]:
    found = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not found:
        raise InputError(f"videos {folder}: no video files ({', '.join(VIDEO_SUFFIXES)}) in this folder")
    return found


def plan_video(path: Path, cfg: PrepareConfig) -> VideoPlan:
    """How many clips a video gives, or VideoError saying why it gives none."""
    info = probe(path)
    if not info.audio:
        raise VideoError("has no audio track (the clips need the speech)")
    if min(info.width, info.height) < cfg.min_side:
        raise VideoError(f"too small: {info.width}x{info.height}, the shorter side must be at least {cfg.min_side} px")
    frames = frame_count(info, cfg.fps)
    clips = frames // cfg.clip_frames
    if clips == 0:
        raise VideoError(f"too short: {info.duration_s:.2f} s, a clip needs {cfg.clip_frames / cfg.fps:.2f} s "
                         f"({cfg.clip_frames} frames at {cfg.fps:g} fps)")
    size = official_video_size(info.height, info.width, cfg.image_size)
    return VideoPlan(path, info, size, min(clips, cfg.max_clips) if cfg.max_clips else clips)


def plan_folder(cfg: PrepareConfig) -> tuple[list[VideoPlan], list[Skip]]:
    plans, skipped = [], []
    for path in list_videos(cfg.videos):
        try:
            plans.append(plan_video(path, cfg))
        except VideoError as e:
            skipped.append(Skip(path.name, str(e)))
    return plans, skipped


def check_dataset_folder(cfg: PrepareConfig) -> Path:
    """The output folder: writable, and made with these settings if it holds a dataset.json already."""
    if cfg.output is None:
        raise InputError("output: no dataset folder given; give the folder the clips are written to")
    out = check_folder(cfg.output, f"dataset folder {cfg.output}")
    manifest = out / "dataset.json"
    if manifest.is_file():
        before = json.loads(manifest.read_text())
        changed = {k: (before.get(k), v) for k, v in cfg.settings().items() if before.get(k) != v}
        if changed:
            what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise InputError(f"dataset folder {out} was made with other settings ({what}); clips of both would mix. "
                             "Use the same settings to resume it, or give a new folder.")
    return out


def prepare_dataset(cfg: PrepareConfig, encoders: Encoders,
                    on_progress: Callable[[int, int], None] | None = None) -> PrepareReport:
    """Encode every clip of every usable video into `cfg.output` (module docstring); returns what happened."""
    cfg.check()
    out = check_dataset_folder(cfg)
    plans, skipped = plan_folder(cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_exclusive(out / "dataset.json", json.dumps(cfg.settings(), indent=1).encode())  # kept if there
    report = PrepareReport(out, skipped=list(skipped))
    total = sum(p.clips for p in plans)
    bar = tqdm(total=total, disable=not cfg.progress, desc="dataset", unit="clip", dynamic_ncols=True)
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        bar.update(1)
        if on_progress is not None:
            on_progress(done, total)
    try:
        for plan in plans:
            before = done
            _prepare_video(plan, cfg, encoders, report, advance)
            for _ in range(plan.clips - (done - before)):  # clips of a video skipped part-way: counted as done
                advance()
    finally:
        bar.close()
    if report.skipped:
        log.warning("dataset: %s", report.summary())
    return report


def _prepare_video(plan: VideoPlan, cfg: PrepareConfig, enc: Encoders, report: PrepareReport,
                   advance: Callable[[], None]) -> None:
    out = report.folder
    paths = [out / f"{clip_name(plan.path, i)}.safetensors" for i in range(plan.clips)]
    if all(p.exists() for p in paths):  # resumed: nothing of this video to decode
        report.kept += paths
        for _ in paths:
            advance()
        return
    name, n = plan.path.name, cfg.clip_frames
    try:
        wave, rate = read_audio(plan.path, plan.info.start_s)
    except VideoError as e:
        report.skipped.append(Skip(name, str(e)))
        return
    if float(wave.abs().max()) < SILENCE_PEAK:
        report.skipped.append(Skip(name, "its audio track is silent"))
        return
    features = enc.audio(wave, rate, cfg.fps, plan.clips * n)                 # [F, 10, 5, 384]
    caption = _caption(plan.path, cfg.caption)
    frames = _safe(frames_at(plan.path, plan.info, cfg.fps, plan.size), name, report)
    for i, path in enumerate(paths):
        chunk = list(islice(frames, n))
        if len(chunk) < n:
            if not report.skipped or report.skipped[-1].video != name:  # (not already named as damaged)
                report.skipped += [Skip(name, "the video ends before this clip does", j) for j in range(i, len(paths))]
            break
        advance()
        if path.exists():
            report.kept.append(path)
            continue
        enc.check_cancel()
        span = wave[:, int(i * n / cfg.fps * rate): int((i + 1) * n / cfg.fps * rate)]
        if span.numel() == 0 or float(span.abs().max()) < SILENCE_PEAK:
            report.skipped.append(Skip(name, "silent (no speech in this clip)", i))
            continue
        clip = encode_clip(chunk, features[i * n:(i + 1) * n], caption, enc, cfg.fps)
        if isinstance(clip, str):
            report.skipped.append(Skip(name, clip, i))
            continue
        if write_exclusive(path, clip_bytes(clip, path.name)) is not None:
            report.written.append(path)
        else:
            report.kept.append(path)  # appeared meanwhile (another run): theirs is kept


def _safe(frames: Iterator[np.ndarray], name: str, report: PrepareReport) -> Iterator[np.ndarray]:
    """The frames until the file breaks mid-stream (a damaged file keeps the clips before the damage)."""
    import av
    try:
        yield from frames
    except (av.FFmpegError, VideoError) as e:
        report.skipped.append(Skip(name, f"decoding failed part-way ({reason(e)}); the clips before it are kept"))


def _caption(video: Path, default: str) -> str:
    side = video.with_suffix(".txt")
    text = side.read_text(encoding="utf-8").strip() if side.is_file() else ""
    return text or default


@torch.no_grad()
def encode_clip(frames: list[np.ndarray], audio: torch.Tensor, caption: str, enc: Encoders,
                fps: float) -> ClipSample | str:
    """One clip's cache, or the reason it cannot be one (no face in its first frame)."""
    pixels = torch.from_numpy(np.stack(frames)).float() / 255                   # [F, h, w, 3]
    F_, h, w, _ = pixels.shape
    if enc.faces is not None:
        masks = character_masks(frames[0], 1, detector=enc.faces)
        if masks.sources[0] != "face":
            return "no face in its first frame"
        pixel = masks.pixel                                                       # [1, h, w]
    else:
        pixel = torch.ones(1, h, w)
    latents = _latents(enc.vae(pixels), F_, h, w)                                 # [16, T, h/8, w/8]
    ref = _latents(enc.vae(pixels[:1].expand(F_, -1, -1, -1)), F_, h, w)         # the sampler's reference
    states, mask, pooled = enc.text(caption, pixels[0])
    return ClipSample(
        latents=latents, ref_latents=ref, audio=audio.float().contiguous(),
        face_mask=to_latent(pixel, tuple(latents.shape[-2:]))[:, None],          # [1, 1, h/8, w/8]
        text_states=states.float().cpu(), text_mask=mask.cpu(), text_pooled=pooled.float().cpu(),
        motion_exp=torch.full((4,), float(MOTION_EXP)), motion_pose=torch.full((4,), float(MOTION_POSE)),
        fps=torch.tensor(float(fps)), caption=caption)


def _latents(latents: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
    latents = latents[0] if latents.dim() == 5 else latents
    want = (16, (frames - 1) // 4 + 1, h // 8, w // 8)
    if tuple(latents.shape) != want:
        raise ValueError(f"the VAE gave latents {tuple(latents.shape)} for {frames} frames of {w}x{h}; expected "
                         f"{want}: give the HunyuanVideo VAE")
    return latents.float().cpu()


def main(argv: list[str] | None = None) -> PrepareReport | None:
    """python -m avatar_core.train.prepare FOLDER: what a folder of videos gives (clips per video, files
    skipped and why), without encoding. --output DIR --random-encoders writes a dataset of random conditioning
    with the real shapes (to try the trainer or a benchmark); real datasets need the VAE and text encoders,
    which live in ComfyUI: the "Avatar Training Dataset From Folder" node (README: LoRA and training)."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m avatar_core.train.prepare", description=main.__doc__)
    p.add_argument("videos", help="folder of videos (with optional <video>.txt captions beside them)")
    p.add_argument("--output", help="dataset folder to write (needs --random-encoders here)")
    p.add_argument("--random-encoders", choices=["tiny"], help="random encoders for the tiny model (tests)")
    for name in ("clip_frames", "image_size", "max_clips", "min_side"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=PrepareConfig.__dataclass_fields__[name].default)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--caption", default=PrepareConfig.caption)
    args = p.parse_args(argv)
    cfg = PrepareConfig(args.videos, args.output, args.clip_frames, args.fps, args.image_size, args.max_clips,
                        args.min_side, args.caption)
    if args.output is None:
        cfg.check()
        plans, skipped = plan_folder(cfg)
        for plan in plans:
            print(f"{plan.path.name}: {plan.info.width}x{plan.info.height} {plan.info.duration_s:.1f} s -> "
                  f"{plan.clips} clips at {plan.size[1]}x{plan.size[0]}")
        for skip in skipped:
            print(f"{skip.video}: skipped, {skip.why}")
        print(f"{sum(p.clips for p in plans)} clips from {len(plans)} videos; {len(skipped)} skipped")
        return None
    if args.random_encoders is None:
        p.error("encoding needs the HunyuanVideo VAE and text encoders, which ComfyUI loads: use the 'Avatar "
                "Training Dataset From Folder' node (README: LoRA and training), or --random-encoders tiny")
    from ..config import AvatarConfig
    from .synthetic import tiny_encoders
    report = prepare_dataset(cfg, tiny_encoders(AvatarConfig.tiny()))
    print(report.summary())
    return report


if __name__ == "__main__":
    main()
