"""The promise ledger (`telewarden report`): verdicts added up per pack and per vendor promise.

model.py aggregates (from recorded flows, an audit trail, or `check`'s own verdicts through
CheckTap); html.py, markdown.py and terminal.py render; cli.py is the command."""

from .model import CheckTap, Ledger

__all__ = ["CheckTap", "Ledger"]
