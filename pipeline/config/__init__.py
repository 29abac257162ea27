"""Configuration: flags, TOML file and environment, validated once into a BackfillConfig."""
