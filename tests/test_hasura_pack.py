"""The Hasura pack allows only what the promise allows (issue 10, parts 1 and 2), engine level.

Every free-text channel is closed by a value set read from Hasura's source (rules/hasura/*.yaml) or
a closed form, and every genuine sender passes: payloads of every generation with the headers their
senders really set, and a console served from this machine (loopback Origin).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLES, PAYLOADS, ROOT, exchange, inspect, is_console
from telewarden.engine.judge import Engine
from telewarden.engine.model import Decision
from telewarden.engine.packs import load_pack

HEADERS = json.loads((EXAMPLES / "headers.json").read_text())
GENUINE_HEADERS = {g["name"]: g for g in HEADERS["genuine"]}
VALUE_FILES = sorted((ROOT / "rules" / "hasura").glob("*.yaml"))


def values(name: str) -> list:
    data = yaml.safe_load((ROOT / "rules" / "hasura" / f"{name}.yaml").read_text())
    return [v["value"] if isinstance(v, dict) else v for v in data["values"] if not (isinstance(v, dict) and "pattern" in v)]


def handshake(headers) -> object:
    return exchange(b"", method="GET", path="/v1/ws", headers=[tuple(h) for h in headers])


def found(v) -> list[tuple[str, str]]:
    return [(f.rule, f.pointer) for f in v.findings]


def cli(command: str) -> dict:
    body = copy.deepcopy(PAYLOADS["cli-v2.48-no-error"])
    body["data"]["command"] = command
    return body


# -- provenance: every value set says where it came from ----------------------------------------

@pytest.mark.parametrize("path", VALUE_FILES, ids=[p.name for p in VALUE_FILES])
def test_every_value_file_names_its_source_in_hasuras_code(path):
    data = yaml.safe_load(path.read_text())
    assert "hasura/graphql-engine" in data["source"] and data["values"]
    for item in data["values"]:
        assert not isinstance(item, dict) or "since" in item or "note" in item, item


def test_value_files_are_watched_for_reload(packs):
    hasura = next(p for p in packs if p.id == "hasura")
    assert {p.name for p in VALUE_FILES} <= {f.name for f in hasura.files()}


# -- part 2: genuine senders pass --------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(GENUINE_HEADERS))
def test_genuine_headers_of_every_sender_pass(engine, name):
    g = GENUINE_HEADERS[name]
    if g["transport"] == "websocket":
        ex = handshake(g["headers"])
    else:
        ex = exchange(PAYLOADS["cli-v2.48-no-error"], headers=[tuple(h) for h in g["headers"]])
    v = inspect(engine, ex, "block")
    assert v.findings == [] and v.decision is Decision.FORWARDED, found(v)


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_every_genuine_payload_passes_with_its_senders_headers(engine, name):
    sender = "console-chrome-cli" if is_console(name) else ("cli-http1" if name.startswith("cli") else "server-v2.48")
    ws = is_console(name)
    v = inspect(engine, exchange(PAYLOADS[name], "websocket" if ws else "http",
                                 headers=[] if ws else [tuple(h) for h in GENUINE_HEADERS[sender]["headers"]]), "block")
    assert v.findings == [], found(v)


@pytest.mark.parametrize("origin", [
    "http://localhost:9695", "http://localhost:8080", "https://localhost", "http://LOCALHOST:9695",
    "http://127.0.0.1:9695", "http://127.0.0.1", "https://127.1.2.3:8443", "http://127.255.255.254:80",
    "http://[::1]:9695", "https://[::1]",
])
def test_a_loopback_origin_reveals_nothing_and_complies(engine, origin):
    headers = [h if h[0] != "Origin" else ["Origin", origin] for h in GENUINE_HEADERS["console-chrome-cli"]["headers"]]
    v = inspect(engine, handshake(headers), "block")
    assert v.findings == [] and v.decision is Decision.FORWARDED, found(v)


@pytest.mark.parametrize("origin", [
    "https://hasura.internal.example.com", "http://localhost.acme.com:9695", "http://acme-localhost:9695",
    "http://127.0.0.1.nip.io", "http://128.0.0.1:9695", "http://127.0.0.256", "http://[::2]:9695",
    "http://localhost:9695/acme", "ws://localhost:9695", "null", "http://localhost:123456",
])
def test_any_other_origin_is_a_finding_and_scrub_drops_it(engine, origin):
    v = inspect(engine, handshake([("Host", "telemetry.hasura.io"), ("Upgrade", "websocket"), ("Origin", origin)]), "scrub")
    assert found(v) == [("hasura.console.origin", "header:origin")]
    assert v.decision is Decision.SCRUBBED and v.repaired.drop_headers == ("origin",)


# -- part 1: headers -----------------------------------------------------------------------------

@pytest.mark.parametrize("case", HEADERS["violations"], ids=[c["name"] for c in HEADERS["violations"]])
def test_free_text_in_a_header_is_caught_and_scrub_drops_only_that_header(engine, case):
    base = [tuple(h) for h in GENUINE_HEADERS[case["base"]]["headers"] if h[0].lower() != case["header"].lower()]
    headers = [*base, (case["header"], case["value"])]
    ws = case["transport"] == "websocket"
    ex = handshake(headers) if ws else exchange(PAYLOADS["cli-v2.48-no-error"], headers=headers)
    v = inspect(engine, ex, "scrub")
    assert found(v) == [(case["expect"], "header:" + case["header"].lower())]
    assert v.decision is Decision.SCRUBBED and v.repaired.drop_headers == (case["header"].lower(),)
    again = handshake(base) if ws else exchange(PAYLOADS["cli-v2.48-no-error"], headers=base)
    assert inspect(engine, again, "block").findings == []
    assert inspect(engine, ex, "block").decision is Decision.BLOCKED


@pytest.mark.parametrize("ua", [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
])
def test_real_browser_user_agents_pass_on_the_console_handshake(engine, ua):
    v = inspect(engine, handshake([("Host", "telemetry.hasura.io"), ("User-Agent", ua)]), "block")
    assert v.findings == [], found(v)


@pytest.mark.parametrize("ua", [
    "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36",  # not a form any browser sends
    "Mozilla/5.0 acme_customers", "python-requests/2.32", "Go-http-client/1.1",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 acme/1.0",
    "Mozilla/5.0 (Linux; Android 14; acme customers) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
])
def test_anything_else_in_the_console_user_agent_is_a_finding(engine, ua):
    v = inspect(engine, handshake([("Host", "telemetry.hasura.io"), ("User-Agent", ua)]), "scrub")
    assert found(v) == [("hasura.console.user-agent", "header:user-agent")]


@pytest.mark.parametrize("ua,ok", [
    ("hasura-graphql-engine/v2.48.10", True), ("hasura-graphql-engine/v1.0.0-alpha36", True),
    ("hasura-graphql-engine/v2.0.0-beta.2", True), ("hasura-graphql-engine/v2.8.0-beta.1-pro.1", True),
    ("hasura-graphql-engine/v2.36.10-1", True), ("Go-http-client/1.1", True), ("Go-http-client/2.0", True),
    ("Go-http-client/3.0", False), ("hasura-graphql-engine/v2.48.10 (acme)", False),
    ("hasura-graphql-engine/main-1a2b3c4-dirty", False), ("Go-http-client/1.1 --endpoint", False),
])
def test_user_agents_on_the_http_endpoint(engine, ua, ok):
    v = inspect(engine, exchange(PAYLOADS["cli-v1.3"], headers=[("User-Agent", ua)]), "scrub")
    assert found(v) == ([] if ok else [("hasura.header.user-agent", "header:user-agent")])


@pytest.mark.parametrize("ctype,ok", [
    ("application/json", True), ("application/json; charset=utf-8", True), ("Application/JSON;charset=UTF-8", True),
    ("application/json; charset=iso-8859-1", False), ("application/json; table=acme", False),
    ("application/json;x=1", False), ("text/plain", False), ("application/jsonacme", False),
])
def test_content_type_is_application_json_only(engine, ctype, ok):
    v = inspect(engine, exchange(PAYLOADS["cli-v1.3"], headers=[("Content-Type", ctype)]), "scrub")
    rules = [f.rule for f in v.findings]
    assert ("hasura.header.content-type" not in rules) is ok, rules


# -- part 1: CLI command paths -------------------------------------------------------------------

COMMANDS = values("cli-commands")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_path_of_every_cli_release_passes(engine, command):
    v = inspect(engine, exchange(cli(command)), "block")
    assert v.findings == [], found(v)


@pytest.mark.parametrize("command,repaired", [
    ("hasura seed create users_seed", "hasura seed create"),
    ("hasura seed create acme admin-secret hunter2", "hasura seed create"),
    ("hasura migrate apply --admin-secret --database-name --endpoint", "hasura migrate apply"),
    ("hasura metadata inconsistency list --output", "hasura metadata inconsistency list"),
    ("hasura migrate apply --admin-secret=hunter2", "hasura migrate apply"),
    ("hasura migrate  apply", "hasura migrate"),          # only the exact separator forms a path
    ("hasura acme-prod-deploy", "hasura"),
    ("hasura seeds create acme", "hasura seeds create"),   # v1.3.0 name of `seed`
    ("hasurax migrate", ""), ("acme", ""),
])
def test_anything_after_the_command_path_is_a_finding_and_scrub_keeps_the_longest_path(engine, command, repaired):
    v = inspect(engine, exchange(cli(command)), "scrub")
    assert found(v) == [("hasura.cli.command-args", "/data/command")]
    assert v.decision is Decision.SCRUBBED
    assert json.loads(v.repaired.body)["data"]["command"] == repaired


def test_flat_cli_variant_gets_the_same_command_rule(engine):
    flat = {"topic": "cli", **cli("hasura version --skip-update-check")["data"]}
    v = inspect(engine, exchange(flat), "scrub")
    assert found(v) == [("hasura.cli.command-args", "/command")]
    assert json.loads(v.repaired.body)["command"] == "hasura version"


def policy_pack(tmp_path: Path, flags: list[str]) -> Path:
    data = yaml.safe_load((ROOT / "rules" / "hasura.yaml").read_text())
    data["values"]["cli-accepted-flags"] = flags
    out = tmp_path / "hasura.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_flag_names_a_policy_accepts_pass_and_the_rest_is_dropped(tmp_path):
    eng = Engine([load_pack(policy_pack(tmp_path, ["--endpoint", "--skip-update-check"]))], digest_key=b"k")
    ok = eng.inspect(exchange(cli("hasura migrate apply --endpoint --skip-update-check")), "block")
    assert ok.findings == []
    v = eng.inspect(exchange(cli("hasura migrate apply --admin-secret --endpoint")), "scrub")
    assert found(v) == [("hasura.cli.command-args", "/data/command")]
    assert json.loads(v.repaired.body)["data"]["command"] == "hasura migrate apply --endpoint"
    # a positional argument is never a flag name
    bad = eng.inspect(exchange(cli("hasura seed create acme --endpoint")), "scrub")
    assert json.loads(bad.repaired.body)["data"]["command"] == "hasura seed create --endpoint"


# -- part 1: server experimental features --------------------------------------------------------

def test_every_experimental_feature_key_passes(engine):
    body = copy.deepcopy(PAYLOADS["server-v2.48-default-source"])
    body["data"]["experimental_features"] = values("experimental-features")
    assert inspect(engine, exchange(body), "block").findings == []


def test_an_unknown_experimental_feature_is_dropped(engine):
    body = copy.deepcopy(PAYLOADS["server-v2.48-default-source"])
    body["data"]["experimental_features"] = ["naming_convention", "acme_customers"]
    v = inspect(engine, exchange(body), "scrub")
    assert found(v) == [("hasura.server.experimental-feature", "/data/experimental_features/1")]
    assert json.loads(v.repaired.body)["data"]["experimental_features"] == ["naming_convention"]


def test_several_unknown_experimental_features_never_leak(engine):
    body = copy.deepcopy(PAYLOADS["server-v2.48-default-source"])
    body["data"]["experimental_features"] = ["acme_a", "naming_convention", "acme_b", "acme_c"]
    v = inspect(engine, exchange(body), "scrub")
    assert len(v.findings) == 3
    if v.decision is Decision.SCRUBBED:
        assert json.loads(v.repaired.body)["data"]["experimental_features"] == ["naming_convention"]
    else:  # a repair that does not pass the checks again blocks: nothing unknown is forwarded
        assert v.decision is Decision.BLOCKED


# -- part 1: console value sets ------------------------------------------------------------------

REDUX = values("console-redux-actions")


def test_every_redux_action_type_passes_as_a_v1_event_type(engine):
    for event_type in REDUX:
        body = copy.deepcopy(PAYLOADS["console-alpha36"])
        body["data"]["event_type"] = event_type
        v = inspect(engine, exchange(body, "websocket"), "block")
        assert v.findings == [], (event_type, found(v))


@pytest.mark.parametrize("event_type", ["ModifyTable/acme_customers", "acme_customers", "ModifyTable/RESET acme",
                                        "@@router/LOCATION_CHANGE/acme", "MODIFY_ACME_CUSTOMERS_TABLE"])
def test_a_v1_event_type_no_console_release_has_is_blocked(engine, event_type):
    body = copy.deepcopy(PAYLOADS["console-alpha36"])
    body["data"]["event_type"] = event_type
    v = inspect(engine, exchange(body, "websocket"), "scrub")
    assert found(v) == [("hasura.console.event-type", "/data/event_type")] and v.decision is Decision.BLOCKED


@pytest.mark.parametrize("title", values("console-feature-flags"))
def test_every_feature_flag_title_passes(engine, title):
    body = copy.deepcopy(PAYLOADS["console-v2.20-feature-flag"])
    body["data"]["event_data"]["feature_flag"] = title
    assert inspect(engine, exchange(body, "websocket"), "block").findings == []


def test_an_unknown_feature_flag_title_becomes_unknown_as_the_console_itself_writes(engine):
    body = copy.deepcopy(PAYLOADS["console-v2.20-feature-flag"])
    body["data"]["event_data"]["feature_flag"] = "Enable for table acme_customers"
    v = inspect(engine, exchange(body, "websocket"), "scrub")
    assert found(v) == [("hasura.console.feature-flag", "/data/event_data/feature_flag")]
    assert json.loads(v.repaired.body)["data"]["event_data"]["feature_flag"] == "Unknown"


def test_every_analytics_id_passes_on_click_and_input(engine):
    for event in ("CLICK_EVENT", "INPUT_CHANGE_EVENT"):
        for ident in values("console-analytics-ids"):
            body = copy.deepcopy(PAYLOADS["console-v2.48-click"])
            body["data"]["event_type"], body["data"]["event_data"]["id"] = event, ident
            assert inspect(engine, exchange(body, "websocket"), "block").findings == [], ident


@pytest.mark.parametrize("ident,ok", [
    ("ee-benefits-caching-link", True), ("api-tab-rest-endpoint-form-create-button", True),
    ("ee-benefits-acme customers-link", False), ("ee-benefits-" + "a" * 65 + "-link", False),
    ("orders_2024_export", False), ("data-schema-registry-alerts-btn acme", False),
])
def test_template_analytics_ids_allow_one_token_in_the_template_only(engine, ident, ok):
    body = copy.deepcopy(PAYLOADS["console-v2.48-click"])
    body["data"]["event_data"]["id"] = ident
    v = inspect(engine, exchange(body, "websocket"), "scrub")
    assert found(v) == ([] if ok else [("hasura.console.analytics-id", "/data/event_data/id")])
    if not ok:
        assert json.loads(v.repaired.body)["data"]["event_data"]["id"] == "unknown"


def test_connect_db_zero_hash_complies_a_real_hash_does_not(engine):
    body = copy.deepcopy(PAYLOADS["console-v2.17-connect-db"])
    assert body["data"]["event_data"]["entity_hash"] == "0" * 32
    assert inspect(engine, exchange(body, "websocket"), "block").findings == []
    body["data"]["event_data"].update(entity_count=3, entity_hash="5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8")
    assert found(inspect(engine, exchange(body, "websocket"), "scrub")) == [
        ("hasura.console.entity-hash", "/data/event_data/entity_hash")]


# -- part 1: bounded counters --------------------------------------------------------------------

@pytest.mark.parametrize("pointer,value,ok", [
    (("data", "metrics", "tables"), 1_000_000, True),
    (("data", "metrics", "tables"), 1_000_001, False),
    (("data", "metrics", "tables"), -1, False),
    (("data", "metrics", "permissions", "roles"), 10**12, False),
    (("data", "metrics", "native_queries", "with_parameters"), 10**9, False),
    (("data", "metrics", "service_timings", "collectionTag"), 10**11, False),
    (("data", "metrics", "service_timings", "serviceTimingMetrics", 0, "bucket"), 0.001, True),
    (("data", "metrics", "service_timings", "serviceTimingMetrics", 0, "bucket"), 0.0123456789, False),
    (("data", "metrics", "service_timings", "serviceTimingMetrics", 0, "metrics", "count"), 10**13, False),
    (("data", "source_metadata", "db_version"), "1500040", True),
    (("data", "source_metadata", "db_version"), "150004000000", False),
])
def test_counters_are_non_negative_and_bounded(engine, pointer, value, ok):
    body = copy.deepcopy(PAYLOADS["server-v2.48-default-source"])
    node = body
    for tok in pointer[:-1]:
        node = node[tok]
    node[pointer[-1]] = value
    v = inspect(engine, exchange(body), "block")
    assert (v.findings == []) is ok, found(v)
    if not ok:
        assert all(f.rule.startswith("hasura.schema.") for f in v.findings)


def test_resource_row_is_bounded(engine):
    body = copy.deepcopy(PAYLOADS["server-resources-v2.26"])
    body["server_metrics"]["resource_cpu"] = 10**10
    assert [f.rule for f in inspect(engine, exchange(body), "block").findings] == ["hasura.schema.any-of"]


@pytest.mark.parametrize("version,ok", [
    ("v2.36.10-1", True), ("v2.48.10-ce", True), ("v2.8.0-beta.1-pro.1", True), ("v1.0.0-alpha36", True),
    ("main-1a2b3c4-dirty", False), ("v2.48.10-acme", False),
])
def test_release_versions_of_every_line_pass_the_dev_build_rule(engine, version, ok):
    body = copy.deepcopy(PAYLOADS["server-v2.48-default-source"])
    body["data"]["hasura_version"] = version
    v = inspect(engine, exchange(body), "block")
    assert found(v) == ([] if ok else [("hasura.version.dev-build", "/data/hasura_version")])
