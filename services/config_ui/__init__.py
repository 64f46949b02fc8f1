"""Config UI: the web application to configure, watch and operate the system."""
