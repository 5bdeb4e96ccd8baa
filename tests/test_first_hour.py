"""The first hour of a new user: run names used twice, output piped into `head`, GGUF export before
llama.cpp is installed, the PyTorch build install.sh picks, and the scripts the README names."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunesmith.cli.main import main
from tunesmith.engine import jobs, registry
from tunesmith.engine.errors import ExportError, RunError
from tunesmith.engine.registry import RunInfo

REPO = Path(__file__).resolve().parent.parent


def _finished_run(home: Path, run_id: str, name: str, created: float) -> RunInfo:
    info = RunInfo(id=run_id, name=name, status="completed", model="tunesmith/demo", datasets=["identity"],
                   method="qlora", run_dir=home / "runs" / run_id, created_at=created)
    info.run_dir.mkdir(parents=True)
    registry.insert(info)
    registry.update(run_id, status="completed")
    return info


# ---- a name several runs share ----------------------------------------------------------------------


def test_a_shared_run_name_means_the_newest_run_and_says_so(fresh_home, capsys):
    now = time.time()
    _finished_run(fresh_home, "20261129-100000-aaaa", "demo-identity", now - 60)
    _finished_run(fresh_home, "20261129-100100-bbbb", "demo-identity", now)
    _finished_run(fresh_home, "20261129-100200-cccc", "other", now - 30)

    run = jobs.find_run("demo-identity")
    assert run.id == "20261129-100100-bbbb"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 runs are named 'demo-identity'" in err and "20261129-100100-bbbb" in err

    # The full id still picks the older one, silently; a unique name says nothing either.
    assert jobs.find_run("20261129-100000-aaaa").id == "20261129-100000-aaaa"
    assert jobs.find_run("other").id == "20261129-100200-cccc"
    assert capsys.readouterr().err == ""
    # An id prefix that fits several runs is still refused, naming them.
    with pytest.raises(RunError, match="use the full id"):
        jobs.find_run("20261129-10")
    assert jobs.find_run("20261129-1000").id == "20261129-100000-aaaa"

    # Through the CLI, as the README's commands run it a second time: resume picks the newest too.
    assert main(["resume", "demo-identity"]) == 2  # a completed run cannot resume: but it found the newest
    assert "20261129-100100-bbbb" in capsys.readouterr().err


# ---- output closed early -----------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["runs"], ["data", "inspect", "identity", "--json"]])
def test_output_closed_early_ends_quietly(fresh_home, argv):
    env = dict(os.environ, TUNESMITH_HOME=str(fresh_home))
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith.cli.main", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=str(fresh_home.parent))
    proc.stdout.close()  # the reader (head) has gone before anything was written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err


def test_runs_piped_into_head_prints_its_first_line(fresh_home):
    for i in range(40):
        _finished_run(fresh_home, f"20261129-1{i:05d}-abcd", f"run-{i}", time.time() - i)
    env = dict(os.environ, TUNESMITH_HOME=str(fresh_home), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    p = subprocess.run(f"'{sys.executable}' -m tunesmith.cli.main runs | head -2", shell=True, capture_output=True,
                       text=True, env=env, timeout=120)
    assert len(p.stdout.splitlines()) == 2 and "Traceback" not in p.stderr, p.stderr


# ---- GGUF before llama.cpp is installed ------------------------------------------------------------


@pytest.fixture
def no_llama_cpp(monkeypatch):
    from tunesmith.engine.gguf import export as gguf_export, llamacpp_setup

    monkeypatch.setattr(llamacpp_setup, "llama_cpp_available", lambda: False)
    monkeypatch.setattr(gguf_export, "llama_cpp_available", lambda: False)
    return llamacpp_setup


def test_f16_and_q8_export_without_llama_cpp_marks_the_check_not_run_yet(no_llama_cpp, tmp_path):
    from tunesmith.engine.gguf import export_gguf
    from tunesmith.engine.models import resolve_model_path

    model = Path(resolve_model_path("tunesmith/demo"))
    results = export_gguf(model, tmp_path, ["f16", "q8_0"])  # check=True by default: not refused
    assert [r.quant for r in results] == ["f16", "q8_0"] and all(r.path.stat().st_size > 1e6 for r in results)
    assert all(r.fidelity is None for r in results)
    assert "llama.cpp check: not run yet" in results[0].notes[0] and "tunesmith setup gguf" in results[0].notes[0]

    with pytest.raises(ExportError, match=r"Q4_K_M need llama.cpp support.*tunesmith setup gguf.*Q8_0 export without it"):
        export_gguf(model, tmp_path / "k", ["q4_k_m"])
    assert not (tmp_path / "k").exists() or not any((tmp_path / "k").iterdir())


def test_cli_without_a_terminal_exports_what_it_can_and_names_the_install_command(no_llama_cpp, monkeypatch, capsys):
    from tunesmith.cli import export as cli_export

    monkeypatch.setenv("CI", "true")
    assert cli_export._llama_cpp_on_first_use(["f16", "q4_k_m"]) == (["f16"], ["q4_k_m"])
    err = capsys.readouterr().err
    assert "Q4_K_M need llama.cpp support" in err and "tunesmith setup gguf" in err and "pip install" in err
    assert "Exporting F16 now" in err


def test_a_failed_llama_cpp_build_says_why_and_the_f16_export_goes_on(no_llama_cpp, monkeypatch, capsys):
    """At a terminal the user agrees to the build; it fails (no C++ compiler for cmake); F16 is still exported."""
    from tunesmith.cli import export as cli_export

    failing_build = [sys.executable, "-c", "print('[ 12%] Building CXX object ggml.o'); "
                     "print('CMake Error: No CMAKE_CXX_COMPILER could be found.'); raise SystemExit(1)"]
    monkeypatch.setattr(no_llama_cpp, "install_command", lambda: failing_build)
    monkeypatch.setattr(no_llama_cpp, "missing_prerequisites", lambda: ([], []))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt="": "y")
    assert cli_export._llama_cpp_on_first_use(["f16", "q4_k_m"]) == (["f16"], ["q4_k_m"])
    err = capsys.readouterr().err
    assert "cmake found no working C/C++ compiler" in err and "already written are kept" in err


def test_missing_compilers_are_named_before_any_build_starts(monkeypatch, tmp_path):
    from tunesmith.engine.gguf import llamacpp_setup

    monkeypatch.setattr(llamacpp_setup, "llama_cpp_available", lambda: False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, no c++, no cmake
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a))
    st = llamacpp_setup.status()
    assert not st.installed and len(st.missing) == 2 and "C++ compiler" in st.missing[1]
    assert any("cmake" in n for n in st.notes)  # pip fetches cmake itself: a note, not a blocker
    with pytest.raises(llamacpp_setup.LlamaCppSetupError, match="C compiler .* not installed"):
        llamacpp_setup.install()
    assert started == []


def test_build_progress_is_read_from_cmake_and_ninja_lines():
    from tunesmith.engine.gguf.llamacpp_setup import _build_fraction

    assert _build_fraction("[ 42%] Building CXX object src/llama.cpp.o") == 0.42
    assert _build_fraction("  [17/170] Building C object ggml.c.o") == 0.1
    assert _build_fraction("Collecting llama-cpp-python") is None


def test_setup_gguf_check_reports_and_exits(capsys):
    from tunesmith.engine.gguf import llamacpp_setup

    code = main(["setup", "gguf", "--check"])
    out = capsys.readouterr().out
    assert "llama.cpp support is" in out
    assert code == (0 if llamacpp_setup.llama_cpp_available() or not llamacpp_setup.status().missing else 2)


# ---- install.sh: the PyTorch build for this machine ----------------------------------------------------


def _torch_plan(tmp_path: Path, gpu: bool, index_url: str = "http://127.0.0.1:9/") -> str:
    fake = tmp_path / "bin"
    fake.mkdir(parents=True, exist_ok=True)
    if gpu:
        (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-1)'\n")
        (fake / "nvidia-smi").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:/usr/bin:/bin", TUNESMITH_TORCH_CPU_INDEX=index_url)
    env.pop("TUNESMITH_TORCH", None)
    p = subprocess.run(["bash", str(REPO / "install.sh"), "--torch-plan"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_install_picks_cuda_where_nvidia_smi_finds_a_gpu_and_cpu_elsewhere(tmp_path):
    import http.server
    import threading

    assert "CUDA build" in _torch_plan(tmp_path, gpu=True)
    # No GPU, CPU index unreachable: PyPI's build, with a note that says what that means.
    t0 = time.time()
    out = _torch_plan(tmp_path / "cpu", gpu=False)
    assert time.time() - t0 < 20
    assert "pip install torch==" in out and "--index-url" not in out and "cannot be reached" in out
    # No GPU, CPU index reachable: the CPU build from it.
    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/whl/cpu/torch/" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
        out = _torch_plan(tmp_path / "idx", gpu=False, index_url=url)
    finally:
        server.shutdown()
    assert "CPU build" in out and f"--index-url {url}" in out and "cannot be reached" not in out


# ---- the README's two commands ------------------------------------------------------------------------


def test_readme_names_the_two_commands_and_ci_runs_exactly_those():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "./studio.sh" in readme and "./test.sh" in readme
    assert "./studio.sh --port" in ci and "\n./test.sh\n" in ci
    for script in ("studio.sh", "test.sh", "install.sh"):
        assert os.access(REPO / script, os.X_OK), f"{script} is not executable"
        assert subprocess.run(["bash", "-n", str(REPO / script)]).returncode == 0


def test_a_second_install_with_nothing_changed_returns_at_once(tmp_path):
    """install.sh in an environment whose stamp matches: no pip, about a second."""
    venv = Path(sys.prefix)
    if not (venv / "bin" / "python").exists() or sys.prefix == sys.base_prefix:
        pytest.skip("not running in a virtual environment")
    stamp = venv / ".tunesmith-installed"
    saved = stamp.read_text() if stamp.exists() else None
    h = subprocess.run("cat pyproject.toml install.sh | cksum | cut -d' ' -f1", shell=True,
                       cwd=REPO, capture_output=True, text=True).stdout.strip()
    try:
        stamp.write_text(f"{h} core\n{h} test\n")
        t0 = time.time()
        p = subprocess.run(["bash", str(REPO / "install.sh"), "--test"], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, VIRTUAL_ENV=str(venv)))
        assert p.returncode == 0 and "nothing to install" in p.stdout, p.stdout + p.stderr
        assert time.time() - t0 < 30
    finally:
        if saved is None:
            stamp.unlink(missing_ok=True)
        else:
            stamp.write_text(saved)


def test_export_tab_offers_the_install_button_only_while_llama_cpp_is_missing(no_llama_cpp, monkeypatch):
    from tunesmith.studio import llamacpp_panel

    monkeypatch.setattr(no_llama_cpp, "missing_prerequisites", lambda: ([], []))
    text, button = llamacpp_panel.current_status()
    assert button["visible"] and button["interactive"] and "not run yet" in text["value"]
    assert llamacpp_panel.INSTALL_LABEL == "Install llama.cpp support"  # the name the README uses
    monkeypatch.setattr(no_llama_cpp, "missing_prerequisites", lambda: (["a C++ compiler (g++) is not installed"], []))
    text, button = llamacpp_panel.current_status()
    assert not button["interactive"] and "g++" in text["value"]
    monkeypatch.setattr(no_llama_cpp, "llama_cpp_available", lambda: True)
    text, button = llamacpp_panel.current_status()
    assert not button["visible"] and not text["visible"]


# ---- README: the GPU-size table and the button names ---------------------------------------------------


def test_readme_gpu_table_is_what_the_fit_estimate_prints():
    from tunesmith.engine.fit_table import table

    assert table() in (REPO / "README.md").read_text(), \
        "README's 'How big a GPU' table is stale: paste `python -m tunesmith.engine.fit_table` into it"


def test_readme_quotes_button_and_tab_names_as_the_studio_shows_them():
    """Every **bold** or *italic* UI name in "Run the studio" (not the bullets that define a term: "- **PyTorch**:",
    "- **GGUF K-quants** (...)") is a string the studio puts on screen: a quoted literal in studio/, or a tab's
    name after its number ("4 · Chat")."""
    import re

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Run the studio"):readme.index("## Run the tests")]
    section = re.sub(r"^- \*\*[^*]+\*\*(:| \()", "", section, flags=re.M)
    section = re.sub(r"\s*\n\s*", " ", section)  # a name may wrap onto the next line
    names = set(re.findall(r"(?<!\*)\*\*([^*]+?)\*\*", section))
    names |= set(re.findall(r"(?<![*\w])\*([^*\s][^*]*?)\*(?![*\w])", section))
    ui = "\n".join(p.read_text() for p in (REPO / "studio").rglob("*.py"))
    assert {"Start training", "3 · Train", "Install llama.cpp support"} <= names, names  # the parse found them
    missing = [n for n in names if f'"{n}"' not in ui and not re.search(rf'"\d · {re.escape(n)}"', ui)]
    assert not missing, f"README names UI elements the studio does not show: {missing}"
