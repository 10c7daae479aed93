#!/usr/bin/env bash
# Mutation testing of the modules that carry telewarden's guarantees (mutmut 3).
#
#   bench/mutants.sh [--head] [--jobs N] [--limit SECONDS] [MODULE...]
#
# MODULE: engine strictjson routes detectors packs audit checkrun addon judge_worker judge_client (default: all).
# For each module: a fresh copy of the project in $TELEWARDEN_MUTANTS_DIR/<module> (default
# ${TMPDIR:-/tmp}/telewarden-mutants), mutmut mutating that module only (inside the copy's own
# mutants/ folder), running only that module's unit tests (no proxy tests: a mitmdump subprocess
# would not load the mutant), then the score: killed / (total - skipped), plus the survivors.
# The work tree is only read (git ls-files, or --head: git archive HEAD); nothing in it is written.
# mutmut is installed once into a venv of its own next to the copies, which sees the project's
# .venv packages (mitmproxy, ...) but imports telewarden from the copy.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${TELEWARDEN_MUTANTS_DIR:-${TMPDIR:-/tmp}/telewarden-mutants}
jobs=1           # the 2-core machine is shared: one mutant at a time unless told otherwise
limit=1500       # seconds per module, then the module's run is stopped and scored as far as it got
head=0
mutmut_version=3.8.1
all=(engine strictjson routes detectors packs audit checkrun addon judge_worker judge_client)
mods=()
while [ $# -gt 0 ]; do
  case "$1" in
    --head) head=1 ;;
    --jobs) jobs=$2; shift ;;
    --limit) limit=$2; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "mutants: unknown option $1" >&2; exit 2 ;;
    *) mods+=("$1") ;;
  esac
  shift
done
[ ${#mods[@]} -gt 0 ] || mods=("${all[@]}")

# The unit tests that judge each module (selected by file; `-m "not proxy"` drops the rest).
tests_for() {
  case "$1" in
    engine)     echo "tests/test_engine.py tests/test_guarantees.py tests/test_hasura_pack.py tests/test_trail_leaks.py tests/test_strictjson.py" ;;
    strictjson) echo "tests/test_strictjson.py tests/test_guarantees.py tests/test_engine.py" ;;
    routes)     echo "tests/test_routes.py tests/test_guarantees.py tests/test_hasura_pack.py" ;;
    detectors)  echo "tests/test_detectors.py tests/test_linear_time.py tests/test_engine.py tests/test_hasura_pack.py" ;;
    packs)      echo "tests/test_packs.py tests/test_guarantees.py tests/test_engine.py tests/test_hasura_pack.py" ;;
    audit)      echo "tests/test_audit.py tests/test_guarantees.py tests/test_trail_leaks.py" ;;
    checkrun)   echo "tests/test_guarantees.py tests/test_recordings.py tests/test_pytest_plugin.py" ;;
    addon)      echo "tests/test_addon.py tests/test_guarantees.py" ;;
    judge_worker|judge_client) echo "tests/test_workers.py" ;;
    *) echo "mutants: unknown module $1 (known: ${all[*]})" >&2; return 2 ;;
  esac
}

# Where each module lives (src/telewarden/<layer>/<file>.py).
path_of() {
  case "$1" in
    engine) echo engine/judge ;;
    strictjson|routes|detectors|packs) echo "engine/$1" ;;
    audit) echo audit/trail ;;
    checkrun) echo recordings/check ;;
    addon) echo proxy/addon ;;
    judge_worker|judge_client) echo "proxy/$1" ;;
  esac
}

py=$here/.venv/bin/python
[ -x "$py" ] || { echo "mutants: $py missing: run ./tw setup first" >&2; exit 3; }
venv=$work/venv
mkdir -p "$work"
if ! "$venv/bin/python" -c "import mutmut" 2>/dev/null; then
  echo "mutants: installing mutmut $mutmut_version into $venv" >&2
  "$py" -m venv "$venv"
  site=$("$py" -c 'import site; print(site.getsitepackages()[0])')
  vsite=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
  echo "import site; site.addsitedir('$site')" > "$vsite/zz_telewarden_project.pth"
  "$venv/bin/python" -m pip install -q "mutmut==$mutmut_version" >&2
fi

# tests that run the command line find it next to their interpreter (sys.executable)
for tool in telewarden mitmdump; do
  [ -e "$venv/bin/$tool" ] || ln -s "$here/.venv/bin/$tool" "$venv/bin/$tool"
done

