"""The audit trail: every decision, in a human log and a hash-chained JSON Lines log.

- One `os.write` per record on O_APPEND descriptors: a kill -9 leaves at most a torn last line.
- Each JSONL record carries `seq`, `prev` (the previous record's hash) and `hash` (SHA-256 of
  the record without `hash`), so an edit, a cut, a reorder or an insertion breaks the chain.
  Editing the *last* record and recomputing its hash (or every hash after an edit) is only caught
  against an anchored hash: `verify` prints the last record as SEQ:HASH to keep elsewhere, and
  `verify --anchor SEQ:HASH` checks that record is still there, unchanged.
  The chain is deliberately not keyed or forward-secure (journald-style sealing): that only helps
  if the first sealing key leaves the machine and every older one is destroyed, which a key file
  under ~/.config on a laptop, CI runner or container cannot promise; an anchor kept off the
  machine gives the same guarantee with nothing secret to keep.
- Size-based rotation renames audit.jsonl to audit.jsonl.NNNNNN; the chain runs on across files.
- On reopening after a crash, a torn tail is cut off and replaced by a chained record that says
  how many bytes were lost and their digest, so the trail stays verifiable and says what happened.
- Findings carry only keyed digests and safe previews (engine.py): no raw value reaches a log,
  and no key or header name the sender chose. The human log escapes every control character.
- The digest key lives outside the trail's folder (`~/.config/telewarden/audit.key` by default):
  with the key, a guess ("customers") can be tested against a digest, so whoever gets a copy of
  the trail must not get the key. `verify` and `render` need no key.
- `audit.log` is a convenience view of the same records; `audit render` regenerates it from the
  chained JSONL, which is the record that counts. The live proxy renders it after the request went
  on (`defer_human`: a batch per turn of its event loop, one write), never before the JSONL
  record; when a trail is opened and its audit.log lags behind audit.jsonl (a crash between the
  two), audit.log is regenerated from the chain, so the human view never loses a record either.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import logging
import os
import re
import sys
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from . import render

JSONL, HUMAN, KEYFILE = "audit.jsonl", "audit.log", "audit.key"
GENESIS = "0" * 64
_ROTATED = re.compile(r"^audit\.jsonl\.(\d{6})$")
log = logging.getLogger("telewarden")


class AuditError(Exception):
    """The trail cannot be written; enforcing modes must stop forwarding."""


def default_key_path() -> Path:
    """$XDG_CONFIG_HOME/telewarden/audit.key, else ~/.config/telewarden/audit.key."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "telewarden" / KEYFILE


def load_or_create_key(key_path: Path | None = None) -> bytes:
    """TELEWARDEN_AUDIT_KEY, else the key file (default_key_path()), created once with mode 0600
    in a folder created with mode 0700."""
    env = os.environ.get("TELEWARDEN_AUDIT_KEY")
    if env:
        return env.encode()
    path = key_path if key_path is not None else default_key_path()
    if not path.exists():
        _create_key(path, os.urandom(32).hex().encode())
    return _read_key(path)


