"""Route-template precedence, edge by edge (see routes.py)."""

from __future__ import annotations

import pytest

from telewarden.engine.routes import RouteError, RouteSet

RS = RouteSet("t", [
    "/",
    "/actions/manage/(actions|add)",
    "/actions/manage/{ACTION_NAME}",
    "/data/{SOURCE_NAME|default}",
    "/data/sql",
    "/data/{SOURCE_NAME|default}/schema/{SCHEMA_NAME}",
    "/data/x/schema/{SCHEMA_NAME}",
])


def test_exact_literal_route_complies():
    assert RS.check("/data/sql").ok


def test_placeholder_segment_complies_only_as_the_placeholder():
    assert RS.check("/data/SOURCE_NAME").ok
    r = RS.check("/data/acme")
    assert not r.ok and r.repaired == "/data/SOURCE_NAME"


def test_also_allowed_literal_complies():
    assert RS.check("/data/default/schema/SCHEMA_NAME").ok


def test_exact_match_wins_over_a_placeholder_template_that_would_also_fit():
    # "actions" fits {ACTION_NAME} too, but the choice template matches exactly
    assert RS.check("/actions/manage/actions").ok


def test_more_literal_segments_win_among_repairs():
    # both /data/{SOURCE}/schema/{SCHEMA} and /data/x/schema/{SCHEMA} fit; the latter has 3 literals
    r = RS.check("/data/x/schema/public")
    assert r.repaired == "/data/x/schema/SCHEMA_NAME" and r.template == "/data/x/schema/{SCHEMA_NAME}"


def test_equal_literal_count_falls_back_to_pack_order():
    rs = RouteSet("t", ["/a/{X}/{Y}", "/a/{Z}/{W}"])
    assert rs.check("/a/p/q").repaired == "/a/X/Y"


def test_unknown_route_keeps_the_longest_known_prefix():
    r = RS.check("/data/acme/gizmo/secret")
    assert not r.ok and r.reason == "unknown route" and r.repaired == "/data/SOURCE_NAME"


def test_unknown_top_level_falls_back_to_root():
    assert RS.check("/nothing/here").repaired == "/"


def test_query_and_fragment_are_not_allowed():
    r = RS.check("/data/sql?table=customers")
    assert not r.ok and r.repaired == "/data/sql"


def test_trailing_slash_is_tolerated_and_empty_segments_are_not():
    assert RS.check("/data/sql/").ok
    assert not RS.check("/data//sql").ok


def test_relative_path_is_rejected():
    assert RS.check("data/sql").repaired == "/"


def test_root_complies():
    assert RS.check("/").ok


def test_empty_variable_segment_does_not_match_a_placeholder():
    # "/data//schema/SCHEMA_NAME" would fit /data/{SOURCE_NAME}/schema/{SCHEMA_NAME} if an empty
    # segment counted as a name; it does not, so only the known prefix "/" is kept
    r = RS.check("/data//schema/SCHEMA_NAME")
    assert not r.ok and r.reason == "unknown route" and r.repaired == "/"


@pytest.mark.parametrize("bad", ["data/x", "/a/{x y}", "/a/(b|)c", "/a/{}"])
def test_malformed_templates_are_rejected(bad):
    with pytest.raises(RouteError):
        RouteSet("t", [bad])
