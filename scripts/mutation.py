"""Mutation testing of one avatar_core package with mutmut (a developer command, not CI): `scripts/mutation.sh PACKAGE`.

PACKAGE is a folder of avatar_core (`sampling`, `train`, ...) or one file (`sampling/resume.py`). The pack is copied
to a work folder outside the checkout (mutmut writes its `mutants/` tree and caches beside the code it mutates),
the `[tool.mutmut]` section of pyproject.toml gets the package's files and test list there, and mutmut runs with
one worker process. Each package keeps its own work folder, so a second run re-tests only the functions that
changed (or pass --fresh). Prints the mutation score and the surviving mutants; `mutmut show NAME` in the work
folder prints a mutant's diff.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the `toml` package mutmut itself needs there
    import toml as tomllib

REPO = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", "artifacts", ".pytest_cache")

# The tests that exercise each package in-process. mutmut maps every mutated function to the tests that call it,
# so a longer list costs one slower first run (the coverage pass), not a slower mutant. Tests whose work happens
# in spawned worker processes cannot be mapped (mutmut sees only its own process): see README.
TESTS = {
    "sampling": ["test_sampling_parts", "test_sampling_loop", "test_sampling_model", "test_sampling_reference",
                 "test_solvers", "test_perf_paths", "test_stateless", "test_resume", "test_resume_trust",
                 "test_bad_inputs", "test_bad_inputs_classes"],
    "sampling/resume.py": ["test_resume", "test_resume_trust", "test_solvers", "test_sampling_reference"],
    "conditioning": ["test_audio", "test_audio_whisper_real", "test_emotion", "test_faces", "test_faces_detface",
                     "test_image_size", "test_text", "test_text_saved", "test_text_parity", "test_bad_inputs",
                     "test_conditioning_reference", "test_faces_real", "test_reference_encode"],
    "distributed": ["test_distributed_groups", "test_distributed", "test_pool_inputs", "test_pool_options",
                    "test_lora_pool", "test_runner_path"],
    "train": ["test_train", "test_train_recipe", "test_train_prepare", "test_output_files", "test_lora_formats"],
    "lora": ["test_lora", "test_lora_formats", "test_lora_reference", "test_weights", "test_train",
             "test_train_recipe", "test_lora_pool"],
    "specs": ["test_specs_properties", "test_specs_messages", "test_model", "test_bad_inputs",
              "test_bad_inputs_classes", "test_audio", "test_image_size", "test_train", "test_resume_trust",
              "test_solvers"],
    "weight_files.py": ["test_weight_files", "test_weight_files_formats", "test_bad_inputs_classes", "test_lora_formats", "test_audio",
                        "test_emotion", "test_text_saved", "test_faces_detface"],
    "runner.py": ["test_runner_path", "test_runner_choices", "test_offload_plan", "test_fast_format", "test_bad_inputs_classes",
                  "test_specs_properties", "test_perf_paths", "test_stateless", "test_weights", "test_lora_node"],
    "loading.py": ["test_loading", "test_weight_files", "test_weight_files_formats", "test_weights",
                   "test_fast_format", "test_bad_inputs", "test_runner_choices", "test_lora_formats", "test_model"],
    "output_files.py": ["test_output_files", "test_bad_inputs_classes", "test_resume_trust", "test_train"],
    "model": ["test_model", "test_perf_paths", "test_attention_kernels", "test_kernel_choice", "test_weights",
              "test_linear_members", "test_block_swap_cpu", "test_fast_format", "test_lora_formats",
              "test_lora_reference",
              "test_sampling_parts", "test_stateless", "test_loading", "test_lora"],
}


# Imported at start-up by every Python of a mutmut run (PYTHONPATH): a worker process that mutmut's coverage pass
# spawned (the multi-GPU pool, torch.multiprocessing) reports the functions it ran when it exits; tests/conftest.py
# adds them to the tests of that file. Without it, code that only runs in workers would have no tests.
SITECUSTOMIZE = """import atexit, json, os, sys


