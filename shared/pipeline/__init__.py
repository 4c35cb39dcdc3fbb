"""The pipeline front end: YAML text -> lenient file types -> lint -> compiled ``Plan``.

Backends (executors) and the event manager see only ``shared.pipeline.plan``;
nothing past ``compile`` sees YAML types.
"""
