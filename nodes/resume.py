"""Resume settings for long renders: where the Avatar Sampler checkpoints its progress, and how often."""

from __future__ import annotations

import os
from dataclasses import dataclass

import folder_paths
from comfy_api.latest import io

from ..avatar_core.errors import InputError
from ..avatar_core.sampling.resume import ResumeConfig
from ..avatar_core.specs.concepts import RESUME_MINUTES
from .types import Resume

FOLDERS = ("output", "temp", "off")
DEFAULT_MINUTES = 10.0
IF_UNWRITABLE = {"stop": "error", "continue without checkpoints": "warn"}  # choice -> ResumeConfig.on_unwritable


@dataclass(frozen=True)
class ResumeSettings:
    folder: str = "output"  # output survives a restart; temp is cleared when ComfyUI starts
    minutes: float = DEFAULT_MINUTES
    if_unwritable: str = "stop"


def resume_config(settings: ResumeSettings | None) -> ResumeConfig | None:
    """The core's ResumeConfig for ComfyUI's folders (None: off). No settings node: output, every 10 minutes."""
    s = settings or ResumeSettings()
    if s.folder not in FOLDERS:
        raise InputError(f"resume folder {s.folder!r} is not one of {list(FOLDERS)}; pick one in Avatar Resume.")
    if s.if_unwritable not in IF_UNWRITABLE:
        raise InputError(f"if_unwritable {s.if_unwritable!r} is not one of {list(IF_UNWRITABLE)}; pick one in "
                         "Avatar Resume.")
    if s.folder == "off":
        return None
    root = folder_paths.get_output_directory() if s.folder == "output" else folder_paths.get_temp_directory()
    return ResumeConfig(os.path.join(root, "avatar_resume"), interval_s=60 * s.minutes,
                        on_unwritable=IF_UNWRITABLE[s.if_unwritable])


class AvatarResume(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarResume", display_name="Avatar Resume (long renders)", category="HunyuanVideo-Avatar",
            description="Long renders checkpoint their progress (ring latents, step, settings) so that queueing the "
                        "same graph again after a crash, restart or cancel continues where it stopped, with the "
                        "same result. Without this node: output folder, every 10 minutes.",
            inputs=[
                io.Combo.Input("folder", options=list(FOLDERS), default="output",
                               tooltip="output/avatar_resume survives a restart; temp is cleared when ComfyUI starts; "
                                       "off writes nothing. The checkpoint is removed when the render completes."),
                io.Float.Input("every_minutes", default=DEFAULT_MINUTES, min=RESUME_MINUTES.ui_min,
                               max=RESUME_MINUTES.ui_max, step=0.5,
                               tooltip="Minutes between checkpoints (each writes the clip's latents once; a 90 s "
                                       "clip at 704 px is ~280 MB). 0: before every step."),
                io.Combo.Input("if_unwritable", options=list(IF_UNWRITABLE), default="stop", optional=True,
                               tooltip="When the folder cannot hold a checkpoint (read-only, full, a file): stop "
                                       "before the first step with the reason, or render without checkpoints (a "
                                       "warning in the log; a crash then loses the progress)."),
            ],
            outputs=[Resume.Output(display_name="resume")],
        )

    @classmethod
    def execute(cls, folder: str, every_minutes: float, if_unwritable: str = "stop") -> io.NodeOutput:
        minutes = RESUME_MINUTES.check("every_minutes", every_minutes, "Set Avatar Resume's every_minutes.")
        settings = ResumeSettings(folder, minutes, if_unwritable)
        resume_config(settings)  # refuse a bad folder here, not after the model has loaded
        return io.NodeOutput(settings)
