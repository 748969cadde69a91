"""Hand-designed policies for the RL² bandit and tabular-MDP tasks, as
:class:`metaplat.inner.trials.TrialPolicy` objects vectorised over many tasks."""
