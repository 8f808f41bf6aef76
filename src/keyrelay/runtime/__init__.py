"""The run-time layer: what the gateway, library mode and the checker share.

- :mod:`~keyrelay.runtime.pool` — :class:`KeyPool`, the run-time pool: the pure
  :class:`~keyrelay.core.pool.PoolState` bound to a store, a dialect, a clock and a writer;
- :mod:`~keyrelay.runtime.attempts` — :class:`Attempts`, the decisions of one request's attempts;
- :mod:`~keyrelay.runtime.flow` — the sans-I/O relay flow every driver feeds with I/O;
- :mod:`~keyrelay.runtime.process` — :class:`Runtime`, the pools of one process kept in sync with the
  store, their counters flushed;
- the checker and verifier, the alerts, telemetry and the process's one redaction.

Layers, top to bottom: ``cli`` → ``server`` / ``client`` → ``runtime`` → ``stores`` → ``providers`` →
``core``. Nothing here imports ``server`` or ``client``.
"""
