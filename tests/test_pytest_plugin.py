"""The pytest plugin, exercised with pytester as a user's test suite would use it."""

from __future__ import annotations

from conftest import EXAMPLES

DEMO = EXAMPLES / "flows" / "hasura-demo.mitm"


def test_plugin_fixture_finds_messages_and_fails_readably(pytester):
    pytester.makepyfile(f"""
        def test_find(telewarden):
            rec = telewarden.load({str(DEMO)!r})
            assert len(rec.find(vendor="hasura", kind="cli", match={{"data": {{"command": "hasura version"}}}})) == 1
            assert rec.find(kind="console-v2") and not rec.find(vendor="nobody")
            assert {{m.kind for m, _ in rec.findings("hasura.cli.command-args")}} == {{"cli"}}
            assert "hasura.console.url-route" in rec.rules()

        def test_clean(telewarden):
            telewarden.load({str(DEMO)!r}).assert_clean()

        def test_no_telemetry(telewarden):
            telewarden.load({str(DEMO)!r}).assert_no_telemetry("hasura")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*telemetry messages broke policy*",
        "*hasura.cli.command-args*/data/command*",
        '*promise: "Error messages, arguments and flags are not recorded."*',
        "*expected no telemetry to hasura*",
    ])


def test_plugin_rules_option_replaces_the_bundled_pack(pytester, tmp_path):
    import yaml

    pack = yaml.safe_load((EXAMPLES.parent / "rules" / "hasura.yaml").read_text())
    pack["rules"] = [r for r in pack["rules"] if r["id"] != "hasura.cli.command-args"]
    path = tmp_path / "hasura.yaml"
    path.write_text(yaml.safe_dump(pack))
    pytester.makepyfile(f"""
        def test_rule_is_gone(telewarden):
            assert "hasura.cli.command-args" not in telewarden.load({str(DEMO)!r}).rules()
    """)
    pytester.runpytest("--telewarden-rules", str(path)).assert_outcomes(passed=1)