def _report():
    state = sys.modules.get("mutmut.state")
    if state is not None and state.state()._stats:
        path = os.path.join(os.environ["MUTATION_CHILD_HITS"], f"{os.getpid()}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(sorted(state.state()._stats), f)
        os.replace(path + ".tmp", path)


if os.environ.get("MUTANT_UNDER_TEST") == "stats" and os.environ.get("MUTATION_CHILD_HITS"):
    atexit.register(_report)
"""


def default_work_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("HYAVATAR_MUTATION_DIR", cache / "hyavatar-mutation"))


def target(package: str) -> tuple[list[str], list[str]]:
    """(only_mutate globs, test files) of `sampling`, `sampling/resume.py`, `avatar_core/train`, ..."""
    rel = package.strip("/").removeprefix("avatar_core/")
    path = REPO / "avatar_core" / rel
    if not (path.is_dir() or (path.is_file() and path.suffix == ".py")):
        choices = sorted(p.name for p in (REPO / "avatar_core").iterdir() if p.is_dir() and p.name != "__pycache__")
        raise SystemExit(f"mutation: no package or .py file avatar_core/{rel}; choose one of {', '.join(choices)} "
                         f"or a file such as sampling/resume.py")
    globs = [f"avatar_core/{rel}/*"] if path.is_dir() else [f"avatar_core/{rel}"]
    names = TESTS.get(rel, TESTS.get(rel.split("/")[0]))  # a file's own list, else its package's
    if names is None:  # a package without a list: every test file that names it
        module = rel.split("/")[0].removesuffix(".py")   # runner.py -> tests that import avatar_core.runner
        needle = (f"avatar_core.{module}", f"avatar_core/{module}")
        names = [p.stem for p in sorted((REPO / "tests").glob("test_*.py"))
                 if any(n in p.read_text(encoding="utf-8") for n in needle)]
    tests = [f"tests/{n}.py" for n in names if (REPO / "tests" / f"{n}.py").is_file()]
    return globs, tests


def synced() -> list[str]:
    """The checkout's top-level files and folders (tests read nodes/, scripts/, bench/, the workflows, ...)."""
    return sorted(p.name for p in REPO.iterdir() if not p.name.startswith(".") and p.name not in ("mutants", "out")
                  and not p.name.endswith(".mp4"))


def sync(work: Path) -> None:
    """Copy the checkout into `work`, keeping file times (mutmut re-mutates a file only when it is newer than
    its mutated copy) and deleting what the checkout no longer has."""
    for name in synced():
        src, dst = REPO / name, work / name
        if src.is_file():
            shutil.copy2(src, dst)
            continue
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=SKIP)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # str, int, float: JSON spelling is valid TOML


