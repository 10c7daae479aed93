"""A plain `pip install .` must bring the bundled rules and schemas, not only a checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from conftest import ROOT


def test_wheel_carries_the_bundled_packs_and_schemas(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    [wheel] = tmp_path.glob("telewarden-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "telewarden/_bundled/rules/hasura.yaml" in names
    assert "telewarden/_bundled/schemas/rulepack.schema.json" in names
    assert "telewarden/_bundled/schemas/audit-record.schema.json" in names
    assert {f"telewarden/_bundled/schemas/hasura/{p.name}" for p in (ROOT / "schemas" / "hasura").iterdir()} <= names


def test_runner_passes_unknown_arguments_and_never_abbreviates():
    from telewarden.cli import build_parser
    from telewarden.runner import mitmdump_args, split_modes

    args, extra = build_parser().parse_known_args(
        ["run", "--mode", "block", "--mode", "reverse:https://telemetry.hasura.io/", "--listen", "x", "-w", "f.mitm",
         "--set", "telewarden_audit=/tmp/a"])
    assert extra == ["--listen", "x", "-w", "f.mitm", "--set", "telewarden_audit=/tmp/a"]
    mode, proxy_modes = split_modes(args.modes)
    assert mode == "block" and proxy_modes == ["--mode", "reverse:https://telemetry.hasura.io/"]
    args.tw_mode = mode
    argv = mitmdump_args(args, extra)
    assert argv.count("--listen-host") == 1 and "127.0.0.1" in argv  # loopback unless told otherwise
    assert not any(a.startswith("telewarden_audit=telewarden-audit") for a in argv)  # the user's --set wins
