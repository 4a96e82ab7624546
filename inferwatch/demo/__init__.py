"""``inferwatch demo``: a model server behind the agent, traffic in phases, incidents on screen."""
