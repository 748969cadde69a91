"""metaplat.tuning: the Tune adapters (the only package that imports ``ray.tune``, lazily).

* ``trainable``: the function trainable (one trial = one outer loop) and its resources.
* ``runner``: Ray session, spec -> Tuner, run / resume.
* ``searchers``: ``SEARCHERS`` / ``SCHEDULERS`` registries for the spec's search_alg / scheduler.
* ``space``: spec domains -> Tune samplers; trial config <-> spec.
* ``report``: read an experiment folder back (pandas only).
"""
