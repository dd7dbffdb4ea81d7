"""Run one API prompt through a real ComfyUI, headless: start the server on loopback, queue, wait, stop."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from comfy_inprocess import PACK_DIR_NAME  # noqa: E402,F401  (one name for the pack's folder)
from comfy_inprocess import prepare_base as _prepare  # noqa: E402


def prepare_base(base: Path) -> None:
    """A ComfyUI base directory whose custom_nodes holds this repo (as a link)."""
    _prepare(base, REPO)


def write_smoke_assets(base: Path, comfyui: str) -> dict:
    """Tiny random weights and inputs in ``base`` (scripts/smoke_assets.py, run with ComfyUI's Python: TAEHV
    comes from ComfyUI, so this Python need not import it). Returns what it wrote ({"models": ..., "inputs": ...})."""
    proc = subprocess.run([env_python(), str(REPO / "scripts" / "smoke_assets.py"), str(base), comfyui],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"smoke_assets.py failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """ComfyUI on a free loopback port. Its log goes to `log_dir`/comfyui.log (default: the base folder).
    `fast_start` skips what a headless render never uses (the API nodes: about 1/4 of the start-up time)."""

    def __init__(self, comfy_path: str | Path, base: Path, python: str = sys.executable, cpu: bool = True,
                 log_dir: Path | None = None, fast_start: bool = False):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = (log_dir or base) / "comfyui.log"
        args = [python, str(Path(comfy_path) / "main.py"), "--listen", "127.0.0.1", "--port", str(self.port),
                "--base-directory", str(base), "--disable-auto-launch"] + (["--cpu"] if cpu else [])
        args += ["--disable-api-nodes"] if fast_start else []
        self.log = open(self.log_path, "w")
        self._read = 0
        self.proc = subprocess.Popen(args, cwd=str(comfy_path), stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def wait_ready(self, timeout: float = 300) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited early; see {self.log_path}:\n{self.log_tail()}")
            try:
                self.get("/system_stats")
                return
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"ComfyUI did not start in {timeout} s; see {self.log_path}")

    def new_log_lines(self) -> list[str]:
        """Complete lines ComfyUI logged since the last call."""
        self.log.flush()
        with open(self.log_path, "rb") as f:
            f.seek(self._read)
            data = f.read()
        done = data.rfind(b"\n") + 1
        self._read += done
        return [ln for ln in data[:done].decode(errors="replace").replace("\r", "\n").splitlines() if ln.strip()]

    def run(self, prompt: dict, timeout: float = 900, on_log=None) -> dict:
        """Queue an API prompt and return its history entry (raises with ComfyUI's message on failure).
        `on_log(line)` is called with each line ComfyUI logs meanwhile (progress)."""
        req = urllib.request.Request(self.url + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                pid = json.loads(r.read())["prompt_id"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"ComfyUI rejected the prompt: {e.read().decode()[:2000]}") from e
        end = time.time() + timeout
        if on_log:
            self.new_log_lines()  # only what comes after queuing
        while time.time() < end:
            for line in self.new_log_lines() if on_log else ():
                on_log(line)
            hist = self.get(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
                entry = hist[pid]
                if entry["status"].get("status_str") != "success":
                    msgs = [m for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
                    raise RuntimeError(f"prompt failed: {json.dumps(msgs)[:3000]}")
                return entry
            time.sleep(0.25)
        raise TimeoutError(f"prompt did not finish in {timeout} s")

    def log_tail(self, n: int = 4000) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def output_files(entry: dict, base: Path) -> list[Path]:
    files = []
    for out in entry.get("outputs", {}).values():
        for item in out.get("images", []) + out.get("videos", []) + out.get("gifs", []):
            files.append(base / "output" / item.get("subfolder", "") / item["filename"])
    return files


def env_python() -> str:
    return os.environ.get("COMFYUI_PYTHON", sys.executable)
