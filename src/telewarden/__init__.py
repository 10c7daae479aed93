"""telewarden: hold software to its published telemetry promises (audit, scrub or block)."""

__version__ = "0.1.0"