def write_config(work: Path, globs: list[str], tests: list[str]) -> None:
    """The checkout's pyproject.toml with its [tool.mutmut] section replaced by one that names the package."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    section = dict(tomllib.loads(text).get("tool", {}).get("mutmut", {}))
    also = [n for n in synced() if n not in ("avatar_core", "tests", "pyproject.toml")]  # mutmut copies these two
    section.update(only_mutate=globs, pytest_add_cli_args_test_selection=tests, also_copy=also)
    kept, inside = [], False
    for line in text.splitlines():
        if line.startswith("["):
            inside = line.strip() == "[tool.mutmut]"
        if not inside:
            kept.append(line)
    config = ["[tool.mutmut]"] + [f"{k} = {toml_value(v)}" for k, v in section.items()]
    (work / "pyproject.toml").write_text("\n".join(kept + [""] + config) + "\n", encoding="utf-8")
    # mutmut numbers a function's mutants in order: other patterns renumber them under the cached verdicts (a new
    # test list or timeout keeps them: see keep_kills; mutmut re-tests timeouts itself)
    stamp = work / "mutation-config.txt"
    settings = "\n".join(c for c in config if c.split(" = ")[0] in ("source_paths", "only_mutate", "do_not_mutate",
                                                                     "do_not_mutate_patterns"))
    if stamp.is_file() and stamp.read_text(encoding="utf-8") != settings and (work / "mutants").exists():
        print("mutation: the [tool.mutmut] settings changed since the last run: starting afresh")
        shutil.rmtree(work / "mutants")
    stamp.write_text(settings, encoding="utf-8")


def score(work: Path, globs: list[str], only: set[str] | None = None) -> int:
    """Print the counts per file, the score and the survivors (of `only`, a sample, when given); return the
    number of survivors."""
    killed_like = {1, 3, 36, 24, -24, 152, 255, 37, -11, -9}  # killed, timeout, caught by type check, crashed
    total = killed = 0
    survivors: list[str] = []
    print(f"\n{'file':44s} {'mutants':>8s} {'killed':>7s} {'survived':>9s} {'no test':>8s} {'score':>7s}")
    for meta in sorted((work / "mutants" / "avatar_core").rglob("*.py.meta")):
        rel = meta.relative_to(work / "mutants").as_posix().removesuffix(".meta")
        if not any(Path(rel).match(g) or rel.startswith(g.rstrip("*")) for g in globs):
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        codes = {n: c for n, c in codes.items() if only is None or n in only}
        if not codes:
            continue
        k = sum(c in killed_like for c in codes.values())
        s = [n for n, c in codes.items() if c == 0]
        none = sum(c in (5, 33) for c in codes.values())
        survivors += s + [n for n, c in codes.items() if c in (5, 33)]
        total, killed = total + len(codes), killed + k
        print(f"{rel:44s} {len(codes):8d} {k:7d} {len(s):9d} {none:8d} {100 * k / max(len(codes), 1):6.1f}%")
    print(f"{'total':44s} {total:8d} {killed:7d} {'':9s} {'':8s} {100 * killed / max(total, 1):6.1f}%")
    print("score = (killed + timeouts) / all mutants; mutants no test reaches count as survivors")
    if survivors:
        print(f"\nsurvivors ({len(survivors)}); see one with: cd {work} && mutmut show NAME")
        print("\n".join(f"  {n}" for n in sorted(survivors)))
    return len(survivors)


# Mutant generation alone (no test run), to draw a sample from; mutmut 3's own steps of `mutmut run`.
GENERATE = ("from mutmut.__main__ import create_mutants\n"
            "from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir\n"
            "copy_src_dir(); copy_also_copy_files(); create_mutants(1)\n")


def metas(work: Path, globs: list[str]) -> list[Path]:
    """mutmut's result files of the package's source files."""
    out = []
    for meta in sorted((work / "mutants" / "avatar_core").rglob("*.py.meta")):
        rel = meta.relative_to(work / "mutants").as_posix().removesuffix(".meta")
        if any(Path(rel).match(g) or rel.startswith(g.rstrip("*")) for g in globs):
            out.append(meta)
    return out


def draw_sample(work: Path, globs: list[str], size: int) -> list[str]:
    """`size` mutants of the package drawn at random (seeded: the same sample while the code is the same)."""
    names = [n for meta in metas(work, globs) for n in sorted(json.loads(meta.read_text())["exit_code_by_key"])]
    sample = sorted(random.Random(0).sample(names, min(size, len(names))))
    (work / "mutation-sample.txt").write_text("\n".join(sample), encoding="utf-8")
    print(f"mutation: a sample of {len(sample)} of the package's {len(names)} mutants")
    return sample


def _function(name: str) -> str:
    """The function a mutant belongs to, as mutmut keys its hashes (`xǁClassǁmethod`, `x_function`)."""
    return name.rpartition("__mutmut_")[0].rpartition(".")[2]


# survived, no tests, not run, and timeouts (on a loaded machine a timeout may be the machine, not the mutant)
RETEST = (0, 5, 33, None, 36, 24, -24, 152, 255)


def retest_survivors(work: Path, globs: list[str]) -> tuple[set[str], dict[str, tuple[int, str | None]]]:
    """Forget the verdicts of survivors, untested mutants and timeouts (tests may have been added since: mutmut
    keeps a verdict until the function itself changes). Returns the names to test and the killed ones with their
    function's hash."""
    unchecked, kills = set(), {}
    for meta in metas(work, globs):
        data = json.loads(meta.read_text())
        codes, hashes = data["exit_code_by_key"], data.get("hash_by_function_name", {})
        for name, code in codes.items():
            if code in RETEST:
                codes[name] = None
                unchecked.add(name)
            else:
                kills[name] = (code, hashes.get(_function(name)))
        meta.write_text(json.dumps(data, indent=4))
    return unchecked, kills


