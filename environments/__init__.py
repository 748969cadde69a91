"""Simulators and data generators that know nothing about meta-learning.

Gymnasium environments are registered under the ``metaplat/`` namespace by
:func:`register_envs` (called explicitly, never at import time); batched torch twins live
beside them and follow :class:`environments.batched.BatchedEnv`.
"""
