"""Built-in agents: one file per algorithm, each ending in register_agent(...)."""
