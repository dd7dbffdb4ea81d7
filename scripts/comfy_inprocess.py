"""ComfyUI inside this process, started the way its main.py starts it, and its own executor without the server.

    state = start_comfy(comfyui, base, dynamic=True, cpu=False, extra_args=["--reserve-vram", "56"])
    failed = load_nodes()                       # ComfyUI's built-in extra nodes + custom_nodes (this pack)
    runner = PromptRunner()                     # ComfyUI's PromptExecutor with main.py's default cache
    outcome = runner.run(api_prompt)            # validate + execute, as a queued prompt is

Used by scripts/comfy_gpu_check.py (the nodes called directly) and bench/workflow_gpu.py (whole workflows).
What main.py does before the first prompt, in its order: parse ComfyUI's arguments, init comfy-aimdo before
torch touches CUDA, register the devices and swap in ModelPatcherDynamic (DynamicVRAM, on NVIDIA by default),
load the extra nodes and custom nodes, set cuDNN benchmarking from --fast. The HTTP server is not started: a
stub stands in for the few calls the executor makes to it (messages to a browser that is not there).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PACK_DIR_NAME = "ComfyUI-HunyuanVideo-Avatar"


def prepare_base(base: Path, pack: Path | None = None) -> None:
    """A ComfyUI base folder; with `pack`, its custom_nodes holds the pack (a link) as an install would."""
    for sub in ("custom_nodes", "models", "input", "output", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIR_NAME
    if pack is not None and not link.exists():
        link.symlink_to(pack.resolve(), target_is_directory=True)


def start_comfy(comfyui: Path, base: Path, dynamic: bool, cpu: bool = False,
                extra_args: Sequence[str] = ()) -> dict:
    """ComfyUI's startup up to the first node, in main.py's order. Returns what was enabled."""
    sys.path.insert(0, str(comfyui))
    argv, sys.argv = sys.argv, ([sys.argv[0], "--base-directory", str(base)] + ([] if dynamic else ["--disable-dynamic-vram"])
                                + (["--cpu"] if cpu else []) + list(extra_args))
    import comfy.options
    comfy.options.enable_args_parsing()
    from comfy.cli_args import args, enables_dynamic_vram
    sys.argv = argv
    state = {"dynamic_vram": False, "aimdo": None}
    try:
        import comfy_aimdo.control
    except ImportError:
        comfy_aimdo = None
    if comfy_aimdo is not None and enables_dynamic_vram():  # before torch initialises CUDA, as main.py does
        headroom = None if args.reserve_vram is None else int(args.reserve_vram * 1024 ** 3)
        for kwargs in ({"simple_vram_headroom": headroom, "nvml_pressure": not args.disable_nvml_pressure},
                       {"simple_vram_headroom": headroom}, {}):
            try:
                comfy_aimdo.control.init(**kwargs)
                break
            except TypeError:
                continue
    import comfy.memory_management
    import comfy.model_management as mm
    import comfy.model_patcher
    if comfy_aimdo is not None and enables_dynamic_vram() and mm.is_nvidia():
        devices = list(mm.get_all_torch_devices())
        try:
            ok = comfy_aimdo.control.init_devices((d.index, int(args.vram_headroom * 1024 ** 3)) for d in devices)
        except TypeError:
            ok = comfy_aimdo.control.init_devices(d.index for d in devices)
        if ok:
            comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
            comfy.memory_management.aimdo_enabled = True
            state["dynamic_vram"] = True
    if comfy_aimdo is not None:
        from importlib.metadata import PackageNotFoundError, version
        try:
            state["aimdo"] = version("comfy-aimdo")
        except PackageNotFoundError:
            state["aimdo"] = "unknown"
    return state


def load_nodes(custom_nodes: bool = True) -> list[str]:
    """ComfyUI's built-in extra nodes (comfy_extras) and, with `custom_nodes`, the packs in custom_nodes/; the
    API nodes are skipped (a headless render never uses them). Returns the extra-node files that failed to
    import (ComfyUI logs and skips them; a workflow that needs one then fails validation by name)."""
    import comfy.model_management as mm
    import server

    import nodes
    if getattr(server.PromptServer, "instance", None) is None:  # node modules that register things with the server
        server.PromptServer.instance = StubServer()
    failed = asyncio.run(nodes.init_extra_nodes(init_custom_nodes=custom_nodes, init_api_nodes=False))
    mm.set_cudnn_benchmark()  # main.py: cuDNN autotuning only with --fast autotune
    return list(failed or [])


class StubServer:
    """What the executor and progress handlers call on ComfyUI's PromptServer, with no browser attached."""

    client_id = None
    last_node_id = None
    last_prompt_id = None
    sockets_metadata: dict = {}

    class node_replace_manager:  # noqa: N801 (ComfyUI's attribute name): node replacements need a browser
        @staticmethod
        def register(*args, **kwargs) -> None:
            pass

    def send_sync(self, event, data, sid=None) -> None:
        pass

    def send_progress_text(self, text, node_id, sid=None) -> None:
        pass


