"""Per-node measurements inside ComfyUI's own executor: seconds, GPU memory, host memory, progress, sub-stages.

    probe = NodeProbe()                  # wraps execution.get_output_data: every node that runs (not cached) is timed
    probe.time_calls(comfy.sd.VAE, "encode", "vae encode")      # optional sub-stage timers inside nodes
    runner = PromptRunner(progress_hook=probe.progress)
    probe.begin("cold"); runner.run(prompt); rows = probe.end()

Per node: wall seconds between CUDA synchronisations; torch's peak allocated / reserved bytes (reset at the
node's start); the device's peak used bytes (NVML or cudaMemGetInfo, polled every 20 ms: it also sees memory
that is not torch's, e.g. comfy-aimdo's, and other processes'); the process's peak resident set (VmHWM after
/proc/self/clear_refs, else polled); the progress updates the node reported (the sampler reports one per model
call), with their times; and the sub-stages timed inside it. The resident set includes the pages of memory-mapped
model files (RssFile, or RssShmem for files in /dev/shm): the rows also give RssAnon, the process's own memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

GIB = 2**30


def _cuda():
    import torch
    return torch if torch.cuda.is_available() else None


def sync() -> None:
    torch = _cuda()
    if torch is not None:
        torch.cuda.synchronize()


class RssPeak:
    """The process's peak resident set size over an interval (Linux: VmHWM, reset through clear_refs)."""

    def __init__(self):
        self.resettable = self._reset()
        self._poll_peak = 0
        self._stop = threading.Event()
        self._thread = None

    @staticmethod
    def _reset() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def start(self) -> None:
        if self.resettable and self._reset():
            return
        self._poll_peak, self._stop = self._status("VmRSS"), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self._poll_peak = max(self._poll_peak, self._status("VmRSS"))

    def stop(self) -> int:
        if self._thread is None:
            return self._status("VmHWM")
        self._stop.set()
        self._thread.join()
        self._thread = None
        return max(self._poll_peak, self._status("VmRSS"))


class DevicePeak:
    """Peak bytes in use on GPU 0 (all allocators, all processes), polled every 20 ms."""

    def __init__(self):
        self.read = self._reader()
        self.peak, self._stop, self._thread = 0, threading.Event(), None

    @staticmethod
    def _reader() -> Callable[[], int] | None:
        try:
            import pynvml
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            return lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        except Exception:  # no NVML (or no GPU): cudaMemGetInfo, or nothing
            torch = _cuda()
            if torch is None:
                return None
            return lambda: (lambda free, total: total - free)(*torch.cuda.mem_get_info())

    def start(self) -> None:
        if self.read is None:
            return
        self.peak, self._stop = self.read(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.read())

    def stop(self) -> int | None:
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join()
        self._thread = None
        return max(self.peak, self.read())


class NodeProbe:
    """Times every node ComfyUI executes (not the ones it takes from its cache), with memory and progress."""

    def __init__(self, on_row: Callable[[dict], None] | None = None):
        import execution
        self.on_row = on_row  # called with each node's row as soon as the node ends (a killed run keeps its rows)
        self.rows: list[dict] = []
        self.current: dict | None = None
        self.run = None
        self.rss, self.device = RssPeak(), DevicePeak()
        original = execution.get_output_data

        async def timed(prompt_id, unique_id, obj, input_data_all, *args, **kwargs):
            self._node_start(unique_id, obj)
            try:
                return await original(prompt_id, unique_id, obj, input_data_all, *args, **kwargs)
            finally:
                self._node_end()
        execution.get_output_data = timed  # execute() looks it up in the module: every node goes through here

    def begin(self, run: str) -> None:
        self.run, self.rows = run, []

    def end(self) -> list[dict]:
        rows, self.rows, self.run = self.rows, [], None
        return rows

    def _node_start(self, node_id: str, obj) -> None:
        torch = _cuda()
        sync()
        if torch is not None:
            torch.cuda.reset_peak_memory_stats()
        cls = obj if isinstance(obj, type) else type(obj)
        self.current = {"run": self.run, "node": str(node_id), "class": getattr(cls, "__name__", str(cls)),
                        "progress": [], "substages": [], "_t0": time.perf_counter()}
        self.rss.start()
        self.device.start()

    def _node_end(self) -> None:
        torch = _cuda()
        sync()
        row, self.current = self.current, None
        if row is None:
            return
        row["s"] = round(time.perf_counter() - row.pop("_t0"), 3)
        row["rss_peak_gib"] = round(self.rss.stop() / GIB, 2)
        row["rss_end_gib"] = round(RssPeak._status("VmRSS") / GIB, 2)
        for part in ("RssAnon", "RssFile", "RssShmem"):  # mmap'd model files count in RSS (file / tmpfs pages)
            row[f"{part.lower()}_end_gib"] = round(RssPeak._status(part) / GIB, 2)
        used = self.device.stop()
        if torch is not None:
            row.update(peak_alloc_gib=round(torch.cuda.max_memory_allocated() / GIB, 2),
                       peak_reserved_gib=round(torch.cuda.max_memory_reserved() / GIB, 2),
                       end_alloc_gib=round(torch.cuda.memory_allocated() / GIB, 2))
        if used is not None:
            row["device_used_peak_gib"] = round(used / GIB, 2)
        self.rows.append(row)
        if self.on_row is not None:
            self.on_row(row)

    def progress(self, node_id, value, total) -> None:
        """ComfyUI's progress-bar hook: one entry per update, seconds since the node started."""
        if self.current is not None:
            self.current["progress"].append([round(time.perf_counter() - self.current["_t0"], 3), value, total])

    def time_calls(self, owner, name: str, label: str) -> None:
        """Record each call of owner.name made inside a node as a sub-stage (CUDA-synchronised seconds).
        Calls nested in a call with the same label are not counted twice."""
        original = getattr(owner, name)
        depth = {"n": 0}

        def timed(*args, **kwargs):
            if self.current is None or depth["n"]:
                return original(*args, **kwargs)
            depth["n"] += 1
            sync()
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                sync()
                depth["n"] -= 1
                if self.current is not None:  # [label, start (s after the node's start), seconds]
                    self.current["substages"].append([label, round(t - self.current["_t0"], 3),
                                                      round(time.perf_counter() - t, 3)])
        setattr(owner, name, timed)


def call_times(progress: list[list], start: float = 0.0) -> list[float]:
    """Seconds of each progress step (the sampler: one model call each) from the node's progress entries,
    the first counted from `start` (seconds after the node's start, e.g. when sampling began); repeated
    values (a bar re-sent with a preview) are merged."""
    times, last_t, last_v = [], start, None
    for t, value, _total in progress:
        if value == last_v:
            continue
        times.append(round(t - last_t, 3))
        last_t, last_v = t, value
    return times
