"""Controller search over token grammars: NAS-RL (architectures) and NOS (update rules).

- ``space``: a search space = ordered decisions with choices; ``make_space({"kind": ...})``.
- ``nas_space``: conv (Zoph & Le) and MLP spaces and their network builders.
- ``nos_space``: Bello et al.'s update-rule grammar (``metaplat.optim.dsl``) as a space.
- ``data`` / ``children``: tiny child tasks and child training -> reward (failures get the
  worst reward and a reason, never an exception).
- ``policy``: the controller driven by proposals and rewards (sync / async updates, random
  baseline), Tune-free.
- ``batched``: batched-children mode over a ``Pool``.

Two modes. Children that take seconds to minutes, or want Tune's schedulers, checkpoints and
fault tolerance, run one Tune trial each, driven by
``metaplat.tuning.controller_searcher.ControllerSearcher`` (Tune costs seconds per trial).
Children that train in well under a second (tiny MLPs, NOS rules on toy tasks) run in
batched mode: one process or one Tune trial (``batched_search_trainable``) trains each batch
through a pool and updates the controller per batch.
"""
