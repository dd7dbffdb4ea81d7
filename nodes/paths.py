"""Model folders ComfyUI does not know by itself, registered once when the pack loads."""

from __future__ import annotations

import logging
import os
import shutil

import folder_paths

from ..avatar_core import model_files

INSIGHTFACE = "insightface"               # models/insightface/models/<name>/*.onnx (InsightFace's own layout)
CONDITIONING = "avatar_conditioning"      # saved text conditioning (.safetensors)
EMOTION = "avatar_emotion"                # Audio Emotion Module weights (.safetensors, avatar_core.loading)
FACE_DETECTION = "face_detection"         # the official detface.pt (TorchScript, ckpts/det_align/ of the official weights)


def register_folders() -> None:
    for name in (INSIGHTFACE, CONDITIONING, EMOTION, FACE_DETECTION):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name), is_default=False)
        if name in (CONDITIONING, EMOTION):
            folder_paths.folder_names_and_paths[name][1].update({".safetensors"})
    folder_paths.folder_names_and_paths[FACE_DETECTION][1].update({".pt"})


def insightface_root() -> str:
    return folder_paths.get_folder_paths(INSIGHTFACE)[0]


def insightface_models() -> list[str]:
    """Installed InsightFace packs: sub-folders of <insightface>/models that hold .onnx files (none: empty; a
    list offers only what is installed)."""
    names = []
    for root in folder_paths.get_folder_paths(INSIGHTFACE):
        models = os.path.join(root, "models")
        if os.path.isdir(models):
            names += [d for d in sorted(os.listdir(models)) if os.path.isdir(os.path.join(models, d))
                      and any(f.endswith(".onnx") for f in os.listdir(os.path.join(models, d)))]
    return sorted(set(names))


def missing_file_error(folder: str, name: str, what: str) -> FileNotFoundError:
    where = folder_paths.get_folder_paths(folder.split("/")[0])
    return FileNotFoundError(f"{what} '{name}' not found in models/{folder} ({', '.join(where)}).\n"
                             f"{model_files.describe(name, folder)}\nThen press R in ComfyUI to refresh the lists.")


EXAMPLE_INPUTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_inputs")


def install_example_inputs() -> list[str]:
    """Copy the example workflows' images and speech into ComfyUI's input folder, so that the templates open
    with their inputs present. Never overwrites: a file of the same name already there is kept."""
    target = folder_paths.get_input_directory()
    copied = []
    for name in sorted(os.listdir(EXAMPLE_INPUTS)) if os.path.isdir(EXAMPLE_INPUTS) else []:
        src, dst = os.path.join(EXAMPLE_INPUTS, name), os.path.join(target, name)
        if name.endswith(".md") or os.path.exists(dst):
            continue
        try:
            os.makedirs(target, exist_ok=True)
            shutil.copyfile(src, dst)
            copied.append(name)
        except OSError as e:  # a read-only input folder must not stop the pack from loading
            logging.warning("HunyuanVideo-Avatar: could not copy example input %s to %s: %s", name, target, e)
    if copied:
        logging.info("HunyuanVideo-Avatar: example inputs copied to %s: %s", target, ", ".join(copied))
    return copied


def conditioning_folder() -> str:
    return folder_paths.get_folder_paths(CONDITIONING)[0]


def emotion_files() -> list[str]:
    """AEM weight files; empty when the folder is not registered yet (schema built before on_load)."""
    if EMOTION not in folder_paths.folder_names_and_paths:
        return []
    return folder_paths.get_filename_list(EMOTION)


def face_detection_files() -> list[str]:
    """TorchScript face detectors (detface.pt) in models/face_detection; registered here too because the
    loader's schema can be built before on_load."""
    if FACE_DETECTION not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(FACE_DETECTION, os.path.join(folder_paths.models_dir, FACE_DETECTION))
        folder_paths.folder_names_and_paths[FACE_DETECTION][1].update({".pt"})
    return folder_paths.get_filename_list(FACE_DETECTION)