summary=$work/scores.txt
: > "$summary"
for mod in "${mods[@]}"; do
  tests=$(tests_for "$mod") || exit 2
  copy=$work/$mod
  rm -rf "$copy"
  mkdir -p "$copy"
  if [ $head = 1 ]; then
    git -C "$here" archive HEAD | tar -x -C "$copy"
  else  # the work tree as it stands, tracked and new files (not ignored ones)
    (cd "$here" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -x -C "$copy"
  fi
  # A test that already fails without mutants (someone's work in progress) would make every
  # mutant look killed: find those first and deselect them, saying so.
  (cd "$copy" && env -u TELEWARDEN_AUDIT_KEY XDG_CONFIG_HOME="$copy/.config" PYTHONPATH="$copy/src" \
     timeout 600 "$py" -m pytest -q -rf -p no:cacheprovider -m "not proxy" -o "addopts=-p pytester" \
     $(for t in $tests; do [ -f "$copy/$t" ] && printf '%s ' "$t"; done) > "$copy/baseline.log" 2>&1) || true
  "$py" - "$copy" "$(path_of "$mod")" $tests <<'PY'
import json, re, sys
from pathlib import Path
copy, mod, tests = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
failing = sorted(set(re.findall(r"^FAILED (\S+)", (copy / "baseline.log").read_text(), re.M)))
for f in failing:
    print(f"   baseline failure, deselected: {f}", file=sys.stderr)
args = ["-q", "-x", "-p", "no:cacheprovider", "-m", "not proxy", "-o", "addopts=-p pytester",
        "--hypothesis-seed=0", *(f"--deselect={f}" for f in failing)]
toml = lambda xs: "[" + ", ".join(json.dumps(x) for x in xs) + "]"
with (copy / "pyproject.toml").open("a") as out:
    out.write(f"""
[tool.mutmut]
source_paths = ["src"]
only_mutate = ["src/telewarden/{mod}.py"]
also_copy = ["rules", "schemas", "examples", "tests"]
pytest_add_cli_args = {toml(args)}
pytest_add_cli_args_test_selection = {toml([t for t in tests if (copy / t).is_file()])}
timeout_multiplier = 5.0
use_git_change_detection = false
""")
PY
  echo "== $mod: mutating src/telewarden/$(path_of "$mod").py against: $tests (limit ${limit}s)" >&2
  set +e
  (cd "$copy" && env -u TELEWARDEN_AUDIT_KEY XDG_CONFIG_HOME="$copy/.config" PYTHONPATH="$copy/src" \
     timeout --signal=INT --kill-after=30 "$limit" "$venv/bin/mutmut" run --max-children "$jobs" \
     > "$copy/mutmut-run.log" 2>&1)
  rc=$?
  (cd "$copy" && PYTHONPATH="$copy/src" "$venv/bin/mutmut" export-cicd-stats >/dev/null 2>&1 &&
     PYTHONPATH="$copy/src" "$venv/bin/mutmut" results > "$copy/survivors.txt" 2>&1)
  # every survivor's diff in one file, to judge which are equivalent (docs/mutation.md)
  (cd "$copy" && for name in $(sed -n 's/^ *\([^ :]*\): survived$/\1/p' survivors.txt); do
     PYTHONPATH="$copy/src" "$venv/bin/mutmut" show "$name" 2>/dev/null | grep -v '^\(---\|+++\) '; echo
   done > "$copy/survivors.diff")
  set -e
  stats=$copy/mutants/mutmut-cicd-stats.json
  if [ -f "$stats" ]; then
    line=$("$py" - "$mod" "$stats" "$rc" <<'PY'
import json, sys
mod, path, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = json.load(open(path))
killed = s.get("killed", 0) + s.get("timeout", 0)
survived = s.get("survived", 0) + s.get("suspicious", 0) + s.get("segfault", 0)
judged = killed + survived
not_run = s.get("total", 0) - judged - s.get("no_tests", 0) - s.get("skipped", 0) - s.get("check_was_interrupted_by_user", 0)
score = 100.0 * killed / judged if judged else 0.0
extra = "" if rc == 0 else f"  (stopped early, exit {rc})"
print(f"{mod:<11} {score:5.1f}%  killed {killed}/{judged}  survived {survived}  no tests {s.get('no_tests', 0)}  "
      f"not run {not_run}  of {s.get('total', 0)}{extra}")
PY
)
  else
    line="$mod: no result (exit $rc); see $copy/mutmut-run.log"
  fi
  echo "$line" | tee -a "$summary"
  echo "   survivors: $copy/survivors.txt, their diffs: $copy/survivors.diff" >&2
done
echo "scores: $summary" >&2