def _create_key(path: Path, key: bytes) -> bool:
    """Write `key` to `path` atomically, mode 0600, unless a key is already there (then False).
    A temporary file linked into place: a concurrent reader never sees a half-written key."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def _read_key(path: Path) -> bytes:
    st = path.stat()
    if st.st_mode & 0o077:
        log.warning(f"telewarden: the digest key {path} is readable by others (mode {st.st_mode & 0o777:o}): "
                    f"anyone who can read it can test guesses against the trail's digests; chmod 600 it")
    key = path.read_bytes().strip()
    if not key:
        raise OSError(errno.EINVAL, f"the digest key {path} is empty")
    return key


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _move_key_out(folder: Path, key_path: Path) -> None:
    """An audit.key left inside the trail folder by an earlier version is moved to `key_path`, with a
    warning; if `key_path` already holds a different key, the trail refuses to start.

    Moved rather than refused: the digests already in the trail stay comparable with new ones, and
    the proxy keeps starting after an upgrade. Refusing would not undo the exposure either: any copy
    of the folder made before now holds the key, which the warning says, with how to start afresh."""
    legacy = folder / KEYFILE
    if not legacy.is_file():
        return
    old = legacy.read_bytes()
    if key_path.exists():
        if key_path.read_bytes().strip() != old.strip():
            raise AuditError(
                f"{legacy}: a digest key inside the audit folder lets whoever gets a copy of the folder test "
                f"guesses against its digests, and {key_path} already holds a different key. Keep one: move "
                f"{legacy} out of the folder (e.g. over {key_path}) or delete it (the trail's older digests then "
                f"no longer correlate with new ones)")
    else:
        _create_key(key_path, old)
    legacy.unlink()
    log.warning(f"telewarden: moved the digest key {legacy} out of the audit folder to {key_path}. Any copy of "
                f"the folder made before now holds the key and allows testing guesses against its digests; if "
                f"the folder was shared, delete {key_path} to start a new key (older digests then stop correlating)")


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # json.dumps with arguments builds one per call


def _dumps(rec: dict[str, Any]) -> str:
    return _ENCODER.encode(rec)


def encode_record(rec: dict[str, Any]) -> str:
    """A record as AuditTrail.write_encoded takes it: its JSON members, as write() would chain them."""
    if not rec or "seq" in rec or "prev" in rec or "hash" in rec:
        raise ValueError("a record to encode has fields and none of seq, prev, hash")
    return _dumps(rec)[1:-1]


def record_hash(rec: dict[str, Any]) -> str:
    """SHA-256 of the record without `hash`, serialised as it is written (compact, keys in order).

    json.loads keeps key order and json.dumps(json.loads(x)) == x for these records, so a reader
    recomputes exactly what the writer hashed, and the writer serialises each record only once.
    """
    body = {k: v for k, v in rec.items() if k != "hash"}
    return hashlib.sha256(_dumps(body).encode()).hexdigest()


def chain_files(folder: Path) -> list[Path]:
    rotated = sorted((p for p in folder.iterdir() if _ROTATED.match(p.name)), key=lambda p: p.name)
    current = folder / JSONL
    return rotated + ([current] if current.exists() else [])


class AuditTrail:
    def __init__(self, folder: Path, *, max_bytes: int = 64 << 20, key_path: Path | None = None) -> None:
        """`key_path`: the digest key file (default: default_key_path()); TELEWARDEN_AUDIT_KEY wins.
        It must not be inside `folder`: the trail is what gets copied and shared, the key is not."""
        self.folder = folder
        self.max_bytes = max_bytes
        self.key_path = key_path if key_path is not None else default_key_path()
        self._lock = threading.Lock()
        # True: write() only queues the record for audit.log and flush_human() renders the queue
        # (the addon calls it after the hook returned); False: rendered at once, as before.
        self.defer_human = False
        self._pending: list[dict[str, Any] | str] = []  # records, or audit.log blocks rendered elsewhere
        self._closed = False
        if _inside(self.key_path, folder):
            raise AuditError(f"the digest key {self.key_path} must not be inside the audit folder {folder}: "
                             f"whoever gets a copy of the trail could test guesses against its digests")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AuditError(f"audit folder {folder} is not writable: {e.strerror}") from None
        try:
            _move_key_out(folder, self.key_path)
            self.key = load_or_create_key(self.key_path)
        except OSError as e:
            raise AuditError(f"digest key {self.key_path}: cannot read or create it: {e.strerror or e}") from None
        try:
            self._seq, self._prev = self._recover()
            self._catch_up_human()
            self._open()
        except OSError as e:
            raise AuditError(f"audit folder {folder} is not writable: {e.strerror}") from None
        self.records = 0

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._jsonl = os.open(self.folder / JSONL, flags, 0o640)
        self._human = os.open(self.folder / HUMAN, flags, 0o640)
        self._size = os.fstat(self._jsonl).st_size

    def _recover(self) -> tuple[int, str]:
        """Find where the chain stands; cut a torn tail off and say so in the chain."""
        files = chain_files(self.folder)
        if not files:
            return 0, GENESIS
        last = files[-1]
        data = last.read_bytes()
        torn = b""
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            torn = data[cut:]
            with last.open("r+b") as f:
                f.truncate(cut)
            data = data[:cut]
        lines = data.splitlines()
        seq, prev = 0, GENESIS
        if lines:
            rec = json.loads(lines[-1])
            seq, prev = rec["seq"], rec["hash"]
        elif len(files) > 1:
            rec = json.loads(files[-2].read_bytes().splitlines()[-1])
            seq, prev = rec["seq"], rec["hash"]
        if torn:
            self._seq, self._prev = seq, prev
            note = {"event": "torn-tail-removed", "bytes": len(torn),
                    "digest": "sha256:" + hashlib.sha256(torn).hexdigest()}
            line = self._chain(note)
            with last.open("ab") as f:
                f.write(line)
            return self._seq, self._prev
        return seq, prev

    def _catch_up_human(self) -> None:
        """Regenerate audit.log from audit.jsonl when it lags behind: records were chained but not
        yet rendered when the process died (the live proxy renders after forwarding), or a torn
        tail's note was chained since. In step means one block per chained line (blocks end with
        a blank line and hold none) and the last block is the view of the last record."""
        jsonl, human = self.folder / JSONL, self.folder / HUMAN
        try:
            data = jsonl.read_bytes()
        except FileNotFoundError:
            return
        try:
            shown = human.read_bytes()
        except FileNotFoundError:
            shown = b""
        lines = data.count(b"\n")
        if lines == 0 and not shown:
            return
        if lines and shown.count(b"\n\n") == lines:
            try:
                want = human_view(json.loads(data[data.rfind(b"\n", 0, len(data) - 1) + 1:]))
            except ValueError:
                want = None
            if want is None or shown.endswith(want.encode()):
                return
        tmp = self.folder / f".{HUMAN}.{os.getpid()}.tmp"
        with tmp.open("w", encoding="utf-8") as out:
            render_file(jsonl, out)
        os.chmod(tmp, 0o640)
        os.replace(tmp, human)
        log.warning(f"telewarden: {human} did not show every record of {jsonl} (the proxy stopped before "
                    f"rendering its last records); regenerated it from the chain")

    def _chain(self, rec: dict[str, Any]) -> bytes:
        if rec and "seq" not in rec and "prev" not in rec and "hash" not in rec:
            return self._chain_encoded(_dumps(rec)[1:-1])
        self._seq += 1
        return self._seal(_dumps({"seq": self._seq, **rec, "prev": self._prev}))

    def _chain_encoded(self, members: str) -> bytes:
        # the same text as _dumps({"seq": ..., **rec, "prev": ...}), without copying the record
        self._seq += 1
        return self._seal(f'{{"seq":{self._seq},{members},"prev":"{self._prev}"}}')

    def _seal(self, body: str) -> bytes:
        digest = hashlib.sha256(body.encode()).hexdigest()
        self._prev = digest
        return f'{body[:-1]},"hash":"{digest}"}}\n'.encode()

    def write(self, rec: dict[str, Any]) -> None:
        """Append one record. Raises AuditError if the JSONL record (the authoritative one) could not
        be written whole; a short write is cut back so that no torn line stays mid-file. A failure of
        the human view alone is logged loudly but does not stop traffic."""
        self._append(rec, None)

    def write_encoded(self, members: str, human: str) -> None:
        """Append a record built elsewhere (a judge process): `members` is encode_record(rec) and
        `human` is render.block(rec). The same guarantees as write()."""
        self._append(members, human)

    def _append(self, rec: dict[str, Any] | str, human: str | None) -> None:
        with self._lock:
            seq, prev = self._seq, self._prev
            line = self._chain(rec) if human is None else self._chain_encoded(rec)
            try:
                if self._size + len(line) > self.max_bytes and self._size > 0:
                    self._rotate()
                written = os.write(self._jsonl, line)
                if written != len(line):
                    os.ftruncate(self._jsonl, self._size)
                    raise OSError(28, "short write (no space left?)")
                self._size += len(line)
            except OSError as e:
                self._seq, self._prev = seq, prev  # the record is not in the chain
                raise AuditError(f"cannot write the audit trail in {self.folder}: {e.strerror or e}") from None
            self.records += 1
            self._pending.append(rec if human is None else human)
            if not self.defer_human:
                self._flush_human()

    def pending_human(self) -> int:
        return len(self._pending)

    def flush_human(self) -> None:
        """Render the queued records into audit.log, one write. A failure is logged loudly but
        does not stop traffic: audit.jsonl has the records (and the next start regenerates)."""
        if self._pending:
            with self._lock:
                self._flush_human()

    def _flush_human(self) -> None:
        pending, self._pending = self._pending, []
        if not pending or self._closed:
            return
        try:
            os.write(self._human, "".join([(r if isinstance(r, str) else render.block(r)) + "\n\n"
                                           for r in pending]).encode())
        except OSError as e:
            log.error(f"telewarden: cannot write {self.folder / HUMAN}: {e.strerror} (audit.jsonl has the record)")

    def _rotate(self) -> None:
        self._flush_human()  # the view of the records in the file being rotated goes with it
        os.close(self._jsonl)
        os.close(self._human)
        n = max((int(m.group(1)) for p in self.folder.iterdir() if (m := _ROTATED.match(p.name))), default=0) + 1
        os.rename(self.folder / JSONL, self.folder / f"{JSONL}.{n:06d}")
        os.rename(self.folder / HUMAN, self.folder / f"{HUMAN}.{n:06d}")
        self._open()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._flush_human()
            self._closed = True
        for fd in (self._jsonl, self._human):
            try:
                os.close(fd)
            except OSError:
                pass


# -- reading ------------------------------------------------------------------------------------

def _targets(path: Path) -> list[Path]:
    if path.is_dir():
        files = chain_files(path)
        if not files:
            raise OSError(2, f"no {JSONL} in {path}")
        return files
    if not path.exists():
        raise OSError(2, f"{path}: no such file")
    return [path]


def parse_anchor(text: str) -> tuple[int | None, str]:
    """`SEQ:HASH` or `HASH`, as `verify` prints it."""
    seq, sep, h = text.strip().rpartition(":")
    if not re.fullmatch(r"[0-9a-f]{64}", h) or (sep and not seq.isdigit()):
        raise ValueError(f"--anchor {text!r}: expected SEQ:HASH or HASH (64 hex digits), as verify prints it")
    return (int(seq) if sep else None), h


def verify(path: Path, anchor: str | None = None) -> tuple[int, str]:
    """Return (exit status, report). 0 intact, 1 tampered, 2 unreadable.

    The chain alone cannot catch a rewrite of its tail with every hash recomputed; `anchor` (a
    `SEQ:HASH` printed by an earlier verify and kept off the machine) can: the record must still be
    in the chain with that hash."""
    try:
        want_seq, want_hash = parse_anchor(anchor) if anchor else (None, None)
    except ValueError as e:
        return 2, str(e)
    try:
        files = _targets(path)
    except OSError as e:
        return 2, f"unreadable: {e.strerror or e}"
    prev, seq, count, torn_note = None, None, 0, ""
    anchored = False
    for fi, f in enumerate(files):
        try:
            data = f.read_bytes()
        except OSError as e:
            return 2, f"unreadable: {f}: {e.strerror}"
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines:  # no trailing newline: the last line was cut short
            if fi == len(files) - 1:
                torn_note = f"; torn last line in {f.name} ({len(lines[-1])} bytes): a write cut short by a crash"
                lines.pop()
            else:
                return 1, f"TAMPERED: {f.name} ends without a newline but is not the last file"
        for n, raw in enumerate(lines, 1):
            where = f"{f.name} line {n}"
            try:
                rec = json.loads(raw)
                rseq, rprev, rhash = rec["seq"], rec["prev"], rec["hash"]
            except (ValueError, KeyError, TypeError):
                return 1, f"TAMPERED: {where} is not a chained audit record"
            if record_hash(rec) != rhash:
                return 1, f"TAMPERED: record seq {rseq} ({where}) was edited: its hash does not match its content"
            if seq is not None and rseq != seq + 1:
                what = "removed, or a later record moved here" if rseq > seq + 1 else "reordered or inserted"
                return 1, f"TAMPERED: at {where} seq goes from {seq} to {rseq}: records {what}"
            if prev is not None and rprev != prev:
                return 1, f"TAMPERED: record seq {rseq} ({where}) does not follow the previous record (edited, removed or inserted before it)"
            if prev is None and rprev != GENESIS and fi == 0 and n == 1 and path.is_dir():
                return 1, f"TAMPERED: the first record (seq {rseq}) does not start the chain: earlier records were removed"
            prev, seq = rhash, rseq
            count += 1
            if want_hash is not None and (rseq == want_seq if want_seq is not None else rhash == want_hash):
                if rhash != want_hash:
                    return 1, (f"TAMPERED: record seq {rseq} ({where}) no longer has the anchored hash: the chain "
                               f"was rewritten up to it")
                anchored = True
    if want_hash is not None and not anchored:
        return 1, (f"TAMPERED: the anchored record ({anchor}) is not in the chain: the trail was rewritten or cut "
                   f"before it")
    last = prev or GENESIS
    note = f"; anchored record {anchor} found" if anchored else ""
    return 0, (f"intact: {count} records in {len(files)} file(s); last hash {last} (keep it off this machine; "
               f"check later with --anchor {seq or 0}:{last}){note}{torn_note}")


def human_view(rec: Any) -> str | None:
    """A chained record as audit.log shows it (with its blank separator line), or None."""
    if not isinstance(rec, dict):
        return None
    if "decision" in rec and isinstance(rec.get("findings"), list):
        try:
            return render.block(rec) + "\n\n"
        except (KeyError, TypeError, AttributeError):
            return f"(record seq {render.escape(rec.get('seq'))}: not a decision record this version can show)\n\n"
    if "event" in rec:
        return (f"(trail event, seq {render.escape(rec.get('seq'))}: {render.escape(rec['event'])}, "
                f"{render.escape(rec.get('bytes', '?'))} bytes, {render.escape(rec.get('digest', ''))})\n\n")
    return None


def render_file(f: Path, out) -> None:
    """The human view of one chain file's records, written to `out`."""
    with f.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break  # a torn last line: verify reports it
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            text = human_view(rec)
            if text is not None:
                out.write(text)


