"""The operator's reads and writes, shared by the web UI, the REST API and ``provision``.

One writer of configuration (:mod:`.writer`) with its rules: secrets left out are kept,
everything is validated before anything is written, nothing is written on error, and the
configuration version is bumped in the same transaction. One reader per entity
(:mod:`.readers`), written against the field-source protocol of :mod:`.source`, turns a
provisioning file (:mod:`.yaml_source`), a web form or a JSON body (:mod:`.form_source`) into
the writer's specs. :class:`.operations.Admin` is what the front doors call: it commits, then
tells its caller (a node reloads its views), and reads return the values of :mod:`.views`.
"""
