"""Your data, your rules: retention, access and erasure requests, audit exports and backups.

* :mod:`bot.privacy.retention` — the ``retention:`` policy as engine timers (redact old text, anonymise people).
* :mod:`bot.privacy.erasure` and :mod:`bot.privacy.export` — a person's erasure and access requests.
* :mod:`bot.privacy.audit` — every ticket event of a period, streamed as JSON lines or CSV.
* :mod:`bot.privacy.backup` — an online SQLite backup.
* :mod:`bot.privacy.redaction`, :mod:`bot.privacy.identity` and :mod:`bot.privacy.scrub` — how text is redacted
  and people are anonymised, shared by retention and erasure.
"""
