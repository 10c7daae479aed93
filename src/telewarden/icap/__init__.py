"""ICAP (RFC 3507) service: telewarden's engine behind an egress proxy such as Squid.

protocol.py parses and writes ICAP, exchange.py turns an encapsulated request into an Exchange
and a Verdict into an answer, server.py is the asyncio service, cli.py the `telewarden icap` command.
"""
