"""The operator's reads and writes, shared by the web UI, the REST API and ``provision``.

One writer of configuration (:mod:`.writer`) with its rules: everything is validated before
anything is written, nothing is written on error, and the configuration version is bumped in
the same transaction. The front doors (forms, JSON, YAML) only turn their input into the
writer's specs; the rules live here once.
"""
