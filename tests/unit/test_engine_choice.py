"""--engine and --ray-address: Ray is loaded only when chosen, and a missing Ray, an unreachable
cluster or a bad choice is one line, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys

from helpers import assert_usage_error, run_cli_in_process

from pipeline.config.settings import build_config
from pipeline.config.tomlfile import load_config_file
from pipeline.dev.raycluster import free_port

RPC = "http://127.0.0.1:9"  # never asked: the engine is checked before any endpoint


def test_the_cli_and_a_multiprocessing_run_never_import_ray():
    code = (
        "import sys; import pipeline.cli; from pipeline.run.api import run_backfill; "
        "from pipeline.run.engine import open_engine; "
        "from pipeline.config.settings import build_config; "
        "open_engine(build_config(rpc=['http://127.0.0.1:9'])).close(); "
        "print('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_engine_ray_without_ray_installed_says_to_install_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when it is missing
    out = tmp_path / "out"
    done = run_cli_in_process("backfill", "--engine", "ray", "--rpc", RPC, "--output", str(out))
    line = assert_usage_error(done, out)
    assert "pip install -e '.[ray]'" in line


def test_an_unreachable_ray_address_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    address = f"127.0.0.1:{free_port()}"
    done = run_cli_in_process(
        "backfill", "--engine", "ray", "--ray-address", address, "--rpc", RPC, "--output", str(out)
    )
    line = assert_usage_error(done, out)
    assert f"cannot reach the Ray cluster at {address}" in line and "--ray-address" in line


def test_a_malformed_ray_address_is_refused(tmp_path):
    out = tmp_path / "out"
    for address in ("nonsense", "ray://127.0.0.1:10001"):
        args = ["--engine", "ray", "--ray-address", address, "--rpc", RPC, "--output", str(out)]
        done = run_cli_in_process("backfill", *args)
        assert "--ray-address" in assert_usage_error(done, out)


def test_ray_address_without_engine_ray_and_an_unknown_engine_are_refused(tmp_path):
    out = tmp_path / "out"
    alone = run_cli_in_process(
        "backfill", "--ray-address", "127.0.0.1:6379", "--rpc", RPC, "--output", str(out)
    )
    assert "--engine ray" in assert_usage_error(alone, out)
    unknown = run_cli_in_process(
        "backfill", "--engine", "spark", "--rpc", RPC, "--output", str(out)
    )
    line = assert_usage_error(unknown, out)
    assert "--engine must be one of multiprocessing, ray" in line


def test_the_engine_and_the_ray_address_come_from_the_config_file_too(tmp_path):
    path = tmp_path / "backfill.toml"
    path.write_text('engine = "ray"\nray-address = "10.0.0.1:6379"\n')
    options, _ = load_config_file(path)
    config = build_config(rpc=[RPC], **options)
    assert (config.engine, config.ray_address) == ("ray", "10.0.0.1:6379")
    assert build_config(rpc=[RPC]).engine == "multiprocessing"
