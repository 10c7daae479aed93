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
    from telewarden.proxy.runner import mitmdump_args, split_modes

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


def test_the_engine_the_trail_icap_and_the_judge_worker_import_no_mitmproxy():
    """The layering the package folders show: the engine and the trail are free of mitmproxy, and
    so is the ICAP service built on them (an egress proxy's ICAP client needs no mitmproxy), and
    the proxy's judge worker process (it starts with the engine alone)."""
    code = ("import importlib, pkgutil, sys\n"
            "import telewarden.engine, telewarden.audit, telewarden.icap\n"
            "for pkg in (telewarden.engine, telewarden.audit, telewarden.icap):\n"
            "    for m in pkgutil.iter_modules(pkg.__path__):\n"
            "        importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
            "importlib.import_module('telewarden.proxy.judge_worker')\n"
            "print(len([n for n in sys.modules if n.startswith('telewarden.')]), "
            "sorted(n for n in sys.modules if n.split('.')[0] == 'mitmproxy'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    count, mitm = out.stdout.split(" ", 1)
    assert int(count) >= 14 and mitm.strip() == "[]", out.stdout


def test_run_workers_flag_sets_the_option_unless_the_user_set_it():
    from telewarden.cli import build_parser
    from telewarden.proxy.runner import mitmdump_args

    args, extra = build_parser().parse_known_args(["run", "--workers", "2"])
    args.tw_mode = "scrub"
    assert "telewarden_workers=2" in mitmdump_args(args, extra)
    args, extra = build_parser().parse_known_args(["run", "--workers", "2", "--set", "telewarden_workers=3"])
    args.tw_mode = "scrub"
    argv = mitmdump_args(args, extra)
    assert "telewarden_workers=3" in argv and "telewarden_workers=2" not in argv
    args, extra = build_parser().parse_known_args(["run"])
    args.tw_mode = "scrub"
    assert not any(a.startswith("telewarden_workers=") for a in mitmdump_args(args, extra))
