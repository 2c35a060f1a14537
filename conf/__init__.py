"""The configs litesweep ships (Hydra reads them from this folder): ``litesweep.search.config.CONF_DIR``."""