def render_trail(path: Path, out) -> tuple[int, str]:
    """Write the human view of the chained records (audit.log as it should read) to `out`.
    Returns verify's (status, report): the view is only as good as the chain it came from."""
    status, report = verify(path)
    if status == 2:
        return status, report
    for f in _targets(path):
        render_file(f, out)
    return status, report


def iter_records(path: Path):
    for f in _targets(path):
        with f.open("rb") as fh:
            for raw in fh:
                if raw.endswith(b"\n"):
                    try:
                        rec = json.loads(raw)
                    except ValueError:
                        continue
                    if "decision" in rec:
                        yield rec


def summarize(path: Path) -> dict[str, Any]:
    by_message: Counter = Counter()
    by_rule: dict[tuple, Counter] = defaultdict(Counter)
    promises: dict[str, str] = {}
    for rec in iter_records(path):
        by_message[(rec.get("pack") or "-", rec.get("kind") or "-", rec["decision"])] += 1
        for f in rec["findings"]:
            by_rule[(rec.get("pack") or "-", f["rule"])][rec["decision"]] += 1
            promises[f["rule"]] = f["promise"]
    return {
        "messages": [{"pack": p, "kind": k, "decision": d, "count": n} for (p, k, d), n in sorted(by_message.items())],
        "rules": [{"pack": p, "rule": r, "count": sum(c.values()), "decisions": dict(c), "promise": promises[r]}
                  for (p, r), c in sorted(by_rule.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))],
    }


