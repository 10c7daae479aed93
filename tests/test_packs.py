"""Pack loading: broken packs name the file, the item and the reason; nothing half-loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import PAYLOADS, ROOT, exchange
from telewarden.engine.judge import Engine
from telewarden.engine.model import Decision, Mode
from telewarden.engine.packs import PackError, bundled_dir, load_pack, load_packs

HASURA = ROOT / "rules" / "hasura.yaml"


def variant(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(HASURA.read_text())
    edit(data)
    out = tmp_path / "rules" / "hasura.yaml"
    out.parent.mkdir(exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def rule(data, rid):
    return next(r for r in data["rules"] if r["id"] == rid)


@pytest.mark.parametrize("edit,expect", [
    (lambda d: rule(d, "hasura.version.dev-build")["check"].update(pattern="(unclosed"),
     "rule 'hasura.version.dev-build': bad pattern"),
    (lambda d: rule(d, "hasura.cli.error").update(promise="nope"),
     "rule 'hasura.cli.error': promise 'nope' is not defined"),
    (lambda d: rule(d, "hasura.cli.error").update(kinds=["cli", "martian"]),
     "rule 'hasura.cli.error': unknown kind 'martian'"),
    (lambda d: rule(d, "hasura.cli.error").update(severity="catastrophic"),
     "rule 'hasura.cli.error': 'catastrophic' is not one of"),
    (lambda d: rule(d, "hasura.cli.error").pop("check"),
     "rule 'hasura.cli.error': 'check' is a required property"),
    (lambda d: rule(d, "hasura.cli.error")["check"].update(pattern="x"),
     "rule 'hasura.cli.error'"),
    (lambda d: rule(d, "hasura.console.url-route")["check"].update(route="nowhere"),
     "rule 'hasura.console.url-route': unknown route set 'nowhere'"),
    (lambda d: d["rules"].append(dict(rule(d, "hasura.cli.error"))),
     "rule 'hasura.cli.error': id is defined twice"),
    (lambda d: d["kinds"][0].update(schema="hasura/missing.schema.json"),
     "kind 'server-v1': schema file 'hasura/missing.schema.json' not found"),
    (lambda d: d["kinds"][0].update(endpoints=["ftp"]), "kind 'server-v1': unknown endpoint 'ftp'"),
    (lambda d: d["routes"]["console"].append("/data/{broken"), "routes 'console'"),
    (lambda d: d.update(surprise=1), "pack: Additional properties are not allowed"),
])
def test_broken_pack_names_file_item_and_reason(tmp_path, edit, expect):
    path = variant(tmp_path, edit)
    with pytest.raises(PackError) as e:
        load_pack(path)
    assert str(path) in str(e.value) and expect in str(e.value)


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("pack: [unclosed")
    with pytest.raises(PackError, match="x.yaml: not valid YAML"):
        load_pack(bad)
    with pytest.raises(PackError, match="no such file"):
        load_packs([tmp_path / "missing.yaml"])


def test_invalid_kind_schema_is_reported(tmp_path):
    path = variant(tmp_path, lambda d: None)
    (tmp_path / "schemas" / "hasura").mkdir(parents=True)
    (tmp_path / "schemas" / "hasura" / "server-v1.schema.json").write_text('{"type": "nonsense"}')
    with pytest.raises(PackError, match="kind 'server-v1': schema .* not a valid JSON Schema"):
        load_pack(path)


def test_user_pack_replaces_the_bundled_pack_with_the_same_id(tmp_path):
    path = variant(tmp_path, lambda d: d["rules"].remove(rule(d, "hasura.cli.command-args")))
    packs = load_packs([path])
    assert [p.id for p in packs] == ["hasura", "nextjs", "prisma"] and packs[0].file == str(path)
    eng = Engine(packs, digest_key=b"k")
    body = dict(PAYLOADS["cli-v2.48-no-error"], data={**PAYLOADS["cli-v2.48-no-error"]["data"], "command": "hasura version --endpoint"})
    assert eng.inspect(exchange(body), Mode.BLOCK).decision is Decision.FORWARDED


def test_the_same_pack_id_twice_among_user_packs_is_an_error(tmp_path):
    a = variant(tmp_path, lambda d: None)
    b = tmp_path / "copy.yaml"
    b.write_text(a.read_text())
    with pytest.raises(PackError, match="also defined in"):
        load_packs([a, b], include_bundled=False)


def test_first_pack_claiming_a_host_wins(tmp_path):
    other = variant(tmp_path, lambda d: d.update(pack="acme"))
    packs = load_packs([other])
    assert [p.id for p in packs] == ["acme", "hasura", "nextjs", "prisma"]
    assert Engine(packs, digest_key=b"k").inspect(exchange(PAYLOADS["cli-v1.3"]), Mode.SCRUB).pack == "acme"


def test_bundled_rules_and_schemas_are_found():
    assert (bundled_dir("rules") / "hasura.yaml").is_file()
    assert (bundled_dir("schemas") / "rulepack.schema.json").is_file()


# -- value sets: `values:`, check {in: SET}, check/scrub {tokens: ...} ----------------------------

def small_pack(tmp_path: Path, rules: list, values: dict, files: dict | None = None) -> Path:
    """A minimal pack of its own (not Hasura's) to test the pack language."""
    for name, text in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    schema = tmp_path / "acme" / "event.schema.json"
    schema.parent.mkdir(exist_ok=True)
    schema.write_text('{"type": "object", "properties": {"cmd": {"type": "string"}, "tags": {"type": "array"}}}')
    pack = {"pack": "acme", "title": "Acme", "source": "Acme privacy note", "promises": {"p": "Nothing but the path."},
            "generic_promise": "p", "values": values,
            "endpoints": [{"id": "http", "transport": "http", "hosts": ["t.acme.test"], "paths": ["/e"]}],
            "kinds": [{"id": "event", "endpoints": ["http"], "schema": "acme/event.schema.json"}],
            "rules": rules}
    out = tmp_path / "acme.yaml"
    out.write_text(yaml.safe_dump(pack, sort_keys=False))
    return out


CMD_RULE = {"id": "acme.cmd", "promise": "p", "severity": "high", "at": ["/cmd"],
            "check": {"tokens": {"head": "paths", "tail": "flags"}}, "scrub": {"tokens": True}}


def acme(tmp_path, body, values, mode="scrub", rules=(CMD_RULE,), files=None):
    eng = Engine([load_pack(small_pack(tmp_path, list(rules), values, files))], digest_key=b"k")
    return eng.inspect(exchange(body, host="t.acme.test", path="/e"), Mode(mode))


@pytest.mark.parametrize("cmd,ok,repaired", [
    ("acme", True, None), ("acme deploy", True, None), ("acme deploy --dry-run", True, None),
    ("acme deploy prod", False, "acme deploy"), ("acme deploy --token", False, "acme deploy"),
    ("acme deploy prod --dry-run", False, "acme deploy --dry-run"), ("other", False, ""),
])
def test_tokens_check_takes_the_longest_allowed_head_then_allowed_tail_tokens(tmp_path, cmd, ok, repaired):
    v = acme(tmp_path, {"cmd": cmd}, {"paths": ["acme", "acme deploy"], "flags": ["--dry-run"]})
    assert (v.findings == []) is ok
    if not ok:
        assert [f.rule for f in v.findings] == ["acme.cmd"]
        import json as _json
        if repaired:
            assert v.decision is Decision.SCRUBBED and _json.loads(v.repaired.body)["cmd"] == repaired
        else:  # "" is not an allowed path here: the repair does not pass, so it blocks
            assert v.decision is Decision.BLOCKED


def test_value_set_from_a_file_next_to_the_pack_with_patterns(tmp_path):
    files = {"acme/tags.yaml": "source: acme repo src/tags.ts @ v1\nvalues:\n  - red\n  - {value: blue, since: v2}\n"
                               "  - {pattern: 'team-[a-z]{1,8}', since: v3}\n  - 7\n"}
    rule_ = {"id": "acme.tag", "promise": "p", "severity": "low", "at": ["/tags/*"], "check": {"in": "tags"}, "scrub": {"drop": True}}
    vals = {"tags": {"file": "acme/tags.yaml"}}
    assert acme(tmp_path, {"tags": ["red", "blue", "team-core", 7]}, vals, "block", [rule_], files).findings == []
    v = acme(tmp_path, {"tags": ["red", "team-Core", "7", True]}, vals, "audit", [rule_], files)
    assert [f.pointer for f in v.findings] == ["/tags/1", "/tags/2", "/tags/3"]  # type-sensitive, full match
    assert (tmp_path / "acme" / "tags.yaml") in load_pack(tmp_path / "acme.yaml").files()


@pytest.mark.parametrize("values,rules,files,expect", [
    ({}, [CMD_RULE], None, "rule 'acme.cmd': unknown value set 'paths'"),
    ({"paths": {"file": "nope.yaml"}, "flags": []}, [CMD_RULE], None, "values 'paths': value file 'nope.yaml' not found"),
    ({"paths": {"file": "v.yaml"}, "flags": []}, [CMD_RULE], {"v.yaml": "source: x\n"}, "values 'paths': value file"),
    ({"paths": {"file": "v.yaml"}, "flags": []}, [CMD_RULE], {"v.yaml": "values: [{since: v1}]\n"}, "values 'paths': value file"),
    ({"paths": [{"pattern": "(unclosed"}], "flags": []}, [CMD_RULE], None, "values 'paths': bad pattern"),
    ({"paths": ["a"], "flags": []}, [dict(CMD_RULE, check={"in": "paths"})], None, "rule 'acme.cmd': scrub 'tokens' needs a 'tokens' check"),
    ({"Bad Name": ["a"]}, [], None, "pack: 'Bad Name' does not match"),
])
def test_broken_value_sets_name_the_set_or_rule_and_the_reason(tmp_path, values, rules, files, expect):
    path = small_pack(tmp_path, rules, values, files)
    with pytest.raises(PackError) as e:
        load_pack(path)
    assert expect in str(e.value), str(e.value)


def test_a_pack_copied_elsewhere_still_finds_the_bundled_value_files(tmp_path):
    path = variant(tmp_path, lambda d: None)  # rules/hasura.yaml copied without rules/hasura/
    pack = load_pack(path)
    assert any(f.name == "cli-commands.yaml" for f in pack.files())
