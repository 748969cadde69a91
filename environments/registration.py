"""Gymnasium ids for metaplat's environments, registered by an explicit call.

Call :func:`register_envs` once per process before ``gymnasium.make("metaplat/...")``;
it is idempotent and nothing registers at import time. The envs truncate themselves
after their horizon, so no ``max_episode_steps`` is registered (no ``TimeLimit``).

==========================  ================================================================
id                          keyword arguments (defaults)
==========================  ================================================================
metaplat/PointNav-v0        goal=(0, 0), horizon=100, max_action=0.1, reward="distance",
                            goal_tolerance=0.01 (see environments.point_nav.PointNavEnv)
metaplat/CartPolePhysics-v0 length=0.5, masspole=0.1, masscart=1.0, force_mag=10.0,
                            horizon=500, task_seed=0 (environments.cartpole_physics)
metaplat/Bandit-v0          probs, horizon (see environments.bandit.BanditEnv)
metaplat/TabularMDP-v0      mdp arrays, episode length (environments.tabular_mdp)
==========================  ================================================================

Example::

    from environments.registration import register_envs
    register_envs()
    env = gymnasium.make("metaplat/PointNav-v0", goal=(0.3, -0.2))
"""

from __future__ import annotations

import gymnasium

NAMESPACE = "metaplat"

#: (id, entry point) of every metaplat gymnasium env. One line per env: add new ones here.
ENVS: tuple[tuple[str, str], ...] = (
    ("metaplat/PointNav-v0", "environments.point_nav:PointNavEnv"),
    ("metaplat/CartPolePhysics-v0", "environments.cartpole_physics:CartPolePhysicsEnv"),
    ("metaplat/Bandit-v0", "environments.bandit:BanditEnv"),
    ("metaplat/TabularMDP-v0", "environments.tabular_mdp:TabularMDPEnv"),
)


def register_envs() -> list[str]:
    """Register every id in :data:`ENVS` not yet registered; returns all metaplat ids.

    Idempotent: a second call changes nothing (and does not trigger gymnasium's
    "overriding environment" warning).
    """
    for env_id, entry_point in ENVS:
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point)
    return [env_id for env_id, _ in ENVS]