def format_summary(s: dict[str, Any]) -> str:
    e = render.escape  # a tampered trail must not drive the reader's terminal either
    out = ["messages by vendor, kind and decision:"]
    for m in s["messages"]:
        out.append(f"  {m['count']:>8}  {e(m['pack']):<10} {e(m['kind']):<20} {e(m['decision'])}")
    out.append("")
    out.append("findings by rule:")
    for r in s["rules"]:
        decisions = ", ".join(f"{n} {e(d)}" for d, n in sorted(r["decisions"].items()))
        out.append(f"  {r['count']:>8}  {e(r['rule']):<36} ({decisions})")
        out.append(f"            promise: \"{e(r['promise'])}\"")
    return "\n".join(out)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="read the audit trail (verify, render, summary)")
    asub = p.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser("verify", help="check the hash chain; exit 0 intact, 1 tampered, 2 unreadable")
    v.add_argument("path", type=Path, metavar="DIR_OR_FILE")
    v.add_argument("--anchor", metavar="SEQ:HASH",
                   help="a record an earlier verify printed (kept off this machine): it must still be in the chain")
    v.set_defaults(func=_cmd_verify)
    r = asub.add_parser("render", help="regenerate the human log (audit.log) from the chained audit.jsonl; "
                                       "exit as verify")
    r.add_argument("path", type=Path, metavar="DIR_OR_FILE")
    r.set_defaults(func=_cmd_render)
    s = asub.add_parser("summary", help="counts per vendor, kind, decision and rule")
    s.add_argument("path", type=Path, metavar="DIR_OR_FILE")
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.set_defaults(func=_cmd_summary)


def _cmd_verify(args: argparse.Namespace) -> int:
    status, report = verify(args.path, args.anchor)
    print(report, file=sys.stdout if status != 2 else sys.stderr)
    return status


def _cmd_render(args: argparse.Namespace) -> int:
    status, report = render_trail(args.path, sys.stdout)
    sys.stdout.flush()
    print(f"telewarden audit render: {report}", file=sys.stderr)
    return status


def _cmd_summary(args: argparse.Namespace) -> int:
    try:
        s = summarize(args.path)
    except OSError as e:
        print(f"telewarden audit summary: unreadable: {e.strerror or e}", file=sys.stderr)
        return 2
    print(json.dumps(s, indent=2) if args.format == "json" else format_summary(s))
    return 0
