"""Planning: the endpoints' chain and heads, the range cut into tasks, the shared task board."""
