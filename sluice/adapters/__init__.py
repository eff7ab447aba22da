"""Adapters: Sluice's edges to the outside, each behind one module the engine calls.

- ``storage``: the zones (a local folder or S3): read, write, list, quarantine;
- ``warehouse``: the warehouse (embedded ``pgserver`` or an external PostgreSQL/Aurora URL or secret), ``copy_frames``
  (binary COPY in bounded chunks) and the one ``upsert``;
- ``totesys_source``: the Totesys OLTP (a URL or secret; embedded for the demo);
- ``notify`` / ``notify_sns``: the alert blocks (email, SNS) and the alert policy;
- ``ledger_dynamodb``: the run ledger's DynamoDB backend (the PostgreSQL one is ``sluice.ledger``).

A new adapter (another object store, another alert channel) is a module here; the engine's modules call it, and the
layers contract keeps it below ``tasks``.
"""