@dataclass
class Outcome:
    ok: bool
    prompt_id: str
    messages: list = field(default_factory=list)   # ComfyUI's status messages (execution_error, cached nodes, ...)
    outputs: dict = field(default_factory=dict)    # each output node's ui dict (the history entry)

    def error(self) -> str | None:
        errors = [m[1] for m in self.messages if m[0] in ("execution_error", "execution_interrupted")]
        if not errors:
            return None
        e = errors[0]
        return f"node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_type', 'interrupted')}: " \
               f"{str(e.get('exception_message', '')).strip()[:2000]}"

    def cached_nodes(self) -> list[str]:
        return next((m[1]["nodes"] for m in self.messages if m[0] == "execution_cached"), [])


class PromptRunner:
    """ComfyUI's PromptExecutor with the cache a default ComfyUI server uses (RAM-pressure cache; --cache-classic,
    --cache-lru N and --cache-none as on ComfyUI's command line). One instance = one server's lifetime: its
    cache and the models ComfyUI keeps loaded carry over from one run to the next, as between queued prompts."""

    def __init__(self, progress_hook: Callable | None = None):
        import comfy.model_management as mm
        import comfy.utils
        import execution
        from comfy.cli_args import args
        from comfy_execution.progress import get_progress_state
        self.server = StubServer()
        ram_gib = mm.total_ram / 1024.0  # MiB -> GiB
        cache_args = {"lru": args.cache_lru, "ram": min(10.0, max(2.0, ram_gib * 0.10)),
                      "ram_inactive": min(128.0, ram_gib)}
        if args.cache_ram:
            cache_args["ram"] = args.cache_ram[0]
            cache_args["ram_inactive"] = args.cache_ram[1] if len(args.cache_ram) > 1 else cache_args["ram_inactive"]
        kind = (execution.CacheType.CLASSIC if args.cache_classic else execution.CacheType.LRU if args.cache_lru > 0
                else execution.CacheType.NONE if args.cache_none else execution.CacheType.RAM_PRESSURE)
        self.cache_type = kind.name
        self.executor = execution.PromptExecutor(self.server, cache_type=kind, cache_args=cache_args)

        def hook(value, total, preview, prompt_id=None, node_id=None):  # what main.py's progress hook does, minus the UI
            from comfy_execution.utils import get_executing_context
            ctx = get_executing_context()
            node_id = node_id or (ctx.node_id if ctx is not None else None)
            mm.throw_exception_if_processing_interrupted()
            if node_id is not None:
                get_progress_state().update_progress(node_id, value, total, preview)
            if progress_hook is not None:
                progress_hook(node_id, value, total)
        comfy.utils.set_progress_bar_global_hook(hook)

    def run(self, prompt: dict) -> Outcome:
        import execution
        prompt_id = str(uuid.uuid4())
        valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
        if not valid:
            detail = {k: v.get("errors") for k, v in (node_errors or {}).items()}
            return Outcome(False, prompt_id, [("execution_error", {"node_id": None, "node_type": "validation",
                                                                   "exception_type": str(error.get("type")),
                                                                   "exception_message": f"{error.get('message')}: "
                                                                                        f"{error.get('details')} {detail}"})])
        self.server.last_prompt_id = prompt_id
        self.executor.execute(prompt, prompt_id, {}, outputs)
        return Outcome(self.executor.success, prompt_id, list(self.executor.status_messages),
                       dict(getattr(self.executor, "history_result", {}).get("outputs", {})))