def keep_kills(work: Path, globs: list[str], kills: dict[str, tuple[int, str | None]]) -> None:
    """A new test list makes mutmut forget every verdict; a mutant the tests killed before stays killed while its
    function is unchanged (the tests only grow; --fresh re-tests everything)."""
    for meta in metas(work, globs):
        data = json.loads(meta.read_text())
        codes, hashes = data["exit_code_by_key"], data.get("hash_by_function_name", {})
        for name, code in codes.items():
            if code is None and name in kills and kills[name][1] == hashes.get(_function(name)):
                codes[name] = kills[name][0]
        meta.write_text(json.dumps(data, indent=4))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", help="avatar_core folder or file: sampling, train, lora, sampling/resume.py, ...")
    parser.add_argument("--tests", nargs="+", help="test files to use instead of the package's list")
    parser.add_argument("--work", type=Path, help=f"work folder (default {default_work_root()}/PACKAGE)")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results of this package")
    parser.add_argument("--score-only", action="store_true", help="print the last run's score, run nothing")
    parser.add_argument("--max-children", type=int, default=1, help="parallel mutants (default 1)")
    parser.add_argument("--sample", type=int, help="test only N mutants drawn at random (an estimate of the "
                        "score when the whole package takes too long)")
    args = parser.parse_args(argv)
    globs, tests = target(args.package)
    tests = args.tests or tests
    work = args.work or default_work_root() / args.package.strip("/").removeprefix("avatar_core/").replace("/", "_")
    sample_file = work / "mutation-sample.txt"
    if args.score_only:
        only = set(sample_file.read_text().split()) if sample_file.is_file() else None
        return 1 if score(work, globs, only) else 0
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    sync(work)
    write_config(work, globs, tests)
    print(f"mutation: {' '.join(globs)} against {' '.join(tests)} in {work}", flush=True)
    mutmut = Path(sys.executable).parent / "mutmut"
    hooks, hits = work / "hooks", work / "child-hits"
    hooks.mkdir(exist_ok=True)
    hits.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
           "HYAVATAR_SHARED": os.environ.get("HYAVATAR_SHARED", str(REPO.parent / "shared")),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])),
           "MUTATION_CHILD_HITS": str(hits)}
    sample_file.unlink(missing_ok=True)
    # mutants of the current code first: new or changed functions come unchecked
    subprocess.run([sys.executable, "-c", GENERATE], cwd=work, env=env, check=True, capture_output=True)
    sample = draw_sample(work, globs, args.sample) if args.sample else []
    todo, kills = retest_survivors(work, globs)
    names = sorted(todo & set(sample) if sample else todo)
    print(f"mutation: {len(names)} mutants to test ({len(kills)} killed before)", flush=True)
    cmd = [str(mutmut) if mutmut.exists() else "mutmut", "run", "--max-children", str(args.max_children), *names]
    rc = subprocess.run(cmd, cwd=work, env=env).returncode if names else 0
    keep_kills(work, globs, kills)
    if rc != 0:
        print(f"mutation: mutmut stopped with exit code {rc} (a failing clean test run shows above)", file=sys.stderr)
        return rc
    return 1 if score(work, globs, set(sample) or None) else 0


if __name__ == "__main__":
    sys.exit(main())
